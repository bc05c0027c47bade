"""The tabletop arm scene, generated as an MJCF string (no data file to install).

Scene (world frame: metres, z up, table top at z = 0, arm base at the origin, workspace in +x):

* a 4-joint arm written for this package: ``base_yaw`` (about z), ``shoulder_pitch``,
  ``elbow_pitch`` and ``wrist_pitch`` (all about the yawed y axis; positive pitch turns the next
  link downwards). With ``shoulder + elbow + wrist = 0`` the tool points straight down.
  The tool is a vertical capsule ("pusher"); the site ``tool_tip`` is its lowest point.
* one position actuator per joint (``kp``/``kv`` below), mirroring a ros2_control forward position
  controller; links are gravity-compensated so a held target is held without sag.
* three free cubes ``cube_red``, ``cube_green``, ``cube_blue`` (edge ``2 * CUBE_HALF``),
* optionally a flat yellow goal disc on a mocap body ``goal`` (visual only, no contacts),
* a fixed camera ``front`` in front of and to the right of the arm, looking at the workspace.

Rendering detail is reduced (12 slices per round geom, no shadows, no multisampling) for fast
headless software rendering (EGL/llvmpipe); at 64 px this is invisible.

Collision groups: the arm collides with the cubes only (not with the table or itself); cubes collide
with the table and with each other.
"""

from __future__ import annotations

import math

JOINT_NAMES: tuple[str, ...] = ("base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch")
"""Arm joint names, in control-vector order."""

JOINT_LIMITS: tuple[tuple[float, float], ...] = (
    (-2.0, 2.0),
    (-1.9, 0.6),
    (-0.2, 2.6),
    (-2.4, 1.2),
)
"""Lower/upper position limit of each joint in radians (same order as ``JOINT_NAMES``)."""

HOME_QPOS: tuple[float, ...] = (0.0, -1.66, 2.4, -0.74)
"""Joint positions at the start of every episode: tool vertical, tip retracted at (0.16, 0, 0.2)."""

CUBE_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.1),
    "blue": (0.1, 0.2, 0.95),
}
"""Cube colour name -> RGB in [0, 1]. The body of each cube is named ``cube_<colour>``."""

CUBE_HALF = 0.03
"""Half edge length of the cubes (m)."""

TOOL_RADIUS = 0.014
"""Radius of the pusher capsule (m)."""

GOAL_RADIUS = 0.04
"""Radius of the goal disc (m); equal to the push success threshold."""

CAMERA_NAME = "front"
TOOL_TIP_SITE = "tool_tip"
GOAL_BODY = "goal"

CAMERA_EYE = (0.8, -0.45, 0.8)
CAMERA_TARGET = (0.2, 0.0, 0.13)
CAMERA_FOVY = 48.0
"""Fixed camera: position, the point it looks at (image centre) and vertical field of view."""

PHYSICS_TIMESTEP = 0.01
"""MuJoCo integration step (s); a control step of 0.1 s runs 10 substeps."""

_SHOULDER_HEIGHT = 0.2
_UPPER_ARM = 0.28
_FOREARM = 0.25
_TOOL_LENGTH = 0.11

_ARM_RGBA = "0.85 0.85 0.88 1"
_JOINT_RGBA = "0.25 0.25 0.3 1"
_TOOL_RGBA = "0.15 0.15 0.15 1"
_GOAL_RGBA = "1.0 0.85 0.0 1"


def _camera_xyaxes(eye: tuple[float, ...], target: tuple[float, ...]) -> str:
    """MJCF ``xyaxes`` of a camera at ``eye`` looking at ``target`` with world z up in the image."""
    forward = [t - e for t, e in zip(target, eye)]
    norm = math.sqrt(sum(f * f for f in forward))
    fx, fy, fz = (f / norm for f in forward)
    right = (fy, -fx, 0.0)  # forward x world-z, horizontal
    rnorm = math.hypot(right[0], right[1])
    rx, ry = right[0] / rnorm, right[1] / rnorm
    # up = right x forward
    ux, uy, uz = ry * fz, -rx * fz, rx * fy - ry * fx
    return " ".join(f"{v:.6f}" for v in (rx, ry, 0.0, ux, uy, uz))


def cube_body_name(colour: str) -> str:
    """MuJoCo body (and free joint) name of the cube of ``colour``."""
    return f"cube_{colour}"


