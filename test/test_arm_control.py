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
    names=("j1", "j2"), lower=(-1.0, -0.5), upper=(1.0, 0.5), max_velocity=(2.0, 1.0), max_acceleration=(20.0, 5.0)
)
PERIOD = 0.005  # 200 Hz
FAST = JointLimits(("j1", "j2"), (-9, -9), (9, 9), (100, 100), (1e5, 1e5))  # limits that hardly bind


def run(driver: ArmDriverCore, start: float, end: float) -> list:
    """Step the driver every control period from ``start`` (inclusive) to ``end`` (exclusive)."""
    return [driver.step(start + i * PERIOD) for i in range(int(round((end - start) / PERIOD)))]


def assert_stream_within(commands, limits: JointLimits, period: float = PERIOD, skip_acceleration=()) -> None:
    """Position, velocity AND acceleration limits hold between consecutive commands (float rounding
    only: 1e-9 relative + 1e-9 absolute on positions, scaled by the period for the derivatives).
    ``skip_acceleration``: indices i whose acceleration (commands i-2, i-1, i) is not checked."""
    commands = np.asarray(commands, dtype=np.float64)
    lower, upper = np.array(limits.lower), np.array(limits.upper)
    assert np.all(commands >= lower - 1e-12) and np.all(commands <= upper + 1e-12)
    velocity = np.diff(commands, axis=0) / period
    assert np.all(np.abs(velocity) <= np.array(limits.max_velocity) * (1 + 1e-9) + 1e-9 / period), \
        np.abs(velocity).max(axis=0)
    acceleration = np.diff(velocity, axis=0) / period
    checked = np.ones(len(acceleration), dtype=bool)
    for i in skip_acceleration:
        if 2 <= i < len(commands):
            checked[i - 2] = False
    assert np.all(np.abs(acceleration[checked]) <= np.array(limits.max_acceleration) * (1 + 1e-9)
                  + 1e-9 / period**2), np.abs(acceleration[checked]).max(axis=0)


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
    with pytest.raises(ValueError, match="max_acceleration"):
        JointLimits(names=("a",), lower=(0.0,), upper=(1.0,), max_velocity=(1.0,), max_acceleration=(np.inf,))
    with pytest.raises(ValueError, match="one lower"):
        JointLimits(names=("a",), lower=(0.0,), upper=(1.0,), max_velocity=(1.0,), max_acceleration=(1.0, 2.0))
    # the default: full speed within 0.1 s
    assert JointLimits(names=("a",), lower=(0.0,), upper=(1.0,), max_velocity=(1.5,)).max_acceleration == (15.0,)
    with pytest.raises(ValueError, match="estop_stop"):
        ArmDriverCore(limits=LIMITS, control_period_s=PERIOD, watchdog_timeout_s=0.3, estop_stop="freeze")


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
                # positions are linear in the stamp: inside the window a lookup is exact, at its ends it
                # may return the end sample if that lies within max_gap_s (a reader delayed by ~500 add()
                # calls on a loaded machine finds the window's start moved up to its stamp); a lookup torn
                # by a concurrent add() pairs times and positions that disagree by far more
                assert value is None or abs(1.0 + value[0] * 0.0001 - stamp) <= 0.00006 + 1e-9, (stamp, value)
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
    driver = make_driver(limits=FAST)
    dt = 0.1
    actions = np.array([[0.1, 0.0], [0.2, 0.0], [0.3, 0.0]])
    # decoded from an image stamped 0.0, arriving at 0.15: step 0 (window 0..0.1) is dropped
    accepted, reason = driver.on_chunk(0.0, actions, "joint_delta", dt, now=0.15)
    assert accepted, reason
    assert "2 of 3" in reason
    commands = {round(0.155 + i * PERIOD, 3): c for i, c in enumerate(run(driver, 0.155, 0.355))}
    assert np.allclose(commands[0.2].positions, [0.2, 0.0], atol=1e-6)  # step 1 reached at 0.2
    # the cubic through the steps: at 0.2 it moves at the Catmull-Rom slope (0.3 - 0) / 0.15 = 2 rad/s
    assert (commands[0.205].positions[0] - commands[0.2].positions[0]) / PERIOD == pytest.approx(2.0, rel=0.05)
    assert 0.25 < commands[0.25].positions[0] < 0.3  # the cubic passes above the straight line
    final = commands[0.3]
    assert np.allclose(final.positions, [0.3, 0.0], atol=1e-6) and not final.holding
    after = commands[0.35]
    assert after.holding and after.reason == "chunk used up"
    assert np.allclose(after.positions, [0.3, 0.0], atol=1e-9)
    assert np.array_equal(commands[0.345].positions, after.positions)  # at rest on the last step


