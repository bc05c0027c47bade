"""The driver's deadline thread: absolute deadlines, skipped periods, scheduling, errors (no timing asserted)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ceed_vla_ros.arm_control import ArmDriverCore, JointLimits
from ceed_vla_ros.control_loop import DeadlineLoop, set_realtime_priority, sleep_until_ns

PERIOD_NS = 2_000_000  # 500 Hz


class FakeClock:
    """A monotonic clock that only moves when the loop sleeps: it wakes ``lateness[k]`` ns after deadline k."""

    def __init__(self, lateness_ns: dict[int, int]) -> None:
        self.now = 1_000_000_000
        self.lateness = lateness_ns
        self.sleeps: list[int] = []

    def clock(self) -> int:
        return self.now

    def sleep_until(self, deadline_ns: int) -> None:
        self.sleeps.append(deadline_ns)
        self.now = max(self.now, deadline_ns + self.lateness.get(len(self.sleeps) - 1, 0))


def run_fake(lateness_ns: dict[int, int], periods: int, work_ns: int = 0):
    clock = FakeClock(lateness_ns)
    calls: list[tuple[float, float]] = []
    done = threading.Event()

    def callback(deadline_s: float, now_s: float) -> None:
        calls.append((deadline_s, now_s))
        clock.now += work_ns  # the callback's own run time
        if len(calls) == periods:
            loop.stop()
            done.set()

    loop = DeadlineLoop(PERIOD_NS * 1e-9, callback, clock_ns=clock.clock, sleep_until=clock.sleep_until)
    loop.start()
    assert done.wait(10.0)
    loop.stop()
    return loop, clock, calls


def test_deadlines_are_absolute_and_do_not_drift_with_the_callbacks_run_time():
    start = 1_000_000_000
    loop, clock, calls = run_fake({}, periods=50, work_ns=700_000)  # every callback takes 0.7 ms
    assert clock.sleeps == [start + (k + 1) * PERIOD_NS for k in range(50)]
    assert [round(d * 1e9) for d, _ in calls] == clock.sleeps
    assert loop.periods == 50 and loop.missed == 0


def test_a_late_wake_up_skips_the_passed_periods_and_stays_on_the_grid():
    start = 1_000_000_000
    # deadline index 3 wakes 2.5 periods late: deadlines 4 and 5 have passed, the callback runs for 5
    loop, clock, calls = run_fake({3: int(2.5 * PERIOD_NS)}, periods=8)
    deadlines = [round(d * 1e9) for d, _ in calls]
    grid = [start + (k + 1) * PERIOD_NS for k in range(10)]
    assert deadlines == grid[:3] + grid[5:10]
    assert loop.missed == 2 and loop.periods == 8
    assert loop.max_lateness_s == pytest.approx(0.5 * PERIOD_NS * 1e-9)
    assert all(now >= deadline for deadline, now in calls)


def test_real_clock_wakes_never_before_the_deadline_on_the_grid():
    calls: list[tuple[float, float]] = []

    def callback(deadline_s: float, now_s: float) -> None:
        calls.append((deadline_s, now_s))
        if len(calls) == 40:
            loop.stop()

    loop = DeadlineLoop(0.001, callback).start()
    deadline = time.monotonic() + 30.0
    while loop.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not loop.running and loop.periods == 40
    assert all(now >= deadline for deadline, now in calls)
    first = loop.deadline_ns(0) * 1e-9
    slots = [(d - first) * 1e3 for d, _ in calls]  # grid index of every deadline run
    assert all(abs(s - round(s)) < 1e-3 for s in slots) and slots == sorted(set(slots))
    assert round(slots[-1]) + 1 == loop.periods + loop.missed  # every grid slot was run or counted missed


def test_sleep_until_a_past_deadline_returns_and_a_future_one_is_reached():
    sleep_until_ns(time.monotonic_ns() - 1_000_000)
    target = time.monotonic_ns() + 2_000_000
    sleep_until_ns(target)
    assert time.monotonic_ns() >= target


def test_an_exception_in_the_callback_stops_the_loop_and_is_reported():
    reported: list[BaseException] = []

    def callback(deadline_s: float, now_s: float) -> None:
        raise RuntimeError("boom")

    loop = DeadlineLoop(0.001, callback, on_error=reported.append).start()
    deadline = time.monotonic() + 10.0
    while loop.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not loop.running
    assert isinstance(loop.error, RuntimeError) and reported == [loop.error]
    assert loop.periods == 0


def test_invalid_periods_are_refused():
    with pytest.raises(ValueError, match="period"):
        DeadlineLoop(0.0, lambda d, n: None)


def test_realtime_priority_is_applied_to_the_loop_thread_or_the_refusal_is_explained():
    assert set_realtime_priority(0).startswith("normal scheduling")
    assert "outside" in set_realtime_priority(1000)
    seen: dict[str, int] = {}
    done = threading.Event()

    def callback(deadline_s: float, now_s: float) -> None:
        seen["policy"] = os.sched_getscheduler(0)
        done.set()
        loop.stop()

    caller = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    loop = DeadlineLoop(0.001, callback, realtime_priority=10)
    loop.start()
    assert done.wait(10.0)
    loop.stop()
    # the caller's thread is untouched (compared with before: not assumed to be SCHED_OTHER, since
    # a test process may have been started, or have started its DDS threads, at another policy)
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == caller
    if loop.realtime_status == "SCHED_FIFO priority 10":
        assert seen["policy"] == os.SCHED_FIFO
    else:
        assert "not permitted" in loop.realtime_status and "CAP_SYS_NICE" in loop.realtime_status
        assert seen["policy"] == os.SCHED_OTHER


# -- the command stream planned ahead (LookaheadPlanner) --------------------------------------------

class RecordingSink:
    """A streamer stand-in in the test's own time: :meth:`publish_next` is one deadline passing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.queued: dict[int, tuple[list[float], float]] = {}
        self.next = 0
        self.published: list[tuple[int, list[float], float]] = []
        self.empty = 0

    def push(self, index, values, gripper) -> bool:
        if not self.next <= index < self.next + self.capacity:
            return False
        self.queued[index] = (list(values), gripper)
        return True

    def truncate(self, keep: int = 0) -> int:
        first = self.next + keep
        self.queued = {index: command for index, command in self.queued.items() if index < first}
        return first

    def next_index(self) -> int:
        return self.next

    def publish_next(self) -> None:
        command = self.queued.pop(self.next, None)
        if command is None:
            self.empty += 1
        else:
            self.published.append((self.next, *command))
        self.next += 1


