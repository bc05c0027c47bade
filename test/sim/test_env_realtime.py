"""TabletopArmEnv real-time API of the sim_arm node: set_joint_command, advance, render_current."""

from __future__ import annotations

import numpy as np
import pytest

from ceed_vla_ros.sim.env import TabletopArmEnv
from ceed_vla_ros.sim.expert import DlsIk
from ceed_vla_ros.sim.mjcf import CUBE_HALF, HOME_QPOS, PHYSICS_TIMESTEP


@pytest.fixture(scope="module")
def env():
    with TabletopArmEnv(task="reach") as env:
        yield env


def test_real_time_calls_need_an_episode():
    with TabletopArmEnv(task="reach") as fresh:
        with pytest.raises(RuntimeError, match="reset"):
            fresh.advance(0.1)
        with pytest.raises(RuntimeError, match="reset"):
            fresh.set_joint_command(np.array(HOME_QPOS))


def test_set_joint_command_clips_to_limits_without_a_step_limit(env):
    env.reset(seed=1)
    far = np.array([1.5, 5.0, -5.0, 0.0])  # 1.5 rad from home on base_yaw: beyond max_joint_step
    applied = env.set_joint_command(far)
    expected = np.clip(far, env.joint_limits[:, 0], env.joint_limits[:, 1])
    np.testing.assert_array_equal(applied, expected)
    np.testing.assert_array_equal(env.joint_target, expected)
    np.testing.assert_array_equal(env.data.ctrl, expected)
    assert applied[0] - HOME_QPOS[0] > env.max_joint_step


@pytest.mark.parametrize("bad", [np.zeros(3), np.array([0.0, np.nan, 0.0, 0.0])])
def test_set_joint_command_rejects_bad_targets_and_keeps_the_old_one(env, bad):
    env.reset(seed=1)
    with pytest.raises(ValueError):
        env.set_joint_command(bad)
    np.testing.assert_array_equal(env.joint_target, HOME_QPOS)


def test_advance_integrates_whole_physics_steps_and_carries_the_rest(env):
    env.reset(seed=2)
    steps = [env.advance(0.4 * PHYSICS_TIMESTEP) for _ in range(5)]
    assert steps == [0, 0, 1, 0, 1]
    assert env.sim_time == pytest.approx(2 * PHYSICS_TIMESTEP)
    assert env.advance(0.0) == 0
    with pytest.raises(ValueError):
        env.advance(-0.01)
    with pytest.raises(ValueError):
        env.advance(float("inf"))
    env.reset(seed=2)
    assert env.sim_time == 0.0
    assert env.advance(0.6 * PHYSICS_TIMESTEP) == 0  # the carry was cleared by reset


def test_commanded_arm_reaches_the_cube_in_real_time(env):
    env.reset(seed=3)
    start_image = env.render()
    top = env.cube_position(env.colour) + np.array([0.0, 0.0, CUBE_HALF + 0.012])
    target = DlsIk(env.model, env.joint_limits).solve(np.array(HOME_QPOS), top)
    env.set_joint_command(target)
    assert not env.success()
    env.advance(0.05)
    assert np.abs(env.joint_velocities).max() > 0.1  # moving
    env.advance(1.0)
    np.testing.assert_allclose(env.joint_positions, target, atol=1e-3)
    np.testing.assert_allclose(env.joint_velocities, 0.0, atol=1e-3)
    assert env.success()
    # advance() leaves the cached image alone; render_current() renders the present state.
    assert np.array_equal(env.render(), start_image)
    image = env.render_current()
    assert not np.array_equal(image, start_image)
    assert np.array_equal(env.render(), image)