def test_linear_motion_profile_keeps_the_former_behaviour():
    driver = make_driver(limits=FAST, motion="linear")
    actions = np.array([[0.1, 0.0], [0.2, 0.0], [0.3, 0.0]])
    assert driver.on_chunk(0.0, actions, "joint_delta", 0.1, now=0.15)[0]
    assert np.allclose(driver.step(0.2).positions, [0.2, 0.0])  # one step there: no acceleration limit
    assert np.allclose(driver.step(0.25).positions, [0.25, 0.0])  # the straight line


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


def assert_decelerates_then_holds(stream, limits: JointLimits, bound_s: float) -> np.ndarray:
    """``stream``: the commands from the last one in motion on, a period apart. The arm was moving,
    slows down within the acceleration limit (no instant freeze), and from ``bound_s`` + 2 periods
    on every command is exactly the same. Returns the held command."""
    positions = np.array([c.positions for c in stream])
    assert np.max(np.abs(positions[1] - positions[0])) > 0, "froze at once instead of decelerating"
    assert_stream_within(positions, limits)
    speed = np.max(np.abs(np.diff(positions, axis=0)), axis=1)
    assert np.all(np.diff(speed) <= 1e-12), "the stop sped up again"
    settled = int(np.ceil(bound_s / PERIOD)) + 2
    assert len(positions) > settled + 5
    assert all(np.array_equal(p, positions[settled]) for p in positions[settled:]), "kept moving after the bound"
    return positions[settled]


def test_watchdog_decelerates_within_the_limits_then_holds_exactly():
    driver = make_driver(limits=JointLimits(("j1", "j2"), (-9, -9), (9, 9), (2.0, 2.0), (20.0, 20.0)))
    driver.on_chunk(0.0, np.array([[1.0, 0.0]] * 10), "joint_delta", 0.1, now=0.01)
    moving = run(driver, 0.015, 0.31)  # 0.31 s: the watchdog (0.3 s after the chunk arrived) has not fired
    assert not moving[-1].holding and abs(moving[-1].positions[0] - moving[-2].positions[0]) > 0.5 * PERIOD
    held = run(driver, 0.315, 0.6)
    assert all(c.holding and c.reason.startswith("watchdog") for c in held)
    assert_decelerates_then_holds([moving[-2], moving[-1]] + held, driver.limits, driver.braking_time_bound())
    assert driver.braking_time_bound() == pytest.approx(2.0 / 20.0 + PERIOD)


@pytest.mark.parametrize("estop_stop", ["decelerate", "immediate"])
def test_estop_latches_until_reset_and_reset_alone_does_not_move(estop_stop):
    driver = make_driver(estop_stop=estop_stop)
    driver.on_chunk(0.0, np.array([[0.5, 0.0]] * 5), "joint_delta", 0.1, now=0.01)
    moving = run(driver, 0.015, 0.055)
    before = moving[-1].positions
    driver.trigger_estop()
    assert driver.on_chunk(0.06, np.array([[0.5, 0.0]] * 5), "joint_delta", 0.1, now=0.07) == (
        False, "e-stop latched")
    stopping = run(driver, 0.055, 0.3)
    assert all(c.holding and c.reason == "e-stop latched" for c in stopping)
    if estop_stop == "immediate":  # freezes where it is: every command is the last one in motion
        assert all(np.array_equal(c.positions, before) for c in stopping)
        held = before
    else:
        held = assert_decelerates_then_holds([moving[-2], moving[-1]] + stopping, LIMITS,
                                             driver.braking_time_bound())
    driver.reset_estop()
    assert np.array_equal(driver.step(0.3).positions, held)  # no new chunk: still holding
    assert driver.on_chunk(0.3, np.array([[0.5, 0.0]] * 5), "joint_delta", 0.1, now=0.3)[0]
    assert not driver.step(0.305).holding


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
@given(events=st.lists(event, max_size=40), start=st.lists(st.floats(-3, 3), min_size=2, max_size=2),
       transition=st.sampled_from(["replace", "temporal_ensemble"]),
       estop_stop=st.sampled_from(["decelerate", "decelerate", "immediate"]))
