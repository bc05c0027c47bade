"""Kinematics from the URDF (pinocchio): FK against the MuJoCo arm, DLS IK, ee chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ceed_vla_ros.kinematics import ArmKinematics, ee_chunk_targets, rotation_matrix, rotation_values
from ceed_vla_ros.metadata import EndEffectorSpec
from ceed_vla_ros.sim.mjcf import JOINT_NAMES, TOOL_TIP_SITE, build_scene_xml

mujoco = pytest.importorskip("mujoco")  # after ceed_vla_ros.sim, which sets MUJOCO_GL

URDF = Path(__file__).resolve().parents[1] / "config" / "sim_arm.urdf"

# a 6-joint arm (yaw, pitch, pitch, roll, pitch, roll): full 6-DoF targets for the rotation tests
ARM6_URDF = """<?xml version="1.0"?>
<robot name="arm6">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/><link name="l4"/><link name="l5"/>
  <link name="l6"/><link name="tip"/><link name="finger"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/><origin xyz="0 0 0.1"/>
    <axis xyz="0 0 1"/><limit lower="-3" upper="3" velocity="2" effort="1"/></joint>
  <joint name="j2" type="revolute"><parent link="l1"/><child link="l2"/><origin xyz="0 0 0.1"/>
    <axis xyz="0 1 0"/><limit lower="-2" upper="2" velocity="2" effort="1"/></joint>
  <joint name="j3" type="revolute"><parent link="l2"/><child link="l3"/><origin xyz="0.3 0 0"/>
    <axis xyz="0 1 0"/><limit lower="-2.5" upper="2.5" velocity="2" effort="1"/></joint>
  <joint name="j4" type="revolute"><parent link="l3"/><child link="l4"/><origin xyz="0.1 0 0"/>
    <axis xyz="1 0 0"/><limit lower="-3" upper="3" velocity="2" effort="1"/></joint>
  <joint name="j5" type="revolute"><parent link="l4"/><child link="l5"/><origin xyz="0.15 0 0"/>
    <axis xyz="0 1 0"/><limit lower="-2" upper="2" velocity="2" effort="1"/></joint>
  <joint name="j6" type="revolute"><parent link="l5"/><child link="l6"/><origin xyz="0.05 0 0"/>
    <axis xyz="1 0 0"/><limit lower="-3" upper="3" velocity="2" effort="1"/></joint>
  <joint name="tip_joint" type="fixed"><parent link="l6"/><child link="tip"/><origin xyz="0.05 0 0"/></joint>
  <joint name="finger_joint" type="prismatic"><parent link="l6"/><child link="finger"/>
    <axis xyz="0 1 0"/><limit lower="0" upper="0.04" velocity="0.1" effort="1"/></joint>