def _cube_xml(colour: str, rgb: tuple[float, float, float], index: int) -> str:
    name = cube_body_name(colour)
    r, g, b = rgb
    # Parked off to the side; env.reset() places every cube before the first step.
    return f"""
    <body name="{name}" pos="{-0.3 - 0.1 * index} 0.5 {CUBE_HALF}">
      <freejoint name="{name}"/>
      <geom name="{name}" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.1"
            rgba="{r} {g} {b} 1" contype="1" conaffinity="3" friction="0.6 0.005 0.0001"/>
    </body>"""


def build_scene_xml(*, with_goal: bool, offscreen_size: int = 256) -> str:
    """Return the MJCF of the scene.

    Args:
        with_goal: add the goal disc (the push task shows it; the reach task does not).
        offscreen_size: width and height of MuJoCo's offscreen framebuffer; must be at least the
            rendered image size.
    """
    cubes = "".join(_cube_xml(c, rgb, i) for i, (c, rgb) in enumerate(CUBE_COLOURS.items()))
    goal = (
        f"""
    <body name="{GOAL_BODY}" mocap="true" pos="0.3 0 0">
      <geom name="{GOAL_BODY}" type="cylinder" size="{GOAL_RADIUS} 0.001" pos="0 0 0.001"
            rgba="{_GOAL_RGBA}" contype="0" conaffinity="0"/>
    </body>"""
        if with_goal
        else ""
    )
    (l1, u1), (l2, u2), (l3, u3), (l4, u4) = JOINT_LIMITS
    tool_half = _TOOL_LENGTH / 2
    return f"""<mujoco model="ceed_tabletop_arm">
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
    <position kp="60" kv="4" forcerange="-40 40"/>
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
      <body name="turret" pos="0 0 0.08" gravcomp="1">
        <joint name="base_yaw" axis="0 0 1" range="{l1} {u1}"/>
        <geom name="turret" type="cylinder" size="0.045 0.06" pos="0 0 0.06" rgba="{_ARM_RGBA}"
              mass="1.0"/>
        <body name="upper_arm" pos="0 0 {_SHOULDER_HEIGHT - 0.08}" gravcomp="1">
          <joint name="shoulder_pitch" axis="0 1 0" range="{l2} {u2}"/>
          <geom name="shoulder" type="sphere" size="0.04" rgba="{_JOINT_RGBA}" mass="0.3"/>
          <geom name="upper_arm" type="capsule" fromto="0 0 0 {_UPPER_ARM} 0 0" size="0.028"
                rgba="{_ARM_RGBA}" mass="0.6"/>
          <body name="forearm" pos="{_UPPER_ARM} 0 0" gravcomp="1">
            <joint name="elbow_pitch" axis="0 1 0" range="{l3} {u3}"/>
            <geom name="elbow" type="sphere" size="0.034" rgba="{_JOINT_RGBA}" mass="0.2"/>
            <geom name="forearm" type="capsule" fromto="0 0 0 {_FOREARM} 0 0" size="0.024"
                  rgba="{_ARM_RGBA}" mass="0.4"/>
            <body name="tool" pos="{_FOREARM} 0 0" gravcomp="1">
              <joint name="wrist_pitch" axis="0 1 0" range="{l4} {u4}"/>
              <geom name="wrist" type="sphere" size="0.028" rgba="{_JOINT_RGBA}" mass="0.1"/>
              <geom name="pusher" type="capsule" size="{TOOL_RADIUS} {tool_half - TOOL_RADIUS}"
                    pos="0 0 {-tool_half}" rgba="{_TOOL_RGBA}" mass="0.1"/>
              <site name="{TOOL_TIP_SITE}" pos="0 0 {-_TOOL_LENGTH}" size="0.005"/>
            </body>
          </body>
        </body>
      </body>
    </body>{cubes}{goal}
  </worldbody>
  <actuator>
    <position name="base_yaw" joint="base_yaw" ctrlrange="{l1} {u1}"/>
    <position name="shoulder_pitch" joint="shoulder_pitch" ctrlrange="{l2} {u2}"/>
    <position name="elbow_pitch" joint="elbow_pitch" ctrlrange="{l3} {u3}"/>
    <position name="wrist_pitch" joint="wrist_pitch" ctrlrange="{l4} {u4}"/>
  </actuator>
</mujoco>
"""
