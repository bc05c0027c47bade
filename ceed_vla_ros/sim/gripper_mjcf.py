"""The second simulated robot: a 6-joint arm with a parallel gripper, generated as an MJCF string.

Same table, lighting, cubes and ``front`` camera as :mod:`ceed_vla_ros.sim.mjcf` (so the policies'
images look alike), a different arm (world frame: metres, z up, table top at z = 0, base at the
origin, workspace in +x):

* six revolute joints, in control order: ``base_yaw`` (about z), ``shoulder_pitch``,
  ``elbow_pitch`` (about the yawed y axis; positive pitch turns the next link downwards),
  ``forearm_roll`` (about the forearm), ``wrist_pitch`` (about y) and ``wrist_roll`` (about the
  tool axis). At zero the arm is stretched out horizontally along +x and the tool points straight
  down (-z); with ``forearm_roll = 0`` and ``shoulder + elbow + wrist_pitch = 0`` it stays vertical.
* a parallel gripper: two fingers on slide joints ``finger_left`` / ``finger_right`` (the distance
  of each finger's inner face from the tool axis, 0 = closed, ``FINGER_OPEN`` = fully open), one
  position actuator each, both driven by the ONE gripper command (the ``gripper`` entry of the
  control vector: a finger position in m). The fingers close along the tool's y axis.
* the site ``tool_tip`` is the grasp centre between the fingertips (the end-effector frame of the
  actions, link ``tool_tip`` in ``config/sim_gripper_arm.urdf``, which has the same kinematics;
  ``test/sim/test_gripper_arm.py`` checks that both agree);
* a ``wrist`` camera on the palm looking along the tool axis at the fingers.

Position actuators mirror ros2_control forward position controllers; the links are
gravity-compensated. The arm collides with the cubes only; the fingers have high friction so a
closed grasp holds a 0.1 kg cube.
"""

from __future__ import annotations

from ceed_vla_ros.sim.mjcf import (
    CAMERA_EYE,
    CAMERA_FOVY,
    CAMERA_NAME,
    CAMERA_TARGET,
    CUBE_COLOURS,
    PHYSICS_TIMESTEP,
    TOOL_TIP_SITE,
    _camera_xyaxes,
    _cube_xml,
)

ARM_JOINT_NAMES: tuple[str, ...] = (
    "base_yaw",
    "shoulder_pitch",
    "elbow_pitch",
    "forearm_roll",
    "wrist_pitch",
    "wrist_roll",
)
"""The six arm joints, in control-vector order."""

GRIPPER_NAME = "gripper"
"""Name of the gripper entry of the control vector (and of /joint_states): a finger position (m)."""

FINGER_JOINTS: tuple[str, str] = ("finger_left", "finger_right")

FINGER_OPEN = 0.055
"""Finger position (m) of the fully open gripper: the fingers' inner faces are 0.11 m apart."""

JOINT_NAMES: tuple[str, ...] = ARM_JOINT_NAMES + (GRIPPER_NAME,)
"""Control vector: the six arm joints, then the gripper."""

JOINT_LIMITS: tuple[tuple[float, float], ...] = (
    (-2.0, 2.0),
    (-1.9, 1.0),
    (-0.3, 2.6),
    (-2.0, 2.0),
    (-2.4, 2.0),
    (-3.1, 3.1),
    (0.0, FINGER_OPEN),
)
"""Lower/upper limit of each control entry (rad; the gripper in m), ``JOINT_NAMES`` order."""

HOME_QPOS: tuple[float, ...] = (0.0, -1.66, 2.4, 0.0, -0.74, 0.0, FINGER_OPEN)
"""Start of every episode: tool vertical, gripper open, tip retracted at about (0.14, 0, 0.21)."""

WRIST_CAMERA_NAME = "wrist"