def test_every_command_respects_position_velocity_and_acceleration_limits(events, start, transition, estop_stop):
    """Whatever arrives (chunks good or bad, joint states, e-stops and resets, silences that fire the
    watchdog or use chunks up), consecutive commands respect the position, velocity AND acceleration
    limits; only an ``immediate`` e-stop may stop at once (its first command is exempt from the
    acceleration check), and every chunk's trajectory respects them too."""
    driver = ArmDriverCore(limits=LIMITS, control_period_s=PERIOD, watchdog_timeout_s=0.3, enable_actuation=True,
                           chunk_transition=transition, estop_stop=estop_stop)
    now = 0.0
    driver.on_joint_state(now, np.array(start))
    commands, exempt, latched = [], set(), False
    for item in events:
        kind = item[0]
        if kind == "joints":
            driver.on_joint_state(now, np.array(item[1]))
        elif kind == "chunk":
            _, actions, space, offset, dt = item
            before, before_v = driver.current_command(), driver.command_velocity()
            accepted, _ = driver.on_chunk(now + offset, np.array(actions), space, dt, now=now)
            if accepted:
                assert_trajectory_within(driver.last_trajectory, before,
                                         np.zeros(2) if before_v is None else before_v, now, LIMITS)
        elif kind == "estop":
            if item[1]:
                if estop_stop == "immediate" and not latched:
                    exempt.add(len(commands))  # the first command after the latch
                driver.trigger_estop()
            else:
                driver.reset_estop()
            latched = driver.estopped
        else:
            for _ in range(int(item[1] / PERIOD)):
                now += PERIOD
                command = driver.step(now).positions
                assert command is not None
                commands.append(command)
    if commands:
        assert_stream_within(commands, LIMITS, skip_acceleration=exempt)


# -- end-effector actions, the gripper, transitions, one trajectory per chunk ---------------------

PLANAR_URDF = """<?xml version="1.0"?>
<robot name="planar">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="tip"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/>
    <axis xyz="0 0 1"/><limit lower="-1" upper="1" velocity="2" effort="1"/></joint>
  <joint name="j2" type="revolute"><parent link="l1"/><child link="l2"/><origin xyz="0.3 0 0"/>
    <axis xyz="0 0 1"/><limit lower="-0.5" upper="0.5" velocity="1" effort="1"/></joint>
  <joint name="tip_joint" type="fixed"><parent link="l2"/><child link="tip"/><origin xyz="0.2 0 0"/></joint>
</robot>
"""


def planar_layout():
    from ceed_vla_ros.arm_control import ActionLayout
    from ceed_vla_ros.kinematics import ArmKinematics
    from ceed_vla_ros.metadata import EndEffectorSpec, GripperSpec

    kinematics = ArmKinematics(PLANAR_URDF, ("j1", "j2"), "base", "tip", position_tolerance=1e-3)
    return ActionLayout("ee_delta", EndEffectorSpec("base", "tip", "none"), GripperSpec("binary", 0.0, 1.0, 0.5),
                        kinematics)



def gripper_limits():
    from ceed_vla_ros.arm_control import GripperLimits

    return GripperLimits(closed_position=0.0, open_position=0.04, max_velocity=0.1)


BENT = np.array([0.2, 0.4])  # away from the stretched-out singularity at (0, 0)


def make_bent_driver(**overrides) -> ArmDriverCore:
    driver = ArmDriverCore(limits=LIMITS, control_period_s=PERIOD, watchdog_timeout_s=1.5, enable_actuation=True,
                           **overrides)
    driver.on_joint_state(0.0, BENT)
    return driver


def test_ee_delta_chunk_is_solved_by_ik_and_the_gripper_follows():
    layout = planar_layout()
    driver = make_bent_driver(gripper=gripper_limits())
    start_tip, _ = layout.kinematics.forward(BENT)
    goals = [layout.kinematics.forward(BENT + delta)[0] - start_tip for delta in ([0.1, 0.0], [0.2, -0.1])]
    chunk = np.column_stack((goals, [0.0, 0.0]))  # reachable tip moves; the gripper closes (0 < 0.5)
    accepted, reason = driver.on_chunk(0.0, chunk, layout, 0.2, now=0.0)
    assert accepted, reason
    now = 0.0
    for _ in range(200):
        now += PERIOD
        command = driver.step(now)
    tip, _ = layout.kinematics.forward(command.positions)
    np.testing.assert_allclose(tip, start_tip + goals[1], atol=1.5e-3)
    assert command.gripper == pytest.approx(0.0)  # closed: 0.04 m at 0.1 m/s took 0.4 s
    trajectory = driver.last_trajectory
    # step 1 at the end of its window; the last point where the stream comes to rest: later than 0.4 s,
    # as the gripper needs 0.4 s at 0.1 m/s plus its acceleration (re-timed, not a jump)
    assert trajectory.time_from_stamp[0] == pytest.approx(0.2) and 0.4 < trajectory.time_from_stamp[1] < 0.6
    assert trajectory.positions.shape == (2, 3) and np.all(trajectory.velocities[-1] == 0.0)
    np.testing.assert_allclose(trajectory.positions[-1, :2], command.positions, atol=1e-9)
    np.testing.assert_allclose(trajectory.targets[-1, 2], 0.0)