STREAM_LIMITS = JointLimits(names=("j1", "j2"), lower=(-1.0, -0.5), upper=(1.0, 0.5), max_velocity=(2.0, 1.0),
                            max_acceleration=(20.0, 5.0))
STREAM_PERIOD = 0.002

stream_event = st.one_of(
    st.tuples(st.just("chunk"), st.lists(st.lists(st.floats(-2, 2), min_size=2, max_size=2), min_size=1, max_size=5),
              st.sampled_from(["joint_delta", "joint_absolute"]), st.floats(-0.2, 0.0), st.floats(0.005, 0.2)),
    st.tuples(st.just("estop"), st.booleans()),
    st.tuples(st.just("actuation"), st.booleans()),
    st.tuples(st.just("joints"), st.lists(st.floats(-1, 1), min_size=2, max_size=2)),
)


def apply_stream_event(core: ArmDriverCore, event, now: float) -> None:
    kind = event[0]
    if kind == "chunk":
        _, actions, space, offset, dt = event
        core.on_chunk(now + offset, np.array(actions), space, dt, now=now)
    elif kind == "estop":
        core.trigger_estop() if event[1] else core.reset_estop()
    elif kind == "actuation":
        core.enable_actuation = event[1]
    else:
        core.on_joint_state(now, np.array(event[1]))


@settings(max_examples=150, deadline=None)
@given(timed=st.lists(st.tuples(st.integers(0, 399), st.floats(0.0, 0.999), stream_event), max_size=25),
       plan_every=st.sampled_from([1, 3, 10]), transition=st.sampled_from(["replace", "temporal_ensemble"]),
       estop_stop=st.sampled_from(["decelerate", "immediate"]), start_with_joints=st.booleans(),
       margin=st.sampled_from([0, 1, 2]))
def test_planned_ahead_stream_equals_stepping_once_per_period(timed, plan_every, transition, estop_stop,
                                                               start_with_joints, margin):
    """The commands a LookaheadPlanner queues (planning every ``plan_every`` periods, twice that
    ahead; each event re-plans, keeping ``margin`` periods of the old plan) are, period for period
    and bit for bit, those of a core stepped once per period with each event applied ``margin``
    periods later than it came. Events: chunks, e-stops and resets, actuation switched, joint
    states (the first one starts the stream)."""
    from ceed_vla_ros.control_loop import LookaheadPlanner

    def make():
        core = ArmDriverCore(limits=STREAM_LIMITS, control_period_s=STREAM_PERIOD, watchdog_timeout_s=0.1,
                             enable_actuation=True, chunk_transition=transition, estop_stop=estop_stop,
                             plan_trajectories=False)
        if start_with_joints:
            core.on_joint_state(0.0, np.array([0.2, -0.1]))
        return core

    margin = min(margin, 2 * plan_every - 1)  # within the lookahead
    first, periods = 1.0, 400
    deadline = [first + k * STREAM_PERIOD for k in range(periods)]
    events = sorted(((k, fraction), event) for k, fraction, event in timed)  # (period before which, where)

    reference, expected = make(), []
    pending = list(events)
    for k in range(periods):
        while pending and pending[0][0][0] + margin == k:
            (came, fraction), event = pending.pop(0)
            apply_stream_event(reference, event, deadline[came] - (1 - fraction) * STREAM_PERIOD)
        command = reference.step(deadline[k])
        if command.positions is not None:
            expected.append((k, command.positions.tolist()))

    core, sink, clock = make(), RecordingSink(capacity=4 * plan_every), [0.0]
    planner = LookaheadPlanner(core, sink, STREAM_PERIOD, first, 2 * plan_every, clock_now=lambda: clock[0],
                               monotonic_now=lambda: clock[0],
                               to_values=lambda command: (command.positions.tolist(), 0.0),
                               replan_margin_periods=margin)
    pending = list(events)
    for k in range(periods):
        clock[0] = deadline[k] - STREAM_PERIOD
        if k % plan_every == 0:
            planner.plan()
        while pending and pending[0][0][0] == k:
            (_, fraction), event = pending.pop(0)
            clock[0] = deadline[k] - (1 - fraction) * STREAM_PERIOD
            if event[0] == "joints" and planner.stream_started:  # the node re-plans on joint states only
                apply_stream_event(core, event, clock[0])  # until the first command is out
            else:
                planner.replan(lambda event=event: apply_stream_event(core, event, clock[0]))
        sink.publish_next()
    published = [(k, values) for k, values, _ in sink.published]
    assert published == expected
    assert planner.refused_pushes == 0
    periods_reported = [period.index for period in planner.take_published()]
    assert periods_reported == list(range(periods))  # every period reported once, in order
