"""TabletopArmEnv: observation contents, determinism, layouts, clipping, success tests."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ceed_vla_ros.sim.env import COLOURS, TabletopArmEnv
from ceed_vla_ros.sim.mjcf import CUBE_HALF, HOME_QPOS, JOINT_NAMES


@pytest.fixture(scope="module")
def reach_env():
    with TabletopArmEnv(task="reach") as env:
        yield env


@pytest.fixture(scope="module")
def push_env():
    with TabletopArmEnv(task="push") as env:
        yield env


def test_observation_has_only_image_joints_and_instruction(reach_env):
    obs = reach_env.reset(seed=3)
    assert set(obs) == {"image", "joint_positions", "instruction"}
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["joint_positions"].shape == (4,)
    np.testing.assert_allclose(obs["joint_positions"], HOME_QPOS)
    assert obs["instruction"] == f"reach the {reach_env.colour} cube"
    # Object poses live only in the privileged info, never in the observation.
    np.testing.assert_array_equal(obs["joint_positions"], reach_env.joint_positions)
    assert "cube_positions" in reach_env.privileged()


def test_same_seed_gives_identical_images_and_state():
    actions = [np.array([0.3, -1.4, 2.2, -0.8]), np.array([0.5, -1.2, 2.0, -0.8])]
    runs = []
    for _ in range(2):
        with TabletopArmEnv(task="push", seed=11) as env:
            frames, states = [env.reset()["image"]], []
            for action in actions:
                obs, _, _, info = env.step(action)
                frames.append(obs["image"])
                states.append(env.data.qpos.copy())
            runs.append((frames, states, info["goal_position"], env.instruction))
    (frames_a, states_a, goal_a, text_a), (frames_b, states_b, goal_b, text_b) = runs
    assert all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b))
    assert all(np.array_equal(a, b) for a, b in zip(states_a, states_b))
    assert np.array_equal(goal_a, goal_b) and text_a == text_b


def test_reset_seed_overrides_stream(reach_env):
    first = reach_env.reset(seed=5)["image"]
    reach_env.reset(seed=6)
    assert np.array_equal(reach_env.reset(seed=5)["image"], first)


def test_different_seeds_give_different_layouts(reach_env):
    layouts = []
    for seed in range(5):
        reach_env.reset(seed=seed)
        layouts.append(np.stack([reach_env.cube_position(c) for c in COLOURS]))
    for a, b in itertools.combinations(layouts, 2):
        assert not np.allclose(a, b)


def test_cubes_rest_apart_on_the_table_in_front_of_the_arm(push_env):
    for seed in range(40):
        push_env.reset(seed=seed)
        cubes = [push_env.cube_position(c) for c in COLOURS]
        for cube in cubes:
            assert cube[2] == pytest.approx(CUBE_HALF)
            assert 0.2 <= np.linalg.norm(cube[:2]) <= 0.42 and cube[0] > 0
        for a, b in itertools.combinations(cubes, 2):
            assert np.linalg.norm(a[:2] - b[:2]) > 2 * np.sqrt(2) * CUBE_HALF
        named = push_env.cube_position(push_env.colour)
        goal_distance = np.linalg.norm(push_env.goal_position[:2] - named[:2])
        assert 0.1 <= goal_distance <= 0.18
        assert not push_env.success()


def test_colour_argument_and_instruction_template():
    with TabletopArmEnv(task="push", instruction_template="move {colour} onto yellow") as env:
        obs = env.reset(seed=1, colour="blue")
        assert env.colour == "blue" and obs["instruction"] == "move blue onto yellow"
        with pytest.raises(ValueError):
            env.reset(colour="purple")


def test_joint_target_is_velocity_limited_then_clipped_to_limits(reach_env):
    reach_env.reset(seed=0)
    lower, upper = reach_env.joint_limits[:, 0], reach_env.joint_limits[:, 1]
    previous = reach_env.joint_target
    for _ in range(30):
        *_, info = reach_env.step(np.full(4, 10.0))
        target = info["joint_target"]
        assert np.all(np.abs(target - previous) <= reach_env.max_joint_step + 1e-12)
        assert np.all(target <= upper)
        previous = target
    np.testing.assert_array_equal(previous, upper)
    clipped = reach_env.clip_joint_target(np.full(4, -10.0), lower + 0.01)
    np.testing.assert_array_equal(clipped, lower)


def test_episode_ends_at_horizon_and_step_after_done_raises():
    with TabletopArmEnv(task="reach", horizon=3) as env:
        env.reset(seed=0)
        dones = [env.step(np.array(HOME_QPOS)).done for _ in range(3)]
        assert dones == [False, False, True]
        with pytest.raises(RuntimeError):
            env.step(np.array(HOME_QPOS))


def test_target_pixel_lies_on_the_named_cube(reach_env):
    channel = {"red": 0, "green": 1, "blue": 2}
    for seed in range(6):
        reach_env.reset(seed=seed)
        info = reach_env.privileged()
        u, v = info["target_pixel"]
        pixel = reach_env.render()[int(v), int(u)].astype(int)
        dominant = channel[reach_env.colour]
        assert pixel[dominant] > max(np.delete(pixel, dominant)) + 60, (seed, pixel)


def test_goal_disc_is_visible_in_push_images(push_env):
    for seed in range(4):
        push_env.reset(seed=seed)
        u, v = push_env.project_to_pixel(push_env.goal_position)
        red, green, blue = push_env.render()[int(v), int(u)].astype(int)
        assert red > 150 and green > 120 and blue < 80, (seed, red, green, blue)


def test_reach_success_uses_the_tool_tip_distance_to_the_cube_top(reach_env):
    reach_env.reset(seed=2)
    assert not reach_env.success()
    top = reach_env.cube_position(reach_env.colour) + [0.0, 0.0, CUBE_HALF]
    assert np.linalg.norm(reach_env.tool_tip_position() - top) > reach_env.reach_threshold


def test_goal_marker_only_in_push_and_exposed_constants(reach_env, push_env):
    assert reach_env.privileged()["goal_position"] is None
    assert push_env.model.body("goal").mocapid[0] == 0
    assert reach_env.joint_names == JOINT_NAMES and reach_env.dt == pytest.approx(0.1)
    assert reach_env.joint_limits.shape == (4, 2)