</robot>
"""
ARM6_JOINTS = ("j1", "j2", "j3", "j4", "j5", "j6")


@pytest.fixture(scope="module")
def sim_arm() -> ArmKinematics:
    return ArmKinematics.from_file(URDF, JOINT_NAMES, "base_link", "tool_tip")


def test_urdf_forward_kinematics_equals_the_mujoco_arm_at_random_joints(sim_arm):
    model = mujoco.MjModel.from_xml_string(build_scene_xml(with_goal=False))
    data = mujoco.MjData(model)
    addresses = [model.joint(name).qposadr[0] for name in JOINT_NAMES]
    site = model.site(TOOL_TIP_SITE).id
    rng = np.random.default_rng(11)
    for _ in range(50):
        q = rng.uniform(sim_arm.lower, sim_arm.upper)
        data.qpos[addresses] = q
        mujoco.mj_forward(model, data)
        position, rotation = sim_arm.forward(q)
        np.testing.assert_allclose(position, data.site_xpos[site], atol=1e-9)
        np.testing.assert_allclose(rotation, data.site_xmat[site].reshape(3, 3), atol=1e-9)
    lower, upper = np.array(model.jnt_range[[model.joint(n).id for n in JOINT_NAMES]]).T
    np.testing.assert_allclose(sim_arm.lower, lower)
    np.testing.assert_allclose(sim_arm.upper, upper)


def test_ik_reaches_random_reachable_targets_within_tolerance_and_limits(sim_arm):
    rng = np.random.default_rng(3)
    for _ in range(100):
        goal = rng.uniform(sim_arm.lower, sim_arm.upper)
        target, _ = sim_arm.forward(goal)
        seed = np.clip(goal + rng.normal(0.0, 0.2, sim_arm.dims), sim_arm.lower, sim_arm.upper)
        result = sim_arm.solve(target, None, seed)
        assert result.reached, result.reason
        assert result.iterations <= sim_arm.max_iterations
        reached, _ = sim_arm.forward(result.positions)
        assert np.linalg.norm(reached - target) <= sim_arm.position_tolerance
        assert np.all(result.positions >= sim_arm.lower) and np.all(result.positions <= sim_arm.upper)


def test_ik_with_rotation_on_a_six_joint_arm_and_locked_extra_joints():
    arm = ArmKinematics(ARM6_URDF, ARM6_JOINTS, "base", "tip")  # finger_joint is locked
    rng = np.random.default_rng(5)
    for _ in range(50):
        goal = rng.uniform(arm.lower * 0.8, arm.upper * 0.8)
        position, rotation = arm.forward(goal)
        result = arm.solve(position, rotation, goal + rng.normal(0.0, 0.1, 6))
        assert result.reached, result.reason
        reached_p, reached_r = arm.forward(result.positions)
        assert np.linalg.norm(reached_p - position) <= arm.position_tolerance
        angle = np.arccos(np.clip((np.trace(reached_r.T @ rotation) - 1) / 2, -1, 1))
        assert angle <= arm.rotation_tolerance


def test_unreachable_target_is_refused_with_a_reason(sim_arm):
    seed = np.array([0.0, -1.66, 2.4, -0.74])
    result = sim_arm.solve(np.array([2.0, 0.0, 0.2]), None, seed)  # 2 m away; the arm spans 0.6 m
    assert not result.reached and result.iterations == sim_arm.max_iterations
    assert "not reached" in result.reason and result.position_error > 1.0


def test_urdf_from_file_and_from_the_parameter_string_agree(sim_arm):
    from_string = ArmKinematics(URDF.read_text(), JOINT_NAMES, "base_link", "tool_tip")
    rng = np.random.default_rng(8)
    seed = np.array([0.0, -1.66, 2.4, -0.74])
    for _ in range(10):
        q = rng.uniform(sim_arm.lower, sim_arm.upper)
        np.testing.assert_array_equal(from_string.forward(q)[0], sim_arm.forward(q)[0])
        target = sim_arm.forward(np.clip(seed + rng.normal(0, 0.2, 4), sim_arm.lower, sim_arm.upper))[0]
        np.testing.assert_array_equal(from_string.solve(target, None, seed).positions,
                                      sim_arm.solve(target, None, seed).positions)


def test_bad_urdf_joints_and_frames_are_clear_errors():
    with pytest.raises(ValueError, match="cannot parse"):
        ArmKinematics("<robot", JOINT_NAMES, "base_link", "tool_tip")
    with pytest.raises(ValueError, match="not in the URDF"):
        ArmKinematics(URDF.read_text(), ("base_yaw", "nope"), "base_link", "tool_tip")
    with pytest.raises(ValueError, match="frame 'hand'"):
        ArmKinematics(URDF.read_text(), JOINT_NAMES, "base_link", "hand")
    with pytest.raises(ValueError, match="moves with the driven joints"):
        ArmKinematics(URDF.read_text(), JOINT_NAMES, "forearm", "tool_tip")


def test_rotation_parameterisations_round_trip():
    values = np.array([0.3, -0.2, 1.1])
    for rotation in ("rpy", "axis_angle"):
        np.testing.assert_allclose(rotation_values(rotation_matrix(values, rotation), rotation), values, atol=1e-12)
    yaw = rotation_matrix(np.array([0.0, 0.0, np.pi / 2]), "rpy")
    np.testing.assert_allclose(yaw @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_ee_delta_chunk_frames_and_references():
    arm = ArmKinematics(ARM6_URDF, ARM6_JOINTS, "base", "tip")
    q0 = np.array([0.3, -0.4, 0.9, 0.2, 0.5, -0.1])
    p0, r0 = arm.forward(q0)
    step = np.array([0.01, 0.0, -0.01, 0.0, 0.0, 0.05])
    for frame, reference in (("base", "image_pose"), ("tool", "image_pose"), ("base", "previous_step")):
        spec = EndEffectorSpec("base", "tip", "rpy", frame, reference)
        targets, reason = ee_chunk_targets(np.stack([step, step]), spec, "ee_delta", arm, q0)
        assert targets is not None, reason
        p1, r1 = arm.forward(targets[1])
        dr = rotation_matrix(step[3:], "rpy")
        if frame == "base" and reference == "image_pose":
            expected_p, expected_r = p0 + step[:3], dr @ r0
        elif frame == "tool":
            expected_p, expected_r = p0 + r0 @ step[:3], r0 @ dr
        else:  # composed twice
            expected_p, expected_r = p0 + 2 * step[:3], dr @ dr @ r0
        np.testing.assert_allclose(p1, expected_p, atol=arm.position_tolerance)
        np.testing.assert_allclose(r1, expected_r, atol=2 * arm.rotation_tolerance)
    spec = EndEffectorSpec("base", "tip", "rpy")
    far = np.array([[1.5, 0.0, 0.0, 0.0, 0.0, 0.0]])
    targets, reason = ee_chunk_targets(far, spec, "ee_delta", arm, q0)
    assert targets is None and "unreachable" in reason