def test_unreachable_ee_target_is_refused_and_the_arm_holds():
    layout = planar_layout()
    driver = make_bent_driver()
    layout.gripper = None
    move = layout.kinematics.forward(BENT + [0.2, 0.0])[0] - layout.kinematics.forward(BENT)[0]
    assert driver.on_chunk(0.0, np.array([move] * 3), layout, 0.2, now=0.0)[0]
    for i in range(1, 21):
        previous = driver.step(i * PERIOD)
    moving = driver.step(21 * PERIOD)
    assert not moving.holding
    accepted, reason = driver.on_chunk(0.11, np.array([[2.0, 0.0, 0.0]] * 3), layout, 0.2, now=0.11)
    assert not accepted and "unreachable" in reason
    held = [driver.step(0.11 + i * PERIOD) for i in range(1, 80)]
    assert all(c.holding and "IK refused" in c.reason for c in held)
    assert_decelerates_then_holds([previous, moving] + held, LIMITS, driver.braking_time_bound())


def assert_trajectory_within(trajectory, start, start_velocity, start_time, limits: JointLimits) -> None:
    """Every point within the position and velocity limits, each reachable from the one before
    (from the command in force at ``start_time``) within the velocity limit, and consecutive
    velocities differ by at most max_acceleration x their time apart; it ends at rest."""
    lower, upper = np.array(limits.lower), np.array(limits.upper)
    v_max, a_max = np.array(limits.max_velocity), np.array(limits.max_acceleration)
    previous, previous_v, previous_t = start, start_velocity, start_time
    for t, point, velocity in zip(trajectory.time_from_stamp + trajectory.stamp, trajectory.positions,
                                  trajectory.velocities):
        assert t > previous_t
        assert np.all(point >= lower - 1e-12) and np.all(point <= upper + 1e-12)
        assert np.all(np.abs(point - previous) <= v_max * (t - previous_t) * (1 + 1e-9) + 1e-12)
        assert np.all(np.abs(velocity) <= v_max * (1 + 1e-9))
        assert np.all(np.abs(velocity - previous_v) <= a_max * (t - previous_t) * (1 + 1e-9) + 1e-9), (
            t, velocity, previous_v)
        previous, previous_v, previous_t = point, velocity, t
    assert np.all(trajectory.velocities[-1] == 0.0)


def test_trajectory_per_chunk_is_stamped_with_the_image_and_within_limits():
    driver = make_driver(watchdog_timeout_s=5.0)
    run(driver, PERIOD, 0.15)
    targets = np.array([[0.02, 0.01], [0.5, 0.5], [0.9, -0.9]])  # the last one beyond j1's reach in 0.1 s
    start, start_velocity = driver.current_command(), driver.command_velocity()
    assert driver.on_chunk(0.0, targets, "joint_absolute", 0.1, now=0.15)[0]
    trajectory = driver.last_trajectory
    assert trajectory.stamp == 0.0
    assert trajectory.time_from_stamp[0] == pytest.approx(0.2)  # step 0 already past; step 1 at its end
    # the last point: where the limited stream comes to rest on the last target (clamped into the
    # limits), re-timed later than the step's end as the limits do not let the arm get there by 0.3 s
    assert trajectory.time_from_stamp[-1] > 0.3
    np.testing.assert_allclose(trajectory.positions[-1], [0.9, -0.5], atol=1e-9)
    assert_trajectory_within(trajectory, start, start_velocity, 0.15, LIMITS)
    # ... and the points are the stream the driver sends when no other chunk comes
    stream = {round(0.15 + i * PERIOD, 3): c.positions for i, c in enumerate(run(driver, 0.155, 1.2), start=1)}
    for t, point in zip(trajectory.time_from_stamp, trajectory.positions):
        np.testing.assert_allclose(stream[round(t, 3)], point, atol=1e-12)


