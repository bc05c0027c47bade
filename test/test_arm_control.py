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

    history = JointStateHistory(horizon_s=0.002)
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
