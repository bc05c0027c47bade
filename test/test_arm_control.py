"""The arm driver's core: chunk timing, interpolation, watchdog, e-stop and limits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ceed_vla_ros.arm_control import (
    ArmDriverCore,
    JointLimits,
    JointStateHistory,
    chunk_targets,
    limit_command,
)

LIMITS = JointLimits(
    names=("j1", "j2"), lower=(-1.0, -0.5), upper=(1.0, 0.5), max_velocity=(2.0, 1.0)
)
PERIOD = 0.005  # 200 Hz


def make_driver(**overrides) -> ArmDriverCore:
    options = dict(limits=LIMITS, control_period_s=PERIOD, watchdog_timeout_s=0.3, enable_actuation=True)
    options.update(overrides)
    driver = ArmDriverCore(**options)
    driver.on_joint_state(0.0, np.zeros(2))
    return driver


def test_joint_limits_reject_nonsense():
    with pytest.raises(ValueError, match="lower < upper"):
        JointLimits(names=("a",), lower=(1.0,), upper=(0.0,), max_velocity=(1.0,))
    with pytest.raises(ValueError, match="max_velocity"):
        JointLimits(names=("a",), lower=(0.0,), upper=(1.0,), max_velocity=(0.0,))
    with pytest.raises(ValueError, match="one lower"):
        JointLimits(names=("a", "b"), lower=(0.0,), upper=(1.0,), max_velocity=(1.0,))


def test_limit_command_bounds_position_and_velocity():
    previous = np.array([0.99, 0.0])
    command = limit_command(np.array([5.0, -5.0]), previous, LIMITS, PERIOD)
    assert command[0] == pytest.approx(1.0)  # position limit
    assert command[1] == pytest.approx(-1.0 * PERIOD)  # velocity limit
    nan_command = limit_command(np.array([np.nan, 0.001]), previous, LIMITS, PERIOD)
    assert nan_command[0] == previous[0]


def test_chunk_targets_per_action_space():
    actions = np.array([[0.1, 0.0], [0.2, -0.1]])
    reference = np.array([0.5, 0.2])
    assert np.allclose(chunk_targets(actions, "joint_delta", reference), [[0.6, 0.2], [0.7, 0.1]])
    assert np.allclose(chunk_targets(actions, "joint_absolute", None), actions)
    with pytest.raises(ValueError, match="need the joint positions"):
        chunk_targets(actions, "joint_delta", None)
    with pytest.raises(ValueError, match="unknown action space"):
        chunk_targets(actions, "cartesian", reference)


def test_joint_state_history_interpolates_at_a_stamp():
    history = JointStateHistory()
    history.add(1.0, np.array([0.0, 0.0]))
    history.add(1.1, np.array([1.0, -1.0]))
    assert np.allclose(history.at(1.05), [0.5, -0.5])
    assert history.at(3.0) is None  # too far from any sample


def test_joint_state_history_recovers_from_one_future_stamp():
    history = JointStateHistory()
    for i in range(10):
        history.add(1000 + i / 100, np.full(2, float(i)))
    history.add(4600.0, np.full(2, 99.0))  # one sample an hour ahead (clock step, bad stamp)
    assert history.add(1000.2, np.array([7.0, 8.0]))
    assert np.allclose(history.at(1000.2), [7.0, 8.0])
    assert history.clock_resets == 1 and history.last_reset == (4600.0, 1000.2)
    history.add(1000.3, np.array([8.0, 9.0]))
    assert np.allclose(history.at(1000.25), [7.5, 8.5])


def test_joint_state_history_drops_small_reorderings_and_non_finite_samples():
    history = JointStateHistory()
    assert history.add(1.0, np.array([0.0]))
    assert history.add(1.1, np.array([1.0]))
    assert not history.add(1.05, np.array([5.0]))  # reordered delivery: dropped, no reset
    assert not history.add(1.2, np.array([np.nan]))
    assert not history.add(1.2, np.array([np.inf]))
    assert history.clock_resets == 0
    assert np.allclose(history.at(1.05), [0.5])
    assert np.allclose(history.latest(), [1.0])


def test_joint_state_history_is_safe_to_read_while_another_thread_writes():
    import sys
    import threading

    # a 500-sample window: add() pops from its left on every call while the reader looks ~10 samples back
    history = JointStateHistory(horizon_s=0.05)
    errors: list[BaseException] = []
    done = threading.Event()
    newest: list[float | None] = [None]  # set once the window is full

    def reader() -> None:
        try:
            while not done.is_set():
                if newest[0] is None:
                    continue
                stamp = newest[0] - 0.00105  # inside the window that add() trims
                value = history.at(stamp, max_gap_s=0.00006)  # None once the window moved past it
                # positions are linear in the stamp: a lookup torn by a concurrent add() is off
                assert value is None or abs(value[0] - (stamp - 1.0) / 0.0001) < 1e-3, (stamp, value)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(50000):  # the horizon pops samples from the left while the reader looks up
            stamp = 1.0 + i * 0.0001
            history.add(stamp, np.array([float(i)]))
            if i >= 100:  # the window is full
                newest[0] = stamp
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert errors == []


def test_chunk_steps_are_reached_at_the_end_of_their_window_and_past_steps_dropped():
    driver = make_driver(limits=JointLimits(("j1", "j2"), (-9, -9), (9, 9), (100, 100)))
    dt = 0.1
    actions = np.array([[0.1, 0.0], [0.2, 0.0], [0.3, 0.0]])
    # decoded from an image stamped 0.0, arriving at 0.15: step 0 (window 0..0.1) is dropped
    accepted, reason = driver.on_chunk(0.0, actions, "joint_delta", dt, now=0.15)
    assert accepted, reason
    assert "2 of 3" in reason
    assert np.allclose(driver.step(0.2).positions, [0.2, 0.0])  # step 1 reached at 0.2
    assert np.allclose(driver.step(0.25).positions, [0.25, 0.0])  # halfway through step 2
    final = driver.step(0.3)
    assert np.allclose(final.positions, [0.3, 0.0]) and not final.holding
    after = driver.step(0.35)
    assert after.holding and after.reason == "chunk used up"
    assert np.allclose(after.positions, [0.3, 0.0])


def test_stale_duplicate_and_future_chunks_are_rejected():
    driver = make_driver()
    actions = np.zeros((2, 2))
    assert driver.on_chunk(0.0, actions, "joint_delta", 0.1, now=0.5) == (
        False, "stale: all 2 steps already past (0.500 s after the image)")
    assert driver.on_chunk(0.3, actions, "joint_delta", 0.1, now=0.31)[0]
    accepted, reason = driver.on_chunk(0.3, actions, "joint_delta", 0.1, now=0.32)
    assert not accepted and "duplicate" in reason
    accepted, reason = driver.on_chunk(2.0, actions, "joint_delta", 0.1, now=0.33)
    assert not accepted and "future" in reason
    accepted, reason = driver.on_chunk(0.34, np.zeros((2, 3)), "joint_delta", 0.1, now=0.34)
    assert not accepted and "shape" in reason


def test_watchdog_holds_when_actions_stop():
    driver = make_driver(limits=JointLimits(("j1", "j2"), (-9, -9), (9, 9), (100, 100)))
    driver.on_chunk(0.0, np.array([[1.0, 0.0]] * 10), "joint_delta", 0.1, now=0.01)
    moving = driver.step(0.2)
    assert not moving.holding
    held = driver.step(0.32)  # 0.31 s after the chunk arrived > 0.3 s timeout
    assert held.holding and held.reason.startswith("watchdog")
    assert np.array_equal(held.positions, moving.positions)
    later = driver.step(0.4)
    assert np.array_equal(later.positions, moving.positions) and later.reason.startswith("watchdog")


def test_estop_latches_until_reset_and_reset_alone_does_not_move():
    driver = make_driver()
    driver.on_chunk(0.0, np.array([[0.5, 0.0]] * 5), "joint_delta", 0.1, now=0.01)
    before = driver.step(0.05).positions
    driver.trigger_estop()
    assert driver.on_chunk(0.06, np.array([[0.5, 0.0]] * 5), "joint_delta", 0.1, now=0.07) == (
        False, "e-stop latched")
    for t in (0.08, 0.1, 0.2):
        command = driver.step(t)
        assert command.holding and np.array_equal(command.positions, before)
    driver.reset_estop()
    assert np.array_equal(driver.step(0.21).positions, before)  # no new chunk: still holding
    assert driver.on_chunk(0.21, np.array([[0.5, 0.0]] * 5), "joint_delta", 0.1, now=0.22)[0]
    assert not driver.step(0.25).holding


def test_disabled_actuation_sends_nothing():
    driver = make_driver(enable_actuation=False)
    driver.on_chunk(0.0, np.array([[0.5, 0.0]] * 5), "joint_delta", 0.1, now=0.01)
    command = driver.step(0.05)
    assert command.positions is None and "actuation disabled" in command.reason


event = st.one_of(
    st.tuples(st.just("joints"), st.lists(st.floats(-3, 3), min_size=2, max_size=2)),
    st.tuples(
        st.just("chunk"),
        st.lists(st.lists(st.one_of(st.floats(-10, 10), st.sampled_from([np.nan, np.inf, -np.inf])),
                          min_size=2, max_size=2),
                 min_size=1, max_size=6),
        st.sampled_from(["joint_delta", "joint_absolute"]),
        st.floats(-0.5, 0.5),  # image stamp offset from now
        st.floats(0.01, 0.5),  # step dt
    ),
    st.tuples(st.just("estop"), st.booleans()),
    st.tuples(st.just("wait"), st.floats(0.0, 0.4)),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(event, max_size=40), start=st.lists(st.floats(-3, 3), min_size=2, max_size=2))
def test_every_command_respects_position_and_velocity_limits(events, start):
    driver = ArmDriverCore(limits=LIMITS, control_period_s=PERIOD, watchdog_timeout_s=0.3, enable_actuation=True)
    now = 0.0
    driver.on_joint_state(now, np.array(start))
    previous = None
    for item in events:
        kind = item[0]
        if kind == "joints":
            driver.on_joint_state(now, np.array(item[1]))
        elif kind == "chunk":
            _, actions, space, offset, dt = item
            driver.on_chunk(now + offset, np.array(actions), space, dt, now=now)
        elif kind == "estop":
            driver.trigger_estop() if item[1] else driver.reset_estop()
        else:
            for _ in range(int(item[1] / PERIOD)):
                now += PERIOD
                command = driver.step(now).positions
                assert command is not None
                assert np.all(command >= np.array(LIMITS.lower) - 1e-12)
                assert np.all(command <= np.array(LIMITS.upper) + 1e-12)
                if previous is not None:
                    assert np.all(np.abs(command - previous) <= np.array(LIMITS.max_velocity) * PERIOD + 1e-12)
                previous = command
