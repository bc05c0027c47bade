"""reach_moving: the named cube slides back and forth, deterministically per seed."""

from __future__ import annotations

import numpy as np
import pytest

from ceed_vla_ros.sim.env import ALL_TASKS, TASKS, TabletopArmEnv
from ceed_vla_ros.sim.expert import MovingReachExpert, make_expert
from ceed_vla_ros.sim.mjcf import HOME_QPOS


@pytest.fixture(scope="module")
def env():
    with TabletopArmEnv(task="reach_moving") as env:
        yield env


def test_dynamic_task_is_listed_apart_from_the_static_ones():
    assert "reach_moving" in ALL_TASKS and "reach_moving" not in TASKS


def test_the_named_cube_slides_along_its_segment_and_the_others_stay(env):
    obs = env.reset(seed=5)
    assert obs["instruction"] == f"reach the {env.colour} cube"
    slide = env.slide
    assert slide is not None and np.linalg.norm(slide.direction) == pytest.approx(1.0)
    others = {c: env.cube_position(c) for c in ("red", "green", "blue") if c != env.colour}
    start = env.cube_position(env.colour)
    positions = []
    for _ in range(40):
        _, _, done, info = env.step(np.array(HOME_QPOS))  # the arm stays home, away from the cubes
        positions.append(env.cube_position(env.colour))
        np.testing.assert_allclose(positions[-1][:2], slide.position(env.sim_time), atol=1e-9)
        np.testing.assert_allclose(info["target_velocity"], slide.velocity_at(env.sim_time))
        if done:
            break
    positions = np.array(positions)
    travelled = np.linalg.norm(positions[:, :2] - start[:2], axis=1)
    assert travelled.max() > 0.05  # it moves
    assert travelled.max() <= slide.length + 1e-9  # along its segment only
    assert np.allclose(positions[:, 2], positions[0, 2])  # on the table
    assert np.any(np.diff(travelled) < 0)  # and turns back
    for colour, position in others.items():
        np.testing.assert_allclose(env.cube_position(colour), position, atol=1e-3)  # settling only


def test_same_seed_same_motion_other_seed_other_motion():
    with TabletopArmEnv(task="reach_moving") as a, TabletopArmEnv(task="reach_moving") as b:
        a.reset(seed=11)
        b.reset(seed=11)
        for _ in range(10):
            a.step(np.array(HOME_QPOS))
            b.step(np.array(HOME_QPOS))
        np.testing.assert_array_equal(a.cube_position(a.colour), b.cube_position(b.colour))
        np.testing.assert_array_equal(a.render(), b.render())
        b.reset(seed=12)
        assert not np.allclose(a.slide.velocity_at(0.7), b.slide.velocity_at(0.7))


def test_the_motion_is_a_function_of_time_not_of_the_control_rate(env):
    env.reset(seed=7)
    for _ in range(8):
        env.step(np.array(HOME_QPOS))
    stepped = env.cube_position(env.colour)
    env.reset(seed=7)
    for _ in range(80):
        env.advance(0.01)  # the real-time API of the latency-aware loop
    np.testing.assert_allclose(env.cube_position(env.colour), stepped, atol=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_moving_reach_expert_catches_the_cube(env, seed):
    expert = make_expert(env)
    assert isinstance(expert, MovingReachExpert)
    obs = env.reset(seed=seed)
    info = env.privileged()
    done = False
    while not done:
        obs, success, done, info = env.step(expert.act(obs, info))
    assert success and env.step_count < env.horizon
