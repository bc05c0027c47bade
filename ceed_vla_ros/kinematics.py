"""Forward and inverse kinematics of an arm from its URDF (no ROS), for end-effector actions.

Built on pinocchio (PyPI ``pin``): its URDF parser is the one ROS's own tools use (urdfdom), its
forward kinematics and frame Jacobians are analytic C++ (a few microseconds per call), and
``buildModelFromXML`` takes the ``robot_description`` string as it is published. Compared with
ikpy (pure Python, numeric, slower per solve) and pytorch-kinematics (pulls torch into the driver,
which must not import it), it is the fast and correct choice; ``ceed-vla bench-kinematics``
measures the cost of one solve.

:class:`ArmKinematics` reduces the URDF to the driven joints (every other joint, e.g. gripper
fingers, is locked at its neutral position), in the driver's joint order, and solves damped least
squares IK within the joint limits:

    dq = J^T (J J^T + lambda^2 I)^-1 e,   q <- clip(q + dq, lower, upper)

seeded from the measured joints, for at most ``max_iterations`` iterations. ``e`` is the pose
error of the tip frame in the base frame (position, and the rotation error ``log3(R* R^T)`` unless
the actions are position-only); a result whose error is above the tolerance is reported as not
reached (the driver refuses the chunk and holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ceed_vla_ros.metadata import EE_ROTATIONS as ROTATIONS
from ceed_vla_ros.metadata import EndEffectorSpec


def rotation_dims(rotation: str) -> int:
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    return 0 if rotation == "none" else 3


def rotation_matrix(values: np.ndarray, rotation: str) -> np.ndarray:
    """3x3 rotation matrix of ``values`` (3,) in the given parameterisation."""
    import pinocchio as pin

    values = np.asarray(values, dtype=np.float64)
    if rotation == "rpy":
        return pin.rpy.rpyToMatrix(values)
    if rotation == "axis_angle":
        return pin.exp3(values)
    raise ValueError(f"no rotation values in parameterisation {rotation!r}")


def rotation_values(matrix: np.ndarray, rotation: str) -> np.ndarray:
    """Inverse of :func:`rotation_matrix`."""
    import pinocchio as pin

    if rotation == "rpy":
        return np.asarray(pin.rpy.matrixToRpy(matrix))
    if rotation == "axis_angle":
        return np.asarray(pin.log3(matrix))
    raise ValueError(f"no rotation values in parameterisation {rotation!r}")


def check_urdf(urdf: str, joint_names: Sequence[str]) -> None:
    """Raise ValueError unless ``urdf`` parses and holds every joint of ``joint_names``."""
    import pinocchio as pin

    try:
        model = pin.buildModelFromXML(urdf)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"cannot parse the URDF: {error}") from error
    missing = [n for n in joint_names if not model.existJointName(n)]
    if missing:
        raise ValueError(f"joints {missing} are not in the URDF (it has {list(model.names)[1:]})")


@dataclass
class IkResult:
    positions: np.ndarray  # joint positions (driver order)
    reached: bool
    position_error: float  # m
    rotation_error: float  # rad (0 for position-only)
    iterations: int

    @property
    def reason(self) -> str:
        state = "reached" if self.reached else "not reached"
        return (f"IK {state} after {self.iterations} iterations: position error {self.position_error * 1000:.1f} mm, "
                f"rotation error {math.degrees(self.rotation_error):.2f} deg")


class ArmKinematics:
    """Kinematics of ``joint_names`` (driver order) from ``base_frame`` to ``tip_frame`` of a URDF.

    Args:
        urdf: the URDF XML (the ``robot_description`` string).
        joint_names: the driven joints, in command order; each a 1-DoF revolute or prismatic joint.
        base_frame, tip_frame: URDF link names; poses are of the tip in the base frame. The base
            must not move with the driven joints.
        lower, upper: position limits to solve within (default: the URDF's; given ones are
            intersected with them).
    """

    def __init__(self, urdf: str, joint_names: Sequence[str], base_frame: str, tip_frame: str, *,
                 lower: Sequence[float] | None = None, upper: Sequence[float] | None = None,
                 damping: float = 0.05, max_iterations: int = 50, position_tolerance: float = 0.002,
                 rotation_tolerance: float = 0.02, max_joint_step: float = 0.3) -> None:
        import pinocchio as pin

        self._pin = pin
        try:
            full = pin.buildModelFromXML(urdf)
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"cannot parse the URDF: {error}") from error
        self.joint_names = tuple(joint_names)
        missing = [n for n in self.joint_names if not full.existJointName(n)]
        if missing:
            raise ValueError(f"joints {missing} are not in the URDF (it has {list(full.names)[1:]})")
        locked = [full.getJointId(n) for n in full.names[1:] if n not in self.joint_names]
        neutral = pin.neutral(full)
        self.model = pin.buildReducedModel(full, locked, neutral) if locked else full
        self.data = self.model.createData()
        self._index = []
        for name in self.joint_names:
            joint = self.model.joints[self.model.getJointId(name)]
            if joint.nq != 1 or joint.nv != 1:
                raise ValueError(f"joint {name}: only 1-DoF revolute/prismatic joints can be driven (nq={joint.nq})")
            self._index.append((joint.idx_q, joint.idx_v))
        self._q_index = np.array([i for i, _ in self._index])
        self._v_index = np.array([i for _, i in self._index])
        for frame in (base_frame, tip_frame):
            if not self.model.existFrame(frame):
                raise ValueError(f"frame {frame!r} is not in the URDF")
        self.base_frame, self.tip_frame = base_frame, tip_frame
        self._base_id = self.model.getFrameId(base_frame)
        self._tip_id = self.model.getFrameId(tip_frame)
        if self.model.frames[self._base_id].parentJoint != 0:
            raise ValueError(f"base frame {base_frame!r} moves with the driven joints; choose a fixed one")
        urdf_lower = self.model.lowerPositionLimit[self._q_index]
        urdf_upper = self.model.upperPositionLimit[self._q_index]
        self.lower = urdf_lower if lower is None else np.maximum(urdf_lower, np.asarray(lower, dtype=np.float64))
        self.upper = urdf_upper if upper is None else np.minimum(urdf_upper, np.asarray(upper, dtype=np.float64))
        if np.any(self.lower >= self.upper):
            raise ValueError(f"empty joint range: lower {self.lower.tolist()}, upper {self.upper.tolist()}")
        self.damping = float(damping)
        self.max_iterations = int(max_iterations)
        self.position_tolerance = float(position_tolerance)
        self.rotation_tolerance = float(rotation_tolerance)
        self.max_joint_step = float(max_joint_step)
        self._q = pin.neutral(self.model)

    @classmethod
    def from_file(cls, path: str | Path, *args, **kwargs) -> ArmKinematics:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ValueError(f"cannot read the URDF {path}: {error}") from error
        return cls(text, *args, **kwargs)

    @property
    def dims(self) -> int:
        return len(self.joint_names)

    def _full_q(self, q: np.ndarray) -> np.ndarray:
        full = self._q.copy()
        full[self._q_index] = q
        return full

    def _world_pose(self, q: np.ndarray, frame_id: int):
        self._pin.framesForwardKinematics(self.model, self.data, self._full_q(q))
        return self.data.oMf[frame_id]

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), rotation (3, 3)) of the tip in the base frame at joint positions ``q``."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.dims,):
            raise ValueError(f"need {self.dims} joint positions, got shape {q.shape}")
        self._pin.framesForwardKinematics(self.model, self.data, self._full_q(q))
        pose = self.data.oMf[self._base_id].actInv(self.data.oMf[self._tip_id])
        return np.array(pose.translation), np.array(pose.rotation)

    def solve(self, position: np.ndarray, rotation: np.ndarray | None, seed: np.ndarray) -> IkResult:
        """Joint positions that put the tip at ``position`` (and ``rotation``, a 3x3 matrix, unless
        None: position only), in the base frame, starting from ``seed``."""
        pin = self._pin
        q = np.clip(np.asarray(seed, dtype=np.float64), self.lower, self.upper)
        pin.framesForwardKinematics(self.model, self.data, self._full_q(q))
        base_pose = self.data.oMf[self._base_id].copy()  # fixed: does not depend on q
        target_p = base_pose.act(np.asarray(position, dtype=np.float64))
        target_r = None if rotation is None else base_pose.rotation @ np.asarray(rotation, dtype=np.float64)
        rows = slice(0, 3) if target_r is None else slice(0, 6)
        iterations = 0
        while True:
            full = self._full_q(q)
            pin.framesForwardKinematics(self.model, self.data, full)
            tip = self.data.oMf[self._tip_id]
            error_p = target_p - tip.translation
            error_r = np.zeros(3) if target_r is None else pin.log3(target_r @ tip.rotation.T)
            position_error, rotation_error = float(np.linalg.norm(error_p)), float(np.linalg.norm(error_r))
            reached = position_error <= self.position_tolerance and rotation_error <= self.rotation_tolerance
            if reached or iterations >= self.max_iterations:
                break
            jacobian = pin.computeFrameJacobian(self.model, self.data, full, self._tip_id,
                                                pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)[rows][:, self._v_index]
            error = np.concatenate((error_p, error_r))[rows]
            gram = jacobian @ jacobian.T + self.damping**2 * np.eye(jacobian.shape[0])
            dq = jacobian.T @ np.linalg.solve(gram, error)
            largest = float(np.max(np.abs(dq)))
            if largest > self.max_joint_step:
                dq *= self.max_joint_step / largest
            q = np.clip(q + dq, self.lower, self.upper)
            iterations += 1
        return IkResult(q, reached, position_error, rotation_error, iterations)


def ee_chunk_targets(actions: np.ndarray, spec: EndEffectorSpec, action_space: str, kinematics: ArmKinematics,
                     reference_joints: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Joint targets (k, joints) of an end-effector chunk (k, 3 [+ 3]) through IK, or (None, reason).

    ``reference_joints``: the joints measured at the image stamp; they give the reference pose of
    ee_delta and seed the first solve (each later step is seeded with the previous solution). One
    IK solve per chunk step; a step whose target is not reached refuses the whole chunk.
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[1] != spec.dims:
        return None, f"end-effector chunk must be (steps, {spec.dims}), got {actions.shape}"
    rotation_given = spec.rotation != "none"
    reference_p, reference_r = kinematics.forward(reference_joints)
    pose_p, pose_r = reference_p, reference_r
    seed = np.asarray(reference_joints, dtype=np.float64)
    targets = np.empty((len(actions), kinematics.dims))
    for i, action in enumerate(actions):
        dp = action[:3]
        dr = rotation_matrix(action[3:6], spec.rotation) if rotation_given else np.eye(3)
        if action_space == "ee_absolute":
            target_p, target_r = dp, dr
        else:
            if spec.delta_reference == "image_pose":
                pose_p, pose_r = reference_p, reference_r
            if spec.delta_frame == "base":
                target_p, target_r = pose_p + dp, dr @ pose_r
            else:
                target_p, target_r = pose_p + pose_r @ dp, pose_r @ dr
            pose_p, pose_r = target_p, target_r
        result = kinematics.solve(target_p, target_r if rotation_given else None, seed)
        if not result.reached:
            return None, f"step {i}: target {np.round(target_p, 3).tolist()} unreachable: {result.reason}"
        targets[i] = seed = result.positions
    return targets, f"IK solved {len(actions)} steps"