def test_a_hold_sends_the_braking_as_a_trajectory():
    driver = make_driver()
    driver.on_chunk(0.0, np.array([[0.5, -0.3]] * 5), "joint_delta", 0.1, now=0.01)
    run(driver, 0.015, 0.1)
    driver.trigger_estop()
    start, start_velocity = driver.current_command(), driver.command_velocity()
    brake = driver.stop_trajectory()
    assert len(brake.positions) > 2 and brake.time_from_stamp[-1] <= driver.braking_time_bound() + PERIOD
    assert_trajectory_within(brake, start, start_velocity, 0.0, LIMITS)
    stream = [c.positions for c in run(driver, 0.1, 0.1 + len(brake.positions) * PERIOD)]
    np.testing.assert_allclose(stream, brake.positions, atol=1e-12)
    assert len(driver.stop_trajectory().positions) == 1  # at rest: one point, where it is


def test_temporal_ensemble_averages_the_overlapping_steps():
    results = {}
    for transition in ("replace", "temporal_ensemble"):
        driver = make_driver(chunk_transition=transition, ensemble_decay=0.0)
        driver.step(PERIOD)
        assert driver.on_chunk(0.0, np.full((4, 2), 0.05), "joint_absolute", 0.1, now=0.01)[0]
        assert driver.on_chunk(0.1, np.full((4, 2), -0.05), "joint_absolute", 0.1, now=0.11)[0]
        results[transition] = driver.last_trajectory.targets[:, 0]
    np.testing.assert_allclose(results["replace"], -0.05)
    # steps ending at 0.2, 0.3, 0.4 overlap the first chunk: equal weights (decay 0) average them
    np.testing.assert_allclose(results["temporal_ensemble"][:3], 0.0, atol=1e-12)
    assert results["temporal_ensemble"][3] == pytest.approx(-0.05)


ee_event = st.one_of(
    st.tuples(st.just("joints"), st.lists(st.floats(-3, 3), min_size=2, max_size=2)),
    st.tuples(
        st.just("chunk"),
        st.lists(st.tuples(*[st.one_of(st.floats(-0.15, 0.15), st.sampled_from([np.nan, np.inf]))] * 2,
                           st.sampled_from([0.0, 0.0, 0.0, 0.1]), st.floats(-1, 1)),  # x, y, z (planar arm), gripper
                 min_size=1, max_size=5),
        st.floats(-0.5, 0.5),
        st.floats(0.01, 0.5),
    ),
    st.tuples(st.just("estop"), st.booleans()),
    st.tuples(st.just("wait"), st.floats(0.0, 0.4)),
)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(ee_event, max_size=30), start=st.lists(st.floats(-3, 3), min_size=2, max_size=2),
       transition=st.sampled_from(["replace", "temporal_ensemble"]))
def test_ee_delta_and_gripper_commands_respect_every_limit(events, start, transition):
    layout = planar_layout()
    gripper = gripper_limits()
    driver = ArmDriverCore(limits=LIMITS, control_period_s=PERIOD, watchdog_timeout_s=0.3, enable_actuation=True,
                           gripper=gripper, chunk_transition=transition)
    now = 0.0
    driver.on_joint_state(now, np.array(start))
    with_gripper = JointLimits(LIMITS.names + ("gripper",), LIMITS.lower + (0.0,), LIMITS.upper + (0.04,),
                               LIMITS.max_velocity + (gripper.max_velocity,),
                               LIMITS.max_acceleration + (gripper.max_acceleration,))
    commands = []
    for item in events:
        if item[0] == "joints":
            driver.on_joint_state(now, np.array(item[1]))
        elif item[0] == "chunk":
            _, actions, offset, dt = item
            before = driver.current_command()
            if before is not None:
                before = np.append(before, driver.current_gripper())
            before_v = driver.command_velocity()
            accepted, _ = driver.on_chunk(now + offset, np.array(actions), layout, dt, now=now)
            if accepted:  # IK refusals (unreachable or non-finite targets) stop the arm instead
                assert_trajectory_within(driver.last_trajectory, before,
                                         np.zeros(3) if before_v is None else before_v, now, with_gripper)
        elif item[0] == "estop":
            driver.trigger_estop() if item[1] else driver.reset_estop()
        else:
            for _ in range(int(item[1] / PERIOD)):
                now += PERIOD
                command = driver.step(now)
                commands.append(np.append(command.positions, command.gripper))
    if commands:
        assert_stream_within(commands, with_gripper)
