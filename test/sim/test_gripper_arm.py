"""The second simulated robot: 6-joint arm + parallel gripper, its URDF, the pick task and its expert."""

from __future__ import annotations

import numpy as np
import pytest

from ceed_vla_ros.sim.env import PICK_HOLD_S, PICK_LIFT, TabletopArmEnv
from ceed_vla_ros.sim.expert import PickExpert, make_expert
from ceed_vla_ros.sim.gripper_mjcf import ARM_JOINT_NAMES, FINGER_OPEN, JOINT_LIMITS, JOINT_NAMES
from ceed_vla_ros.sim.mjcf import CUBE_HALF
from ceed_vla_ros.sim.robots import GRIPPER_ARM, urdf_path


@pytest.fixture
def env():
    with TabletopArmEnv(task="pick", robot="gripper_arm") as environment:
        yield environment


def test_mjcf_and_urdf_agree_on_forward_kinematics(env):
    import mujoco

    from ceed_vla_ros.kinematics import ArmKinematics

    kinematics = ArmKinematics.from_file(urdf_path(GRIPPER_ARM), ARM_JOINT_NAMES, "base_link", "tool_tip")
    data = mujoco.MjData(env.model)
    site = env.model.site("tool_tip").id
    lower, upper = np.array(JOINT_LIMITS[:6]).T
    rng = np.random.default_rng(3)
    for _ in range(200):
        q = rng.uniform(lower, upper)
        for name, value in zip(ARM_JOINT_NAMES, q):
            data.qpos[env.model.joint(name).qposadr[0]] = value
        mujoco.mj_kinematics(env.model, data)
        position, rotation = kinematics.forward(q)
        np.testing.assert_allclose(data.site_xpos[site], position, atol=1e-9)
        np.testing.assert_allclose(data.site_xmat[site].reshape(3, 3), rotation, atol=1e-9)
    # and the finger joints are where the URDF puts them (the IK locks them)
    assert set(kinematics.joint_names) == set(ARM_JOINT_NAMES)


def test_control_vector_gripper_and_home(env):
    obs = env.reset(seed=0)
    assert env.joint_names == JOINT_NAMES and obs["joint_positions"].shape == (7,)
    assert obs["instruction"] == f"pick up the {env.colour} cube"
    np.testing.assert_allclose(obs["joint_positions"][-1], FINGER_OPEN, atol=1e-9)
    closed = env.joint_target.copy()
    closed[-1] = 0.0
    for _ in range(5):
        obs, *_ = env.step(closed)
    assert obs["joint_positions"][-1] < 0.005  # nothing between the fingers: fully closed
    assert env.data.ctrl.tolist()[-2:] == [0.0, 0.0]  # one command drives both fingers
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        env.step(np.zeros(4))
    assert env.render_camera("wrist").shape == (64, 64, 3)
    with pytest.raises(ValueError, match="no camera"):
        env.render_camera("nowhere")


def test_pick_is_for_the_gripper_arm_only():
    with pytest.raises(ValueError, match="no task 'pick'"):
        TabletopArmEnv(task="pick")
    with pytest.raises(ValueError, match="no task 'push'"):
        TabletopArmEnv(task="push", robot="gripper_arm")


@pytest.mark.parametrize("seed", range(6))
def test_pick_expert_lifts_the_named_cube(env, seed):
    expert = make_expert(env)
    assert isinstance(expert, PickExpert)
    obs = env.reset(seed=seed)
    info = env.privileged()
    lifted_steps, done = 0, False
    while not done:
        action = expert.act(obs, info)
        np.testing.assert_array_equal(action, expert.act(obs, info))  # a rule of the state
        assert np.all(np.abs(action[:6] - obs["joint_positions"][:6]) <= expert.joint_step + 1e-12)
        assert action[-1] in (0.0, FINGER_OPEN)
        obs, success, done, info = env.step(action)
        lifted_steps = lifted_steps + 1 if env.lifted() else 0
    assert success and env.step_count < env.horizon
    cube = env.cube_position(env.colour)
    assert cube[2] - CUBE_HALF >= PICK_LIFT
    assert obs["joint_positions"][-1] < CUBE_HALF + 0.004  # held between the closed fingers
    assert lifted_steps * env.dt >= PICK_HOLD_S - 1e-9


def test_pick_success_needs_the_lift_held_and_the_right_cube(env):
    env.reset(seed=1)
    assert not env.success()
    other = next(c for c in ("red", "green", "blue") if c != env.colour)

    def place(colour, z):
        adr = env._cube_qpos_adr[colour]
        env.data.qpos[adr + 2] = z
        env.data.qvel[:] = 0.0

    # the named cube held high (re-placed every 0.1 s, it falls < 5 cm in between) for less than PICK_HOLD_S
    steps = int(round(PICK_HOLD_S / env.dt))
    for _ in range(steps - 1):
        place(env.colour, CUBE_HALF + 0.3)
        env.advance(env.dt)
    assert env.lifted() and not env.success()
    place(env.colour, CUBE_HALF + 0.3)
    env.advance(env.dt)
    env.advance(0.02)  # lifted since the first physics step after the first placement: 0.5 s now
    assert env.success()
    # another cube off the table as well: not a clean pick
    place(other, CUBE_HALF + 0.3)
    env.advance(0.01)
    assert not env.success()


def test_pick_layouts_are_deterministic(env):
    a = env.reset(seed=42)["image"]
    cubes = {c: env.cube_position(c) for c in ("red", "green", "blue")}
    b = env.reset(seed=42)["image"]
    np.testing.assert_array_equal(a, b)
    for c, p in cubes.items():
        np.testing.assert_array_equal(env.cube_position(c), p)
