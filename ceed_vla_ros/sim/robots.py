"""The simulated robots: what the environment, the experts and the ``sim_arm`` node need to know of each.

* ``arm`` - the 4-joint arm without a gripper (:mod:`ceed_vla_ros.sim.mjcf`): reach, push,
  reach_moving; the shipped ``sim_teacher`` / ``sim_student`` checkpoints drive it in joint space.
* ``gripper_arm`` - the 6-joint arm with a parallel gripper (:mod:`ceed_vla_ros.sim.gripper_mjcf`):
  pick (and reach); its checkpoints act in end-effector space (ee_delta + gripper) through the IK
  of ``config/sim_gripper_arm.urdf``.

The control vector of a robot is ``joint_names`` (absolute targets, rad; a gripper entry is a
finger position in m). ``measured_joints[i]`` is the MuJoCo joint whose position is entry ``i`` of
the measured state, ``actuators[i]`` the MuJoCo actuators that entry ``i`` drives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ceed_vla_ros.sim import gripper_mjcf, mjcf


@dataclass(frozen=True)
class SimRobot:
    name: str
    description: str
    joint_names: tuple[str, ...]
    joint_limits: tuple[tuple[float, float], ...]
    home_qpos: tuple[float, ...]
    measured_joints: tuple[str, ...]
    actuators: tuple[tuple[str, ...], ...]
    tasks: tuple[str, ...]
    build_xml: Callable[[bool, int], str]  # (with_goal, offscreen_size) -> MJCF
    urdf: str  # file name under config/ (the driver's IK and the experts)
    arm_joints: int  # entries of joint_names before the gripper
    gripper_open: float | None = None  # gripper entry when fully open (None: no gripper)
    wrist_camera: str | None = None

    @property
    def has_gripper(self) -> bool:
        return self.gripper_open is not None


ARM = SimRobot(
    name="arm",
    description="4-joint arm, no gripper",
    joint_names=mjcf.JOINT_NAMES,
    joint_limits=mjcf.JOINT_LIMITS,
    home_qpos=mjcf.HOME_QPOS,
    measured_joints=mjcf.JOINT_NAMES,
    actuators=tuple((n,) for n in mjcf.JOINT_NAMES),
    tasks=("reach", "push", "reach_moving"),
    build_xml=lambda with_goal, size: mjcf.build_scene_xml(with_goal=with_goal, offscreen_size=size),
    urdf="sim_arm.urdf",
    arm_joints=len(mjcf.JOINT_NAMES),
)

GRIPPER_ARM = SimRobot(
    name="gripper_arm",
    description="6-joint arm with a parallel gripper",
    joint_names=gripper_mjcf.JOINT_NAMES,
    joint_limits=gripper_mjcf.JOINT_LIMITS,
    home_qpos=gripper_mjcf.HOME_QPOS,
    measured_joints=gripper_mjcf.ARM_JOINT_NAMES + (gripper_mjcf.FINGER_JOINTS[0],),
    actuators=tuple((n,) for n in gripper_mjcf.ARM_JOINT_NAMES) + (gripper_mjcf.FINGER_JOINTS,),
    tasks=("pick", "reach"),
    build_xml=lambda with_goal, size: gripper_mjcf.build_gripper_scene_xml(offscreen_size=size),
    urdf="sim_gripper_arm.urdf",
    arm_joints=len(gripper_mjcf.ARM_JOINT_NAMES),
    gripper_open=gripper_mjcf.FINGER_OPEN,
    wrist_camera=gripper_mjcf.WRIST_CAMERA_NAME,
)

ROBOTS: dict[str, SimRobot] = {r.name: r for r in (ARM, GRIPPER_ARM)}
"""Robot name -> description; ``arm`` is the default everywhere."""


def get_robot(name: str) -> SimRobot:
    if name not in ROBOTS:
        raise ValueError(f"unknown robot {name!r}; choose from {', '.join(ROBOTS)}")
    return ROBOTS[name]


def urdf_path(robot: SimRobot) -> Path:
    """The robot's URDF in this source tree (``config/``), else in the installed share folder."""
    local = Path(__file__).resolve().parents[2] / "config" / robot.urdf
    if local.is_file():
        return local
    from ceed_vla_ros.paths import share_directory

    return share_directory() / "config" / robot.urdf
