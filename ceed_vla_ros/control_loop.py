"""A control loop that keeps time: a dedicated thread woken at absolute deadlines (ROS-free).

:class:`DeadlineLoop` calls ``callback(deadline_s, now_s)`` once per period on its own thread.
Deadline ``k`` is ``start + k * period`` on the monotonic clock, computed from ``k`` (integer
nanoseconds), never by adding the time a callback took: a late wake-up does not shift the later
deadlines, so the rate does not drift. The thread sleeps with ``clock_nanosleep(CLOCK_MONOTONIC,
TIMER_ABSTIME)`` (libc through ctypes, which releases the GIL while it sleeps; other systems:
``time.sleep`` of the remaining time). When a wake-up is so late that one or more deadlines have
passed, those periods are skipped (counted in :attr:`DeadlineLoop.missed`), not run in a burst.

Real-time scheduling: ``realtime_priority`` > 0 asks for ``SCHED_FIFO`` at that priority for the
loop thread only (Linux ``sched_setscheduler`` on the calling thread). Without the permission
(``CAP_SYS_NICE`` or an ``rtprio`` limit in ``/etc/security/limits.conf``) the loop runs with
normal scheduling and :attr:`DeadlineLoop.realtime_status` says why; the driver logs it.

Why not an rclpy timer: a timer callback goes through the executor's wait set in Python on every
period (the same thread also serves every subscription), which costs far more CPU per period than
the control step itself and wakes late whenever another callback runs.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

#: The driver's ``control_loop`` choices: the native streamer fed by a :class:`LookaheadPlanner`, a
#: :class:`DeadlineLoop` thread that steps and publishes every period, or an rclpy timer (the old loop).
CONTROL_LOOPS = ("streamer", "thread", "rclpy_timer")

CLOCK_MONOTONIC = 1
TIMER_ABSTIME = 1
EINTR = 4


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _libc_clock_nanosleep():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.clock_nanosleep
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Timespec), ctypes.POINTER(_Timespec))
    function.restype = ctypes.c_int
    return function


_CLOCK_NANOSLEEP = _libc_clock_nanosleep()
PR_SET_NAME = 15


def name_this_thread(name: str) -> None:
    """Give the calling thread its name in the OS (``top -H``, ``/proc/<pid>/task/*/comm``); Linux only."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def sleep_until_ns(deadline_ns: int) -> None:
    """Sleep until ``time.monotonic_ns()`` reaches ``deadline_ns`` (returns at once if it has)."""
    if _CLOCK_NANOSLEEP is not None:
        request = _Timespec(deadline_ns // 1_000_000_000, deadline_ns % 1_000_000_000)
        while _CLOCK_NANOSLEEP(CLOCK_MONOTONIC, TIMER_ABSTIME, ctypes.byref(request), None) == EINTR:
            pass
        return
    remaining = deadline_ns - time.monotonic_ns()
    if remaining > 0:
        time.sleep(remaining * 1e-9)


def _reused_request_sleeper() -> Callable[[int], None]:
    """:func:`sleep_until_ns` with one request struct allocated once (for one thread's loop)."""
    request = _Timespec()
    reference, nanosleep = ctypes.byref(request), _CLOCK_NANOSLEEP

    def sleep_until(deadline_ns: int) -> None:
        request.tv_sec, request.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        while nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, reference, None) == EINTR:
            pass

    return sleep_until


def set_realtime_priority(priority: int) -> str:
    """Ask for ``SCHED_FIFO`` at ``priority`` for the CALLING thread; return what happened, in words.

    ``priority`` 0: nothing is asked (normal scheduling). Never raises.
    """
    if priority <= 0:
        return "normal scheduling (realtime_priority 0)"
    if not hasattr(os, "sched_setscheduler"):
        return f"normal scheduling: SCHED_FIFO is not available on {sys.platform}"
    try:
        low, high = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
        if not low <= priority <= high:
            return f"normal scheduling: realtime_priority {priority} is outside SCHED_FIFO's {low}..{high}"
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread (Linux)
    except PermissionError:
        return (
            f"normal scheduling: SCHED_FIFO priority {priority} not permitted (needs CAP_SYS_NICE or an rtprio "
            "limit, e.g. '@realtime - rtprio 90' in /etc/security/limits.conf)"
        )
    except OSError as error:
        return f"normal scheduling: SCHED_FIFO priority {priority} refused ({error})"
    return f"SCHED_FIFO priority {priority}"


class DeadlineLoop:
    """Calls ``callback(deadline_s, now_s)`` every ``period_s`` on a dedicated thread.

    ``now_s`` is the wake-up time on the monotonic clock (seconds), ``deadline_s`` the deadline it
    woke for. ``clock_ns`` and ``sleep_until`` can be replaced (tests drive the loop with a fake
    clock without any timing). Counters (read from any thread): :attr:`periods` callbacks run,
    :attr:`missed` deadlines skipped because a wake-up came later than the next one,
    :attr:`max_lateness_s` the largest ``now - deadline`` seen. An exception in ``callback`` stops the
    loop; :attr:`error` holds it and ``on_error`` (if given) is called with it on the loop thread.
    """

    def __init__(
        self,
        period_s: float,
        callback: Callable[[float, float], None],
        *,
        name: str = "control-loop",
        realtime_priority: int = 0,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        sleep_until: Callable[[int], None] = sleep_until_ns,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period must be > 0 s, got {period_s}")
        self.period_s = float(period_s)
        self.period_ns = int(round(period_s * 1e9))
        self._callback = callback
        self._clock_ns = clock_ns
        self._sleep_until = sleep_until
        self._on_error = on_error
        self.realtime_priority = int(realtime_priority)
        self.realtime_status = "not started"
        self.periods = 0
        self.missed = 0
        self.max_lateness_s = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._start_ns = 0
        self._index = 0

    def start(self) -> DeadlineLoop:
        """Start the thread; returns once it has set its scheduling (see :attr:`realtime_status`)."""
        self._thread.start()
        self._started.wait()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Ask the loop to stop and wait for its thread (a callback in progress finishes)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def deadline_ns(self, index: int) -> int:
        """Absolute time (monotonic ns) of deadline ``index`` (0: one period after the start)."""
        return self._start_ns + (index + 1) * self.period_ns

    def _run(self) -> None:
        name_this_thread(self._thread.name)
        self.realtime_status = set_realtime_priority(self.realtime_priority)
        self._start_ns = self._clock_ns()
        self._started.set()
        callback, period_ns, clock_ns, sleep_until = self._callback, self.period_ns, self._clock_ns, self._sleep_until
        if sleep_until is sleep_until_ns and _CLOCK_NANOSLEEP is not None:
            sleep_until = _reused_request_sleeper()
        start_ns, index = self._start_ns, 0
        try:
            while not self._stop.is_set():
                deadline = start_ns + (index + 1) * period_ns
                sleep_until(deadline)
                if self._stop.is_set():
                    break
                now = clock_ns()
                late = now - deadline
                if late >= period_ns:  # woke after the next deadline(s): skip them, do not burst
                    skipped = late // period_ns
                    self.missed += skipped
                    index += skipped
                    deadline += skipped * period_ns
                    late -= skipped * period_ns
                if late * 1e-9 > self.max_lateness_s:
                    self.max_lateness_s = late * 1e-9
                callback(deadline * 1e-9, now * 1e-9)
                self.periods += 1
                index += 1
                self._index = index
        except BaseException as error:  # noqa: BLE001 (reported to the owner, not swallowed)
            self.error = error
            self._stop.set()
            if self._on_error is not None:
                self._on_error(error)


class CommandSink(Protocol):
    """Where :class:`LookaheadPlanner` queues commands: a streamer that publishes period ``k``'s
    command at its deadline (``ceed_vla_ros.nodes.command_streamer``: a native thread)."""

    def push(self, index: int, values: Sequence[float], gripper: float) -> bool:
        """Queue period ``index``'s command; False if that period is already past or too far ahead."""

    def truncate(self, keep: int = 0) -> int:
        """Drop every queued command from ``keep`` periods after the next one to publish on;
        return the first period dropped."""

    def next_index(self) -> int:
        """The next period to publish (every earlier one is published, skipped or was empty)."""


@dataclass
class PlannedPeriod:
    """What the plan decided for one period: ``sent`` whether a command was queued for it."""

    index: int
    holding: bool
    reason: str
    sent: bool


class LookaheadPlanner:
    """The driver's command stream planned a few periods ahead of a streamer (ROS-free).

    Period ``k`` is due at the monotonic deadline ``first_deadline_s + k * period_s``; its command
    is ``core.step(t_k)``, ``t_k`` the driver's clock at that deadline
    (``clock_now() + deadline - monotonic_now()``). :meth:`plan` steps the core for every period
    not yet planned up to ``sink.next_index() + lookahead_periods``, queues each command
    (``to_values(command)`` -> (values, gripper); a command without positions queues nothing:
    that period sends nothing), and keeps the core's stream state from before each planned period.

    :meth:`replan` takes the plan back for an event (a chunk, an e-stop or its reset, a changed
    parameter): the sink drops its queue from ``replan_margin_periods`` after the next period to
    publish on, and names the first period dropped, ``j``; the core returns to its state before
    ``j``; ``event()`` runs; :meth:`plan` runs again. So the stream published is the one a loop
    calling ``core.step`` once per period sends, with every event applied just before period
    ``j`` (test/test_control_loop.py checks this, command for command, on random events).
    Not thread-safe: the owner serialises :meth:`plan`, :meth:`replan` and :meth:`take_published`.
    """

    def __init__(self, core, sink: CommandSink, period_s: float, first_deadline_s: float,
                 lookahead_periods: int, clock_now: Callable[[], float],
                 to_values: Callable[[object], tuple[Sequence[float], float]],
                 monotonic_now: Callable[[], float] = time.monotonic, replan_margin_periods: int = 1) -> None:
        if lookahead_periods < 1:
            raise ValueError(f"lookahead must be >= 1 period, got {lookahead_periods}")
        if not 0 <= replan_margin_periods < lookahead_periods:
            raise ValueError(f"replan margin must be 0..{lookahead_periods - 1} periods, got {replan_margin_periods}")
        self.replan_margin_periods = int(replan_margin_periods)
        self.core, self.sink = core, sink
        self.period_s, self.first_deadline_s = float(period_s), float(first_deadline_s)
        self.lookahead_periods = int(lookahead_periods)
        self._clock_now, self._monotonic_now, self._to_values = clock_now, monotonic_now, to_values
        self._planned_to = 0  # the first period not planned yet
        self._states: collections.deque[tuple[int, tuple]] = collections.deque()
        self._periods: collections.deque[PlannedPeriod] = collections.deque()
        self._first_sent: int | None = None  # the period of the stream's first queued command
        self.replans = 0
        self.refused_pushes = 0  # commands the sink refused (their period had passed: planning late)

    def plan(self) -> None:
        """Fill the queue up to ``lookahead_periods`` past the next period to publish."""
        published_to = self.sink.next_index()
        while self._states and self._states[0][0] < published_to:
            self._states.popleft()
        start, end = max(self._planned_to, published_to), published_to + self.lookahead_periods
        if start >= end:
            return
        core, sink, to_values = self.core, self.sink, self._to_values
        offset = self._clock_now() - self._monotonic_now()
        first, period = self.first_deadline_s + offset, self.period_s
        for index in range(start, end):
            self._states.append((index, core.stream_state()))
            command = core.step(first + index * period)
            sent = False
            if command.positions is not None:
                values, gripper = to_values(command)
                sent = sink.push(index, values, gripper)
                if not sent:
                    self.refused_pushes += 1
                elif self._first_sent is None:
                    self._first_sent = index
            self._periods.append(PlannedPeriod(index, command.holding, command.reason, sent))
        self._planned_to = end

    def replan(self, event: Callable[[], object] | None = None):
        """Take back the plan from ``replan_margin_periods`` after the next period to publish on
        (those few keep their commands, so that the new plan is queued before their deadlines
        pass), run ``event()`` on the core as it is before the first period taken back, plan
        again; returns what ``event`` returned. An event so takes effect from the period after
        the margin: the stream equals stepping once per period with the event applied just
        before that period."""
        first = self.sink.truncate(self.replan_margin_periods)
        if first < self._planned_to:
            for index, state in self._states:
                if index == first:
                    self.core.restore_stream_state(state)
                    break
            while self._states and self._states[-1][0] >= first:
                self._states.pop()
            while self._periods and self._periods[-1].index >= first:
                self._periods.pop()
            if self._first_sent is not None and self._first_sent >= first:
                self._first_sent = None
            self._planned_to = first
        self.replans += 1
        result = event() if event is not None else None
        self.plan()
        return result

    @property
    def stream_started(self) -> bool:
        """Whether a command has been published: until then the first command starts from the
        measured joints, so the owner re-plans on every joint state (after, they change nothing)."""
        return self._first_sent is not None and self._first_sent < self.sink.next_index()

    def take_published(self) -> list[PlannedPeriod]:
        """The planned periods now past (published, skipped or empty), oldest first, each once."""
        published_to = self.sink.next_index()
        past = []
        while self._periods and self._periods[0].index < published_to:
            past.append(self._periods.popleft())
        return past