_YAW_HEIGHT = 0.08
_SHOULDER_HEIGHT = 0.2
_UPPER_ARM = 0.26
_FOREARM_ROLL_AT = 0.1  # forearm_roll joint, along the forearm from the elbow
_FOREARM = 0.22  # elbow -> wrist_pitch
_WRIST_ROLL_DROP = 0.035  # wrist_pitch -> wrist_roll, down the tool axis
_PALM_DROP = 0.025  # wrist_roll -> palm bottom (finger roots)
TIP_DROP = 0.04
"""Finger roots (palm bottom) -> grasp centre (``tool_tip``), down the tool axis."""
TOOL_LENGTH = _WRIST_ROLL_DROP + _PALM_DROP + TIP_DROP
"""wrist_pitch axis -> tool_tip along the tool axis (m)."""
FINGER_HALF = (0.006, 0.012, 0.032)
"""Finger box half sizes in m: thickness along the closing axis (the tool's y), width (x), length (z)."""

_ARM_RGBA = "0.8 0.82 0.86 1"
_JOINT_RGBA = "0.25 0.25 0.3 1"
_GRIPPER_RGBA = "0.15 0.15 0.15 1"


def build_gripper_scene_xml(*, offscreen_size: int = 256) -> str:
    """Return the MJCF of the gripper-arm scene (see the module docstring)."""
    cubes = "".join(_cube_xml(c, rgb, i) for i, (c, rgb) in enumerate(CUBE_COLOURS.items()))
    limits = dict(zip(JOINT_NAMES, JOINT_LIMITS))

    def rng(name: str) -> str:
        low, high = limits[name]
        return f"{low} {high}"

    fx, fy, fz = FINGER_HALF
    finger_z = -(_PALM_DROP + TIP_DROP) + fz - 0.008  # fingers reach 8 mm past the grasp centre
    return f"""<mujoco model="ceed_tabletop_gripper_arm">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_TIMESTEP}" integrator="implicitfast" cone="elliptic"/>
  <visual>
    <global offwidth="{offscreen_size}" offheight="{offscreen_size}"/>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="6" numquads="1"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>
    <joint damping="0.5" armature="0.02"/>
    <geom contype="2" conaffinity="0" friction="0.2 0.005 0.0001" solref="0.01 1"/>
    <position kp="80" kv="5" forcerange="-60 60"/>
    <default class="finger">
      <joint type="slide" damping="2" armature="0.1"/>
      <geom type="box" size="{fy} {fx} {fz}" rgba="{_GRIPPER_RGBA}" friction="1.5 0.01 0.001"
            mass="0.03" solimp="0.95 0.99 0.001"/>
      <position kp="100" kv="6" forcerange="-3 3" ctrlrange="0 {FINGER_OPEN}"/>
    </default>
  </default>
  <worldbody>
    <light name="top" pos="0.3 0 1.5" dir="0 0 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 -0.2" rgba="0.3 0.32 0.35 1"
          contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="0.7 0.8 0.02" pos="0.2 0 -0.02"
          rgba="0.62 0.5 0.38 1" contype="1" conaffinity="1" friction="0.6 0.005 0.0001"/>
    <camera name="{CAMERA_NAME}" mode="fixed" pos="{' '.join(map(str, CAMERA_EYE))}"
            xyaxes="{_camera_xyaxes(CAMERA_EYE, CAMERA_TARGET)}" fovy="{CAMERA_FOVY}"/>
    <body name="base" pos="0 0 0" gravcomp="1">
      <geom name="base" type="cylinder" size="0.07 0.04" pos="0 0 0.04" rgba="{_JOINT_RGBA}"/>
      <body name="turret" pos="0 0 {_YAW_HEIGHT}" gravcomp="1">
        <joint name="base_yaw" axis="0 0 1" range="{rng('base_yaw')}"/>
        <geom name="turret" type="cylinder" size="0.045 0.06" pos="0 0 0.06" rgba="{_ARM_RGBA}" mass="1.0"/>
        <body name="upper_arm" pos="0 0 {_SHOULDER_HEIGHT - _YAW_HEIGHT}" gravcomp="1">
          <joint name="shoulder_pitch" axis="0 1 0" range="{rng('shoulder_pitch')}"/>
          <geom name="shoulder" type="sphere" size="0.04" rgba="{_JOINT_RGBA}" mass="0.3"/>
          <geom name="upper_arm" type="capsule" fromto="0 0 0 {_UPPER_ARM} 0 0" size="0.028"
                rgba="{_ARM_RGBA}" mass="0.6"/>
          <body name="forearm" pos="{_UPPER_ARM} 0 0" gravcomp="1">
            <joint name="elbow_pitch" axis="0 1 0" range="{rng('elbow_pitch')}"/>
            <geom name="elbow" type="sphere" size="0.034" rgba="{_JOINT_RGBA}" mass="0.2"/>
            <geom name="forearm_a" type="capsule" fromto="0 0 0 {_FOREARM_ROLL_AT} 0 0" size="0.024"
                  rgba="{_ARM_RGBA}" mass="0.2"/>
            <body name="forearm_link" pos="{_FOREARM_ROLL_AT} 0 0" gravcomp="1">
              <joint name="forearm_roll" axis="1 0 0" range="{rng('forearm_roll')}"/>
              <geom name="forearm_b" type="capsule" fromto="0 0 0 {_FOREARM - _FOREARM_ROLL_AT} 0 0"
                    size="0.022" rgba="{_ARM_RGBA}" mass="0.2"/>
              <body name="wrist" pos="{_FOREARM - _FOREARM_ROLL_AT} 0 0" gravcomp="1">
                <joint name="wrist_pitch" axis="0 1 0" range="{rng('wrist_pitch')}"/>
                <geom name="wrist" type="sphere" size="0.026" rgba="{_JOINT_RGBA}" mass="0.1"/>
                <geom name="wrist_link" type="cylinder" size="0.018 {_WRIST_ROLL_DROP / 2}"
                      pos="0 0 {-_WRIST_ROLL_DROP / 2}" rgba="{_ARM_RGBA}" mass="0.05"/>
                <body name="hand" pos="0 0 {-_WRIST_ROLL_DROP}" gravcomp="1">
                  <joint name="wrist_roll" axis="0 0 1" range="{rng('wrist_roll')}"/>
                  <geom name="palm" type="box" size="0.02 0.07 {_PALM_DROP / 2}"
                        pos="0 0 {-_PALM_DROP / 2}" rgba="{_GRIPPER_RGBA}" mass="0.1"/>
                  <camera name="{WRIST_CAMERA_NAME}" mode="fixed" pos="-0.045 0 -0.01"
                          xyaxes="0 -1 0 0.94 0 0.34" fovy="75"/>
                  <site name="{TOOL_TIP_SITE}" pos="0 0 {-(_PALM_DROP + TIP_DROP)}" size="0.005"/>
                  <body name="finger_left" pos="0 {fx} {finger_z}" gravcomp="1">
                    <joint name="finger_left" class="finger" axis="0 1 0" range="0 {FINGER_OPEN}"/>
                    <geom name="finger_left" class="finger"/>
                  </body>
                  <body name="finger_right" pos="0 {-fx} {finger_z}" gravcomp="1">
                    <joint name="finger_right" class="finger" axis="0 -1 0" range="0 {FINGER_OPEN}"/>
                    <geom name="finger_right" class="finger"/>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>{cubes}
  </worldbody>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
  </contact>
  <actuator>
    <position name="base_yaw" joint="base_yaw" ctrlrange="{rng('base_yaw')}"/>
    <position name="shoulder_pitch" joint="shoulder_pitch" ctrlrange="{rng('shoulder_pitch')}"/>
    <position name="elbow_pitch" joint="elbow_pitch" ctrlrange="{rng('elbow_pitch')}"/>
    <position name="forearm_roll" joint="forearm_roll" ctrlrange="{rng('forearm_roll')}"/>
    <position name="wrist_pitch" joint="wrist_pitch" ctrlrange="{rng('wrist_pitch')}"/>
    <position name="wrist_roll" joint="wrist_roll" ctrlrange="{rng('wrist_roll')}"/>
    <position name="finger_left" joint="finger_left" class="finger"/>
    <position name="finger_right" joint="finger_right" class="finger"/>
  </actuator>
</mujoco>
"""
