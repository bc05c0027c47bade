"""The driver's deadline thread: absolute deadlines, skipped periods, scheduling, errors (no timing asserted)."""

from __future__ import annotations

import os
import threading
import time

import pytest

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
