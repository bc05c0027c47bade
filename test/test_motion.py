"""Motion limits and smooth chunk interpolation (no ROS): position, velocity and acceleration hold
for any stream of targets; the cubic curve is continuous across a re-plan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ceed_vla_ros.motion import CubicChunk, MotionLimiter

LOWER, UPPER = np.array([-2.0, -1.0, 0.0]), np.array([2.0, 0.5, 2.5])
V, A, T = np.array([2.0, 1.0, 3.0]), np.array([10.0, 4.0, 30.0]), 0.005


def limiter() -> MotionLimiter:
    return MotionLimiter(LOWER, UPPER, V, A, T)


def assert_stream_within_limits(commands: np.ndarray) -> None:
    tol = 1e-9
    assert np.all(commands >= LOWER - tol) and np.all(commands <= UPPER + tol)
    velocity = np.diff(commands, axis=0) / T
    assert np.all(np.abs(velocity) <= V + 1e-6)
    acceleration = np.diff(velocity, axis=0) / T
    assert np.all(np.abs(acceleration) <= A * (1 + 1e-6) + 1e-6), np.abs(acceleration).max(axis=0)


finite = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False)
event = st.one_of(st.none(), st.lists(finite, min_size=3, max_size=3))  # None = brake


@settings(max_examples=300, deadline=None)
@given(start=st.lists(finite, min_size=3, max_size=3),
       events=st.lists(st.tuples(event, st.integers(min_value=1, max_value=80)), min_size=1, max_size=12),
       feed_forward=st.lists(st.floats(min_value=-20, max_value=20), min_size=3, max_size=3))
def test_any_targets_give_a_stream_within_position_velocity_and_acceleration_limits(start, events, feed_forward):
    motion = limiter()
    commands = [motion.reset(np.array(start))]
    for target, periods in events:
        for _ in range(periods):
            commands.append(motion.step(None if target is None else np.array(target), np.array(feed_forward)))
    assert_stream_within_limits(np.array(commands))


def test_it_reaches_a_target_and_stops_there_without_overshoot():
    motion = limiter()
    motion.reset(np.zeros(3))
    target = np.array([1.0, 0.4, 2.0])
    path = np.array([motion.step(target) for _ in range(2000)])
    assert np.allclose(path[-1], target, atol=1e-9) and motion.at_rest(1e-6)
    assert np.all(path <= target + 1e-9)  # approaches from below, never past
    assert_stream_within_limits(path)
    # time-optimal-ish: joint 0 needs about 2 sqrt(d / A) = 0.63 s (velocity limit not reached)
    arrived = np.argmax(np.abs(path[:, 0] - 1.0) < 1e-6) * T
    assert 0.6 < arrived < 0.75


def test_brake_decelerates_within_the_limit_instead_of_freezing():
    motion = limiter()
    motion.reset(np.array([-1.5, -0.5, 0.5]))
    for _ in range(60):
        motion.step(np.array([1.5, 0.4, 2.4]))
    moving = motion.velocity.copy()
    assert np.abs(moving).min() > 0.1
    stream = [motion.position.copy()]
    while not motion.at_rest():
        stream.append(motion.step(None))
    assert len(stream) > 2  # not an instant stop
    assert_stream_within_limits(np.array(stream))
    expected_periods = np.max(np.abs(moving) / (A * T))  # v / (A T) periods to stop
    assert len(stream) - 1 == pytest.approx(expected_periods, abs=2)


def test_running_into_a_position_limit_brakes_in_time():
    motion = limiter()
    motion.reset(np.array([1.0, 0.0, 1.0]))
    stream = [motion.step(np.array([50.0, 50.0, 50.0]), np.array([20.0, 20.0, 20.0])) for _ in range(600)]
    assert_stream_within_limits(np.array(stream))
    assert np.allclose(stream[-1], UPPER)


def test_cubic_chunk_starts_with_the_commanded_velocity_and_passes_every_target():
    times, targets = np.array([0.1, 0.2, 0.3]), np.array([[0.1], [0.3], [0.3]])
    curve = CubicChunk.through(0.0, np.array([0.0]), np.array([2.0]), times, targets)
    position, velocity = curve.sample(0.0)
    assert position == pytest.approx([0.0]) and velocity == pytest.approx([2.0])
    for t, x in zip(times, targets):
        assert curve.sample(t)[0] == pytest.approx(x)
    assert curve.sample(0.3)[1] == pytest.approx([0.0]) and curve.finished(0.3)
    # velocity continuous at the knots (C1): left and right limits agree
    for t in times[:-1]:
        assert curve.sample(t - 1e-7)[1] == pytest.approx(curve.sample(t + 1e-7)[1], abs=1e-4)
    # the derivative really is the derivative
    t = 0.137
    numeric = (curve.sample(t + 1e-6)[0] - curve.sample(t - 1e-6)[0]) / 2e-6
    assert curve.sample(t)[1] == pytest.approx(numeric, rel=1e-5)


def test_a_replan_mid_motion_keeps_the_velocity_continuous():
    """Following a cubic chunk, then a new one from the command in force: no velocity step, and the
    acceleration of the stream stays within the limit."""
    motion = limiter()
    motion.reset(np.zeros(3))
    first = CubicChunk.through(0.0, np.zeros(3), np.zeros(3), np.array([0.1, 0.2, 0.3, 0.4]),
                               np.array([[0.05, 0.02, 0.1], [0.15, 0.06, 0.3], [0.3, 0.12, 0.6], [0.45, 0.18, 0.9]]))
    stream, now = [motion.position.copy()], 0.0
    for _ in range(30):
        now += T
        stream.append(motion.step(*first.sample(now)))
    # a re-plan that turns back: starts from the command in force with its velocity
    second = CubicChunk.through(now, motion.position, motion.velocity, now + np.array([0.1, 0.2, 0.3, 0.4]),
                                np.array([[0.1, 0.0, 0.2]] * 4))
    assert second.sample(now)[1] == pytest.approx(motion.velocity)
    for _ in range(120):
        now += T
        stream.append(motion.step(*second.sample(now)))
    assert_stream_within_limits(np.array(stream))
    assert np.allclose(stream[-1], [0.1, 0.0, 0.2], atol=1e-6)


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="max_acceleration"):
        MotionLimiter(LOWER, UPPER, V, np.array([1.0, 0.0, 1.0]), T)
    with pytest.raises(ValueError, match="one lower"):
        MotionLimiter(LOWER, UPPER, V, np.array([1.0]), T)
    with pytest.raises(RuntimeError):
        limiter().step(np.zeros(3))


def test_a_curve_that_stops_harder_than_the_limit_allows_is_not_overshot():
    """On the last segment the speed toward the last target is capped so braking at A stops on it."""
    # the last segment arrives at about 1.5 x the joints' speed per 0.1 s and stops dead: -60 rad/s^2 on joint 0
    end = np.array([0.35, 0.2, 0.5])
    curve = CubicChunk.through(0.0, np.zeros(3), np.zeros(3), np.array([0.1, 0.2, 0.3]),
                               np.array([end * 0.15, end * 0.6, end]))
    results = {}
    for capped in (False, True):
        motion = limiter()
        motion.reset(np.zeros(3))
        stream, now = [], 0.0
        for _ in range(400):
            now += T
            stop = curve.positions[-1] if capped else None  # the targets run monotonically to the end
            stream.append(motion.step(*curve.sample(now), stop))
        assert_stream_within_limits(np.array(stream))
        assert np.allclose(stream[-1], end, atol=1e-9)
        results[capped] = np.max(np.array(stream), axis=0)
    assert np.any(results[False] > end + 1e-3)  # this curve is overshot without the cap
    assert np.all(results[True] <= end + 1e-9)


def reference_step(p, v, target, target_velocity, stop_at):
    """The limiter's formulas (module docstring) as plain numpy array operations: what the per-joint
    float loop of MotionLimiter.step must reproduce bit for bit."""

    def bound(room):
        return np.sqrt((A * T) ** 2 + 2.0 * A * np.maximum(room, 0.0)) - A * T

    if target is None:
        goal = np.zeros_like(v)
    else:
        target = np.clip(target, LOWER, UPPER)
        feed_forward = np.zeros_like(v) if target_velocity is None else target_velocity
        error = target - p - feed_forward * T
        goal = feed_forward + np.sign(error) * bound(np.abs(error))
        if stop_at is not None:
            room = np.clip(stop_at, LOWER, UPPER) - p
            capped = np.where(room >= 0, np.minimum(goal, bound(room)), np.maximum(goal, -bound(-room)))
            goal = np.where(np.isfinite(stop_at), capped, goal)
    new_v = np.clip(np.clip(goal, v - A * T, v + A * T), -V, V)
    new_v = np.maximum(np.minimum(new_v, bound(UPPER - p)), -bound(p - LOWER))
    position = np.clip(p + new_v * T, LOWER, UPPER)
    if target is not None:
        position = np.where(np.abs(position - target) <= 1e-12 * np.maximum(1.0, np.abs(target)), target, position)
    return position, (position - p) / T


def test_the_float_loop_step_is_bitwise_the_array_formulas():
    rng = np.random.default_rng(3)
    motion = limiter()
    motion.reset(np.array([0.3, -0.2, 1.0]))
    for i in range(8000):
        if i % 400 == 0:  # a far target (also beyond the limits) held for a while: limit braking, exact holds
            far = rng.uniform(-3.0, 3.0, 3)
        block = (i // 400) % 4
        nearby = motion.position + rng.normal(0.0, 0.01, 3)
        target = None if block == 3 else far if i % 400 < 300 or block == 0 else nearby
        target_velocity = None if i % 3 == 0 else rng.normal(0.0, 1.0, 3)
        stop_at = None if i % 2 == 0 else np.where(rng.random(3) < 0.5, rng.uniform(-3.0, 3.0, 3), np.nan)
        expected = reference_step(motion.position, motion.velocity, target, target_velocity, stop_at)
        command = motion.step(target, target_velocity, stop_at)
        assert np.array_equal(command, expected[0]) and np.array_equal(motion.velocity, expected[1]), i


def test_the_state_arrays_are_copies_and_the_float_step_is_the_array_step():
    motion, twin = limiter(), limiter()
    motion.reset(np.array([0.3, -0.2, 1.0]))
    twin.reset(np.array([0.3, -0.2, 1.0]))
    motion.position[0] = 5.0  # a copy: the limiter's state is unchanged
    assert motion.position[0] == 0.3
    target, feed_forward, stop = np.array([1.0, 0.0, -1.0]), np.array([0.5, 0.0, 0.0]), np.array([np.nan, 0.1, -1.0])
    for _ in range(50):
        floats = twin.step_floats(target.tolist(), feed_forward.tolist(), stop.tolist())
        assert np.array_equal(motion.step(target, feed_forward, stop), np.array(floats))
    assert np.array_equal(motion.velocity, twin.velocity)


def test_the_cubic_lands_exactly_on_its_knots():
    rng = np.random.default_rng(5)
    times = np.cumsum(rng.uniform(0.05, 0.2, 6))
    curve = CubicChunk.through(0.0, rng.normal(size=3), rng.normal(size=3), times, rng.normal(size=(6, 3)))
    for t, knot in zip(curve.times[1:-1], curve.positions[1:-1]):
        assert curve.sample(t)[0].tolist() == knot.tolist()
