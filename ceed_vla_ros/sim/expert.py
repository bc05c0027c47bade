"""Scripted experts for :class:`~ceed_vla_ros.sim.env.TabletopArmEnv` (privileged state allowed).

Each expert maps the current measured state to the next ABSOLUTE joint target:

1. pick a Cartesian goal for the tool tip from the privileged state (a fixed rule per task, no
   randomness and no memory: the same state always gives the same action, which keeps the
   demonstrations unimodal for behaviour cloning);
2. move a tip waypoint from the measured tip towards that goal by at most ``cartesian_step`` m;
3. solve damped-least-squares IK (:class:`DlsIk`, Jacobians from ``mujoco.mj_jacSite``) for the
   waypoint with the tool held vertical, seeded from the measured joint positions;
4. bound the joint change to ``joint_step`` rad around the measured joint positions.

Reach: travel at a fixed hover height, then descend in a funnel onto the named cube's top face.
Reach moving (``reach_moving``): the reach rule aimed at the cube's position 0.2 s ahead.
Push: hover to an approach point behind the cube on the cube->goal line, descend to table
height, then push along the (re-computed every step) cube->goal line, correcting sideways drift;
if the pusher loses the cube it lifts and re-approaches.
Pick (``pick``, gripper arm): :class:`PickExpert` plans in Cartesian space too, but solves the IK of
the robot's URDF (:class:`~ceed_vla_ros.kinematics.ArmKinematics`, the arm driver's own IK) for the
tip position AND a fixed orientation (tool straight down, fingers closing along world y: the cubes
are axis-aligned), and commands the gripper.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from ceed_vla_ros.sim.env import Observation, TabletopArmEnv
from ceed_vla_ros.sim.mjcf import CUBE_HALF, JOINT_NAMES, TOOL_RADIUS, TOOL_TIP_SITE

HOVER_HEIGHT = 0.16
"""Tool tip height (m) while travelling above the cubes."""


class DlsIk:
    """Damped-least-squares IK for the tool-tip position plus a vertical tool.

    The four unknowns are the arm joints; the four equations are the tip position (3) and the
    tool pitch ``shoulder + elbow + wrist = tool_pitch`` (0 = tool pointing straight down).
    Uses a private :class:`mujoco.MjData` so the simulation state is never touched.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        joint_limits: np.ndarray,
        damping: float = 0.02,
        iterations: int = 12,
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.joint_limits = np.asarray(joint_limits, dtype=np.float64)
        self.damping = float(damping)
        self.iterations = int(iterations)
        self._qpos_adr = np.array([model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self._dof_adr = np.array([model.joint(n).dofadr[0] for n in JOINT_NAMES])
        self._site_id = int(model.site(TOOL_TIP_SITE).id)
        self._jacp = np.zeros((3, model.nv))
        self._pitch_row = np.array([0.0, 1.0, 1.0, 1.0])

    def tip_position(self, q: np.ndarray) -> np.ndarray:
        """Forward kinematics: tool tip position for joint positions ``q``."""
        self.data.qpos[self._qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self._site_id].copy()

    def solve(
        self, q_seed: np.ndarray, tip_target: np.ndarray, tool_pitch: float = 0.0
    ) -> np.ndarray:
        """Joint positions near ``q_seed`` putting the tool tip at ``tip_target``."""
        q = np.array(q_seed, dtype=np.float64)
        damping_sq = self.damping**2 * np.eye(4)
        for _ in range(self.iterations):
            self.data.qpos[self._qpos_adr] = q
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, None, self._site_id)
            jac = np.vstack([self._jacp[:, self._dof_adr], self._pitch_row])
            error = np.append(
                tip_target - self.data.site_xpos[self._site_id],
                tool_pitch - float(self._pitch_row @ q),
            )
            if np.linalg.norm(error) < 1e-5:
                break
            q = q + jac.T @ np.linalg.solve(jac @ jac.T + damping_sq, error)
            q = np.clip(q, self.joint_limits[:, 0], self.joint_limits[:, 1])
        return q


class Expert:
    """Base class: Cartesian tip goal -> bounded waypoint -> IK -> bounded joint target.

    Args:
        env: the environment (its model, joint limits and velocity limit are used).
        cartesian_step: largest tip waypoint displacement per step (m).
        joint_step: largest joint target change per step around the measured joints (rad);
            at most the env's ``max_joint_step``.
    """

    def __init__(
        self, env: TabletopArmEnv, cartesian_step: float = 0.03, joint_step: float = 0.15
    ) -> None:
        self.ik = DlsIk(env.model, env.joint_limits)
        self.cartesian_step = float(cartesian_step)
        self.joint_step = min(float(joint_step), env.max_joint_step)

    def tip_goal(self, tip: np.ndarray, info: dict[str, Any]) -> tuple[np.ndarray, float]:
        """Task rule: the tip goal (3,) and the largest waypoint step to take towards it."""
        raise NotImplementedError

    def act(self, obs: Observation, info: dict[str, Any]) -> np.ndarray:
        """Next absolute joint target (4,) from the observation and privileged ``info``."""
        q = np.asarray(obs["joint_positions"], dtype=np.float64)
        tip = np.asarray(info["tool_tip_position"], dtype=np.float64)
        goal, max_step = self.tip_goal(tip, info)
        delta = goal - tip
        distance = float(np.linalg.norm(delta))
        waypoint = goal if distance <= max_step else tip + delta * (max_step / distance)
        target = self.ik.solve(q, waypoint)
        return q + np.clip(target - q, -self.joint_step, self.joint_step)


class ReachExpert(Expert):
    """Hover towards the named cube, then descend onto ``top_clearance`` above its top face."""

    top_clearance = 0.012
    funnel_start = 0.02  # horizontal error (m) below which the tip is fully lowered
    funnel_width = 0.1  # horizontal error range (m) over which the tip height blends to hover

    def tip_goal(self, tip: np.ndarray, info: dict[str, Any]) -> tuple[np.ndarray, float]:
        aim = info["target_position"] + np.array([0.0, 0.0, CUBE_HALF + self.top_clearance])
        horizontal = float(np.linalg.norm(aim[:2] - tip[:2]))
        blend = np.clip((horizontal - self.funnel_start) / self.funnel_width, 0.0, 1.0)
        height = aim[2] + blend * (HOVER_HEIGHT - aim[2])
        return np.array([aim[0], aim[1], height]), self.cartesian_step


class MovingReachExpert(ReachExpert):
    """Reach for a sliding cube: aim where it will be ``lead_s`` seconds ahead at its current velocity."""

    lead_s = 0.2

    def tip_goal(self, tip: np.ndarray, info: dict[str, Any]) -> tuple[np.ndarray, float]:
        velocity = np.append(np.asarray(info["target_velocity"], dtype=np.float64), 0.0)
        ahead = dict(info, target_position=info["target_position"] + self.lead_s * velocity)
        return super().tip_goal(tip, ahead)


class PushExpert(Expert):
    """Approach behind the named cube on the cube->goal line, lower, push it onto the goal."""

    push_height = 0.014  # tip height while pushing (tool bottom just above the table)
    approach_gap = 0.035  # extra distance behind the contact point where the descent ends
    contact_offset = CUBE_HALF + TOOL_RADIUS  # tip-to-cube-centre distance at face contact
    push_speed = 0.02  # m per step along the push line
    lateral_gain = 0.8  # fraction of the sideways error removed per push step
    aligned_lateral = 0.018  # |sideways error| (m) allowed to keep pushing
    safe_height = 0.08  # below this, the tip lifts before travelling sideways

    def tip_goal(self, tip: np.ndarray, info: dict[str, Any]) -> tuple[np.ndarray, float]:
        cube = info["target_position"][:2]
        goal = info["goal_position"][:2]
        to_goal = goal - cube
        direction = to_goal / max(float(np.linalg.norm(to_goal)), 1e-9)
        normal = np.array([-direction[1], direction[0]])
        rel = tip[:2] - cube
        along, lateral = float(rel @ direction), float(rel @ normal)

        far_behind = -(self.contact_offset + self.approach_gap + 0.015)
        behind = far_behind <= along <= -(self.contact_offset - 0.02)
        low = tip[2] <= self.push_height + 0.025
        if behind and low and abs(lateral) <= self.aligned_lateral:
            remaining = float(np.linalg.norm(to_goal))
            advance = min(self.push_speed, remaining + 0.005)
            xy = tip[:2] + direction * advance - normal * lateral * self.lateral_gain
            return np.array([xy[0], xy[1], self.push_height]), self.cartesian_step

        approach = cube - direction * (self.contact_offset + self.approach_gap)
        horizontal = float(np.linalg.norm(approach - tip[:2]))
        if horizontal > 0.04 and tip[2] < self.safe_height:
            return np.array([tip[0], tip[1], HOVER_HEIGHT]), self.cartesian_step
        blend = np.clip((horizontal - 0.01) / 0.05, 0.0, 1.0)
        height = self.push_height + blend * (HOVER_HEIGHT - self.push_height)
        return np.array([approach[0], approach[1], height]), self.cartesian_step


class PickExpert:
    """Pick up the named cube with the gripper arm: hover above it with the gripper open, descend
    until the grasp centre is at the cube's centre, close, and lift once the fingers hold the cube.

    A fixed rule of the current state (no memory), as the other experts: the fingers' measured
    position tells closing from holding; a grasp that closed on nothing (fingers past the cube's
    width) opens again and re-approaches. Arm joints as for :class:`Expert` (bounded Cartesian
    waypoint, IK, bounded joint change); the gripper entry is fully open or fully closed.
    """

    hover_height = 0.13  # grasp-centre height while travelling (m)
    lift_height = 0.15  # grasp-centre height the held cube is lifted to
    align_tolerance = 0.01  # horizontal / vertical error (m) at which the gripper closes
    funnel_start = 0.006
    funnel_width = 0.06

    def __init__(self, env: TabletopArmEnv, cartesian_step: float = 0.03, joint_step: float = 0.15) -> None:
        from ceed_vla_ros.kinematics import ArmKinematics
        from ceed_vla_ros.sim.robots import urdf_path

        robot = env.robot
        if not robot.has_gripper:
            raise ValueError(f"the pick expert needs a gripper; robot {robot.name} has none")
        self.arm_joints = robot.arm_joints
        self.kinematics = ArmKinematics.from_file(
            urdf_path(robot), robot.joint_names[: robot.arm_joints], "base_link", "tool_tip", max_iterations=30
        )
        self.rotation = np.eye(3)  # tool down, fingers along world y (the zero pose's orientation)
        self.gripper_open = float(robot.gripper_open)
        self.cartesian_step = float(cartesian_step)
        self.joint_step = min(float(joint_step), env.max_joint_step)

    def grip(self, finger: float, tip: np.ndarray, cube: np.ndarray) -> str:
        """``holding`` (fingers closed on the cube), ``missed`` (closed on nothing) or ``free``."""
        if finger < CUBE_HALF - 0.008:
            return "missed"
        near = float(np.linalg.norm(cube[:2] - tip[:2])) < 0.03 and abs(tip[2] - cube[2]) < 0.03
        return "holding" if near and finger < CUBE_HALF + 0.004 else "free"

    def plan(self, q: np.ndarray, info: dict[str, Any]) -> tuple[np.ndarray, bool]:
        """(grasp-centre goal (3,), gripper closed?) for the current state."""
        tip = np.asarray(info["tool_tip_position"], dtype=np.float64)
        cube = np.asarray(info["target_position"], dtype=np.float64)
        finger = float(q[self.arm_joints])
        state = self.grip(finger, tip, cube)
        if state == "holding":
            return np.array([tip[0], tip[1], self.lift_height]), True
        horizontal = float(np.linalg.norm(cube[:2] - tip[:2]))
        aligned = horizontal < self.align_tolerance and abs(tip[2] - cube[2]) < self.align_tolerance
        if aligned and state == "free":
            return cube.copy(), True
        blend = np.clip((horizontal - self.funnel_start) / self.funnel_width, 0.0, 1.0)
        height = cube[2] + blend * (self.hover_height - cube[2])
        if finger < self.gripper_open - 0.01:  # not open yet: stay clear of the cube's top
            height = max(height, cube[2] + 0.06)
        return np.array([cube[0], cube[1], height]), False

    def act(self, obs: Observation, info: dict[str, Any]) -> np.ndarray:
        """Next absolute target: six arm joints, then the gripper (finger position, m)."""
        q = np.asarray(obs["joint_positions"], dtype=np.float64)
        arm = q[: self.arm_joints]
        tip = np.asarray(info["tool_tip_position"], dtype=np.float64)
        goal, closed = self.plan(q, info)
        delta = goal - tip
        distance = float(np.linalg.norm(delta))
        waypoint = goal if distance <= self.cartesian_step else tip + delta * (self.cartesian_step / distance)
        solved = self.kinematics.solve(waypoint, self.rotation, arm).positions
        target = arm + np.clip(solved - arm, -self.joint_step, self.joint_step)
        return np.append(target, 0.0 if closed else self.gripper_open)


def make_expert(env: TabletopArmEnv) -> Expert | PickExpert:
    """The scripted expert for ``env.task`` (the gripper arm has one for pick only)."""
    if env.task == "pick":
        return PickExpert(env)
    if env.robot.has_gripper:
        raise ValueError(f"no scripted expert for {env.task!r} on robot {env.robot.name}: only pick")
    return {"reach": ReachExpert, "push": PushExpert, "reach_moving": MovingReachExpert}[env.task](env)
