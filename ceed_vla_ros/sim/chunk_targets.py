"""Decoded action chunks -> absolute control targets of a simulated robot, as the arm driver computes them.

* ``joint_delta``: ``target_i = joints_at_image + a_i``; ``joint_absolute``: ``a_i``.
* ``ee_delta`` / ``ee_absolute`` (+ gripper): the arm entries by the driver's IK
  (:func:`ceed_vla_ros.kinematics.ee_chunk_targets` on the robot's URDF, seeded from the joints at the
  image), the gripper entry = the checkpoint's gripper open fraction x the robot's open position.
  A chunk with an unreachable step is refused, as the driver refuses it (the caller holds the arm).
"""

from __future__ import annotations

import numpy as np

from ceed_vla_ros.arm_control import chunk_targets
from ceed_vla_ros.metadata import CheckpointMetadata


class ChunkTargets:
    """Targets of ``metadata``'s chunks for the robot of ``env`` (a :class:`~ceed_vla_ros.sim.env.TabletopArmEnv`)."""

    def __init__(self, metadata: CheckpointMetadata, env) -> None:
        robot = env.robot
        self.metadata = metadata
        self.arm = robot.arm_joints
        self.gripper_open = robot.gripper_open
        self.kinematics = None
        arm_names = list(robot.joint_names[: robot.arm_joints])
        if metadata.action_space.startswith("ee_"):
            from ceed_vla_ros.kinematics import ArmKinematics
            from ceed_vla_ros.sim.robots import urdf_path

            if list(metadata.joint_names) != arm_names:
                raise ValueError(f"checkpoint {metadata.name} drives joints {metadata.joint_names}; the simulated "
                                 f"{robot.name} has {arm_names}")
            if (metadata.gripper is not None) != robot.has_gripper:
                ours = "has" if metadata.gripper else "has no"
                theirs = "has" if robot.has_gripper else "has no"
                raise ValueError(f"checkpoint {metadata.name} {ours} gripper action; the simulated {robot.name} "
                                 f"{theirs} gripper")
            spec = metadata.end_effector
            self.kinematics = ArmKinematics.from_file(urdf_path(robot), arm_names, spec.base_frame, spec.tip_frame)
        elif list(metadata.joint_names) != list(robot.joint_names):
            raise ValueError(f"checkpoint {metadata.name} drives joints {metadata.joint_names}; the simulated "
                             f"{robot.name} has {list(robot.joint_names)}")

    def __call__(self, actions: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray | None, str]:
        """``(targets (k, n), reason)`` for the chunk ``actions`` (k, dims) decoded at ``joints`` (n,);
        ``(None, reason)`` when the IK refuses it."""
        from ceed_vla_ros.kinematics import ee_chunk_targets

        joints = np.asarray(joints, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        metadata = self.metadata
        if self.kinematics is None:
            return chunk_targets(actions, metadata.action_space, joints), "joint targets"
        arm_dims = metadata.end_effector.dims
        arm, reason = ee_chunk_targets(actions[:, :arm_dims], metadata.end_effector, metadata.action_space,
                                       self.kinematics, joints[: self.arm])
        if arm is None:
            return None, reason
        if self.gripper_open is None:
            return arm, reason
        gripper = metadata.gripper.open_fraction(actions[:, arm_dims]) * self.gripper_open
        return np.column_stack((arm, gripper)), reason
