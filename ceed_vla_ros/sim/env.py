"""Language-conditioned tabletop tasks for the 4-joint arm of :mod:`ceed_vla_ros.sim.mjcf`.

Tasks (``task=``):

* ``"reach"`` - instruction ``"reach the <colour> cube"``. Success: the tool tip (lowest point of
  the pusher) is within ``reach_threshold`` (default 0.03 m) of the centre of the named cube's
  top face (cube centre + ``CUBE_HALF`` along world z).
* ``"push"`` - instruction ``"push the <colour> cube to the goal"``. A yellow goal disc is placed
  at a random position per seed, 0.10-0.18 m from the named cube in a random direction, such that
  the pusher's approach point behind the cube and the goal are reachable and the straight push
  corridor is clear of the other cubes. Success: the horizontal distance between the named cube's
  centre and the goal centre is at most ``push_threshold`` (default 0.04 m = the disc radius).
* ``"reach_moving"`` (dynamic; not in :data:`TASKS`, see :data:`DYNAMIC_TASKS`) - the reach task with
  the same instruction and success test, but the named cube keeps moving: from a random time
  ``U(0.1, 0.6)`` s after the reset it slides back and forth along a straight segment of
  ``U(0.12, 0.22)`` m in a random direction at a random speed ``U(0.05, 0.12)`` m/s until the episode
  ends (waiting for it to stop does not help). The segment stays in the workspace and at least
  0.1 m from the other cubes. The slide is kinematic (the cube's pose is
  set every physics step: contacts do not deflect it), a function of simulated time only, so it is
  the same for every policy and control rate. Reaction time matters: a chunk decoded from an old
  frame aims where the cube was.

* ``"pick"`` (robot ``gripper_arm`` only, see :data:`GRIPPER_TASKS`) - instruction ``"pick up the
  <colour> cube"``. Success: the named cube's bottom has been at least ``PICK_LIFT`` (0.05 m) above
  the table for ``PICK_HOLD_S`` (0.5 s) without a break (checked every physics step), while the
  other cubes stay on the table (bottom below 0.01 m).

Robots (``robot=``, :mod:`ceed_vla_ros.sim.robots`): ``arm`` (default; 4 joints, no gripper: reach,
push, reach_moving) and ``gripper_arm`` (6 joints + a parallel gripper: pick, reach). Everything
below that says "joints" means the robot's control vector ``joint_names``: for ``gripper_arm`` the
six arm joints (rad) and last the gripper (finger position in m, 0 closed .. 0.055 open).

Layout: the three cubes (6 cm, axis-aligned) are placed at random non-overlapping positions
(centres >= 0.11 m apart) at 0.20-0.42 m from the arm base within +-0.95 rad of the +x axis;
the arm starts every episode at ``HOME_QPOS`` (tool retracted above the base).

Control (mirrors a ros2_control forward position controller): the action is an ABSOLUTE joint
position target vector of shape ``(n,)`` in ``joint_names`` order (n = 4 for ``arm``, 7 for
``gripper_arm``). :meth:`TabletopArmEnv.step`
first limits the change relative to the previously applied target to ``+-max_joint_step`` rad per
joint (the velocity limit; the previous target at reset is the home pose), then clips to the joint
limits (the gripper entry: its range, no rate limit), applies it to the position actuators and
integrates ``dt = 0.1`` s of physics (10 substeps of 0.01 s).
The applied target is reported in ``info["joint_target"]``.

Real-time control (the ``sim_arm`` ROS node): instead of :meth:`~TabletopArmEnv.step`,
:meth:`~TabletopArmEnv.set_joint_command` applies a target clipped to the joint limits only (no
velocity limit: the arm driver in front of a real position controller limits the rate),
:meth:`~TabletopArmEnv.advance` integrates any span of time in whole physics steps (a fractional
remainder is carried to the next call) and :meth:`~TabletopArmEnv.render_current` renders the state
as it is now. Episodes driven this way have no horizon and never end by themselves.

Observation (the only thing a policy may use), see :class:`Observation`:
``{"image": (H, W, 3) uint8 RGB, "joint_positions": (n,) float64, "instruction": str}`` (the
``front`` camera; the gripper arm's ``wrist`` camera renders through :meth:`TabletopArmEnv.render_camera`).

Privileged state (object poses, goal, tool tip, the named cube's pixel position, ...) is returned
separately as ``info`` by :meth:`~TabletopArmEnv.step` and by :meth:`~TabletopArmEnv.privileged`;
it is meant for scripted experts, evaluation and auxiliary training targets, NEVER as a policy
input.

Determinism: a given ``seed`` always yields the same layout, colour, goal and (on the same machine
and MuJoCo build) bit-identical images and states for the same action sequence.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, TypedDict

import mujoco
import numpy as np

from ceed_vla_ros.sim.mjcf import (
    CAMERA_NAME,
    CUBE_COLOURS,
    CUBE_HALF,
    GOAL_BODY,
    GOAL_RADIUS,
    PHYSICS_TIMESTEP,
    TOOL_TIP_SITE,
    cube_body_name,
)
from ceed_vla_ros.sim.robots import ARM, SimRobot, get_robot

TASKS: tuple[str, ...] = ("reach", "push")
"""The static tasks (the shipped policies were trained on these)."""
DYNAMIC_TASKS: tuple[str, ...] = ("reach_moving",)
"""Tasks whose target moves on its own; :data:`ALL_TASKS` = both."""
GRIPPER_TASKS: tuple[str, ...] = ("pick",)
"""Tasks that need a gripper (robot ``gripper_arm``)."""
ALL_TASKS: tuple[str, ...] = TASKS + DYNAMIC_TASKS + GRIPPER_TASKS
DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "reach": "reach the {colour} cube",
    "push": "push the {colour} cube to the goal",
}
"""Instruction per static task of the 4-joint arm (the shipped tokenizers' vocabulary);
``reach_moving`` uses reach's."""
PICK_INSTRUCTION = "pick up the {colour} cube"
"""Instruction of the pick task (not in ``DEFAULT_INSTRUCTIONS``: the arm's tokenizers stay as shipped)."""
DEFAULT_HORIZONS: dict[str, int] = {"reach": 40, "push": 100, "reach_moving": 50, "pick": 60}
PICK_LIFT = 0.05
"""Pick success: the named cube's bottom at least this high above the table (m) ..."""
PICK_HOLD_S = 0.5
"""... continuously for this long (s), while the other cubes stay on the table (bottom below 1 cm)."""
COLOURS: tuple[str, ...] = tuple(CUBE_COLOURS)

CONTROL_DT = 0.1
"""Seconds simulated by one :meth:`TabletopArmEnv.step` (one policy/control step)."""

# Cube placement: polar coordinates around the arm base (the reachable workspace on the table).
_CUBE_RADIUS_RANGE = (0.2, 0.42)
_CUBE_ANGLE_LIMIT = 0.95  # rad either side of +x
_MIN_CUBE_SPACING = 0.11  # centre-to-centre, > cube diagonal so cubes never overlap
# Goal placement for the push task, relative to the named cube.
_GOAL_DISTANCE_RANGE = (0.1, 0.18)
_GOAL_RADIUS_RANGE = (0.18, 0.44)
_PUSH_CLEARANCE = 0.1  # other cubes keep this far from the push corridor (start - approach .. goal)
_PUSH_APPROACH = 0.08  # the pusher starts this far behind the cube centre
# Back-and-forth slide of the named cube in reach_moving.
_SLIDE_START_RANGE = (0.1, 0.6)  # s after reset
_SLIDE_SPEED_RANGE = (0.05, 0.12)  # m/s
_SLIDE_LENGTH_RANGE = (0.12, 0.22)  # m
_SLIDE_CLEARANCE = 0.1  # other cubes keep this far from the slide path


class Slide(NamedTuple):
    """Back-and-forth slide of the named cube along a segment of ``length`` m from ``start`` (xy).

    From ``t0`` on the cube moves at ``speed`` m/s along ``direction`` to the far end, turns, comes
    back, and so on until the episode ends (a triangle wave of the distance travelled)."""

    start: np.ndarray
    direction: np.ndarray
    speed: float
    length: float
    t0: float

    def _phase(self, t: float) -> tuple[float, float]:
        travelled = self.speed * max(0.0, t - self.t0)
        period = 2.0 * self.length
        x = travelled % period
        return (x, 1.0) if x < self.length else (period - x, -1.0)

    def position(self, t: float) -> np.ndarray:
        """Cube centre (xy) at simulated time ``t``."""
        return self.start + self.direction * self._phase(t)[0]

    def velocity_at(self, t: float) -> np.ndarray:
        if t < self.t0:
            return np.zeros(2)
        return self.direction * (self.speed * self._phase(t)[1])


class Observation(TypedDict):
    """What a policy sees: camera image, measured joint positions and the instruction."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, row 0 at the top
    joint_positions: np.ndarray  # (n,) float64, the robot's joint_names order
    instruction: str


class StepResult(NamedTuple):
    """Result of :meth:`TabletopArmEnv.step`; unpacks as ``obs, success, done, info``.

    ``done`` is true on success (when ``terminate_on_success``) or when the horizon is reached.
    ``info`` is privileged state (see :meth:`TabletopArmEnv.privileged`): not for policies.
    """

    obs: Observation
    success: bool
    done: bool
    info: dict[str, Any]


def _segment_point_distance(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - p))


class TabletopArmEnv:
    """Tabletop arm with three coloured cubes; language-conditioned reach and push tasks.

    Args:
        task: ``"reach"`` or ``"push"``.
        image_size: width and height of the rendered square RGB image.
        seed: seed of the episode stream; ``reset(seed=...)`` overrides it per episode.
        horizon: steps per episode (default: 40 for reach = 4 s, 100 for push = 10 s).
        instruction_template: format string with a ``{colour}`` field (default per task in
            ``DEFAULT_INSTRUCTIONS``).
        max_joint_step: largest change of the joint target per step, rad (velocity limit:
            ``max_joint_step / dt`` rad/s).
        terminate_on_success: end the episode at the first successful step.
        reach_threshold: reach success distance (m), see module docstring.
        push_threshold: push success distance (m), see module docstring.
    """

    def __init__(
        self,
        task: str = "reach",
        image_size: int = 64,
        seed: int | None = None,
        *,
        horizon: int | None = None,
        instruction_template: str | None = None,
        max_joint_step: float = 0.2,
        terminate_on_success: bool = True,
        reach_threshold: float = 0.03,
        push_threshold: float = GOAL_RADIUS,
        robot: str | SimRobot = ARM,
    ) -> None:
        self.robot = get_robot(robot) if isinstance(robot, str) else robot
        if task not in ALL_TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {ALL_TASKS}")
        if task not in self.robot.tasks:
            raise ValueError(f"robot {self.robot.name} ({self.robot.description}) has no task {task!r}; "
                             f"choose from {', '.join(self.robot.tasks)}")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        self.task = task
        self.image_size = int(image_size)
        self.horizon = int(horizon if horizon is not None else DEFAULT_HORIZONS[task])
        self.instruction_template = instruction_template or (
            PICK_INSTRUCTION if task == "pick" else DEFAULT_INSTRUCTIONS["reach" if task == "reach_moving" else task]
        )
        self.max_joint_step = float(max_joint_step)
        self.terminate_on_success = bool(terminate_on_success)
        self.reach_threshold = float(reach_threshold)
        self.push_threshold = float(push_threshold)

        self.dt = CONTROL_DT
        robot = self.robot
        self.joint_names: tuple[str, ...] = robot.joint_names
        self.joint_limits = np.array(robot.joint_limits, dtype=np.float64)  # (n, 2): lower, upper
        self.home_qpos = np.array(robot.home_qpos, dtype=np.float64)
        # per-step velocity limit: max_joint_step on the arm joints; a gripper moves its full range
        self._max_step = np.full(len(self.joint_names), self.max_joint_step)
        rest = self.joint_limits[robot.arm_joints :]
        self._max_step[robot.arm_joints :] = rest[:, 1] - rest[:, 0]
        self.n_substeps = int(round(CONTROL_DT / PHYSICS_TIMESTEP))

        xml = robot.build_xml(task == "push", max(256, self.image_size))
        self.model = mujoco.MjModel.from_xml_string(xml)
        """Privileged: the MuJoCo model (for experts and tools, not policies)."""
        self.data = mujoco.MjData(self.model)
        """Privileged: the MuJoCo state (for experts and tools, not policies)."""
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(
            self.model, self.image_size, self.image_size
        )

        self._arm_qpos_adr = np.array([self.model.joint(n).qposadr[0] for n in robot.measured_joints])
        self._arm_dof_adr = np.array([self.model.joint(n).dofadr[0] for n in robot.measured_joints])
        # control entry i -> its actuators (a gripper entry drives both fingers)
        self._ctrl_entry = np.zeros(self.model.nu, dtype=np.int64)
        for i, names in enumerate(robot.actuators):
            for name in names:
                self._ctrl_entry[self.model.actuator(name).id] = i
        # finger joints follow the gripper entry at reset (both fingers at the same position)
        self._finger_qpos_adr = np.array(
            [self.model.joint(n).qposadr[0] for n in robot.actuators[-1]] if robot.has_gripper else [], dtype=np.int64
        )
        self._cube_qpos_adr = {
            c: int(self.model.joint(cube_body_name(c)).qposadr[0]) for c in COLOURS
        }
        self._cube_body_id = {c: int(self.model.body(cube_body_name(c)).id) for c in COLOURS}
        self._tip_site_id = int(self.model.site(TOOL_TIP_SITE).id)
        self._camera_id = int(self.model.camera(CAMERA_NAME).id)
        self._goal_mocap_id = (
            int(self.model.body(GOAL_BODY).mocapid[0]) if task == "push" else None
        )

        self._rng = np.random.default_rng(seed)
        self.colour: str = COLOURS[0]
        self.instruction: str = ""
        self.goal_position: np.ndarray | None = None
        self.slide: Slide | None = None
        """Privileged: the named cube's slide in ``reach_moving`` (None otherwise)."""
        self.step_count = 0
        self._joint_target = self.home_qpos.copy()
        self._lifted_since: float | None = None  # pick: simulated time the named cube was first lifted
        self._image = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
        self._needs_reset = True
        self._unsimulated_s = 0.0  # advance(): time requested but not yet a whole physics step

    # ------------------------------------------------------------------ episode control
    def reset(self, seed: int | None = None, colour: str | None = None) -> Observation:
        """Start an episode: random cube layout (and goal), named colour, home arm pose.

        Args:
            seed: reseed the episode stream; the same seed gives the same episode. ``None``
                continues the stream started by the constructor seed (or the last reset seed).
            colour: the named cube (``"red"``, ``"green"`` or ``"blue"``); random if ``None``.
        """
        if colour is not None and colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; choose from {COLOURS}")
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng = self._rng

        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._arm_qpos_adr] = self.home_qpos
        if self.robot.has_gripper:
            self.data.qpos[self._finger_qpos_adr] = self.home_qpos[-1]
        self._joint_target = self.home_qpos.copy()
        self._apply_ctrl()
        self._lifted_since = None

        while True:
            cubes = self._sample_cube_layout(rng)
            self.colour = colour if colour is not None else COLOURS[int(rng.integers(len(COLOURS)))]
            if self.task == "reach_moving":
                self.goal_position = None
                self.slide = self._sample_slide(rng, cubes)
                if self.slide is not None:
                    break
                continue
            self.slide = None
            if self.task != "push":
                self.goal_position = None
                break
            goal = self._sample_goal(rng, cubes)
            if goal is not None:
                self.goal_position = np.array([goal[0], goal[1], 0.0])
                break

        for c, xy in cubes.items():
            adr = self._cube_qpos_adr[c]
            self.data.qpos[adr : adr + 3] = (xy[0], xy[1], CUBE_HALF)
            self.data.qpos[adr + 3 : adr + 7] = (1.0, 0.0, 0.0, 0.0)
        if self._goal_mocap_id is not None:
            self.data.mocap_pos[self._goal_mocap_id] = self.goal_position
        mujoco.mj_forward(self.model, self.data)

        self.instruction = self.instruction_template.format(colour=self.colour)
        self.step_count = 0
        self._needs_reset = False
        self._unsimulated_s = 0.0
        self._image = self._render_image()
        return self._observation()

    def step(self, joint_target: np.ndarray) -> StepResult:
        """Apply one absolute joint-position target and simulate ``dt`` seconds.

        The target is limited to ``+-max_joint_step`` around the previous applied target, then
        clipped to the joint limits (see module docstring).
        """
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (episode finished or never started)")
        target = np.asarray(joint_target, dtype=np.float64).reshape(-1)
        self._check_target(target, joint_target)
        self._joint_target = self.clip_joint_target(target, self._joint_target)
        self._apply_ctrl()
        self._simulate(self.n_substeps)
        self.step_count += 1
        self._image = self._render_image()

        success = self.success()
        done = (success and self.terminate_on_success) or self.step_count >= self.horizon
        self._needs_reset = done
        return StepResult(self._observation(), success, done, self.privileged())

    def clip_joint_target(self, target: np.ndarray, previous_target: np.ndarray) -> np.ndarray:
        """Velocity-limit ``target`` around ``previous_target``, then clip to the joint limits."""
        step = np.clip(target - previous_target, -self._max_step, self._max_step)
        return np.clip(previous_target + step, self.joint_limits[:, 0], self.joint_limits[:, 1])

    # ------------------------------------------------------------------ real-time control
    def set_joint_command(self, joint_target: np.ndarray) -> np.ndarray:
        """Apply an absolute joint-position target now, clipped to the joint limits only.

        Unlike :meth:`step` there is no ``max_joint_step`` limit and no physics is simulated:
        the position actuators track the new target from the next :meth:`advance` on.
        Returns the applied target (also :attr:`joint_target`).
        """
        self._require_episode()
        target = np.asarray(joint_target, dtype=np.float64).reshape(-1)
        self._check_target(target, joint_target)
        self._joint_target = np.clip(target, self.joint_limits[:, 0], self.joint_limits[:, 1])
        self._apply_ctrl()
        return self.joint_target

    def advance(self, seconds: float) -> int:
        """Simulate ``seconds`` of physics in whole ``PHYSICS_TIMESTEP`` steps; return the count.

        The part of ``seconds`` that does not fill a whole step is carried over to the next
        call, so repeated calls with the elapsed wall time keep the simulation in real time.
        The image returned by :meth:`render` is not updated (see :meth:`render_current`).
        """
        self._require_episode()
        if not (math.isfinite(seconds) and seconds >= 0.0):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        self._unsimulated_s += seconds
        n_steps = int(self._unsimulated_s / PHYSICS_TIMESTEP + 1e-9)
        self._unsimulated_s = max(0.0, self._unsimulated_s - n_steps * PHYSICS_TIMESTEP)
        if n_steps:
            self._simulate(n_steps)
        return n_steps

    def render_current(self) -> np.ndarray:
        """Render the current state; :meth:`render` returns this image afterwards (a copy)."""
        self._image = self._render_image()
        return self._image.copy()

    @property
    def sim_time(self) -> float:
        """Simulated seconds since the last :meth:`reset`."""
        return float(self.data.time)

    def success(self) -> bool:
        """Whether the current state satisfies the task's success test."""
        cube = self.cube_position(self.colour)
        if self.task == "pick":
            return self._lifted_since is not None and self.sim_time - self._lifted_since >= PICK_HOLD_S - 1e-9
        if self.task in ("reach", "reach_moving"):
            top = cube + np.array([0.0, 0.0, CUBE_HALF])
            return bool(np.linalg.norm(self.tool_tip_position() - top) <= self.reach_threshold)
        assert self.goal_position is not None
        return bool(np.linalg.norm(cube[:2] - self.goal_position[:2]) <= self.push_threshold)

    def render(self) -> np.ndarray:
        """Camera image of the current state, ``(H, W, 3)`` uint8 RGB (a copy)."""
        return self._image.copy()

    def render_camera(self, camera: str) -> np.ndarray:
        """Render the current state from the named MuJoCo camera (``front``, or ``wrist`` on the
        gripper arm) at ``image_size``; the observation image is not changed."""
        if self._renderer is None:
            raise RuntimeError("environment is closed")
        try:
            camera_id = int(self.model.camera(camera).id)
        except KeyError:
            raise ValueError(f"robot {self.robot.name} has no camera {camera!r}") from None
        self._renderer.update_scene(self.data, camera=camera_id)
        return self._renderer.render()

    def close(self) -> None:
        """Release the renderer (GL context). The environment cannot render afterwards."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> TabletopArmEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state accessors
    @property
    def joint_positions(self) -> np.ndarray:
        """Measured joint positions, ``(n,)`` in ``joint_names`` order (a gripper: finger position, m)."""
        return self.data.qpos[self._arm_qpos_adr].copy()

    @property
    def joint_velocities(self) -> np.ndarray:
        """Measured joint velocities, ``(n,)``."""
        return self.data.qvel[self._arm_dof_adr].copy()

    @property
    def joint_target(self) -> np.ndarray:
        """The last applied (clipped) joint target, ``(n,)``; the home pose after reset."""
        return self._joint_target.copy()

    def cube_position(self, colour: str) -> np.ndarray:
        """Privileged: world position of the centre of the ``colour`` cube, ``(3,)``."""
        return self.data.xpos[self._cube_body_id[colour]].copy()

    def tool_tip_position(self) -> np.ndarray:
        """Privileged: world position of the tool tip site, ``(3,)``."""
        return self.data.site_xpos[self._tip_site_id].copy()

    def project_to_pixel(self, point: np.ndarray) -> np.ndarray:
        """Project a world point into the camera image: ``(u, v)`` = (column, row) in pixels.

        Continuous coordinates: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, so the
        pixel containing the point is ``(int(v), int(u))``. Row 0 is the top of the image.
        """
        cam_pos = self.data.cam_xpos[self._camera_id]
        cam_rot = self.data.cam_xmat[self._camera_id].reshape(3, 3)  # columns: camera x, y, z
        x, y, z = cam_rot.T @ (np.asarray(point, dtype=np.float64) - cam_pos)
        fovy = math.radians(self.model.cam_fovy[self._camera_id])
        focal = 0.5 * self.image_size / math.tan(fovy / 2)
        half = 0.5 * self.image_size
        return np.array([half + focal * x / -z, half - focal * y / -z])

    def privileged(self) -> dict[str, Any]:
        """Privileged state (NOT a policy input): for experts, evaluation and auxiliary losses.

        Keys: ``task``, ``colour`` (named cube), ``step``, ``success``, ``joint_target`` (last
        applied target), ``tool_tip_position`` (3,), ``cube_positions`` {colour: (3,)},
        ``cube_quaternions`` {colour: (4,) wxyz}, ``target_position`` (named cube centre, (3,)),
        ``target_pixel`` (its ``(u, v)`` image position, see :meth:`project_to_pixel`),
        ``goal_position`` ((3,) for push, ``None`` for reach), ``target_velocity`` (the named cube's
        xy velocity (2,) now: non-zero only while it slides in ``reach_moving``).
        """
        cube_positions = {c: self.cube_position(c) for c in COLOURS}
        target = cube_positions[self.colour]
        return {
            "task": self.task,
            "colour": self.colour,
            "step": self.step_count,
            "success": self.success(),
            "joint_target": self.joint_target,
            "tool_tip_position": self.tool_tip_position(),
            "cube_positions": cube_positions,
            "cube_quaternions": {
                c: self.data.xquat[self._cube_body_id[c]].copy() for c in COLOURS
            },
            "target_position": target,
            "target_pixel": self.project_to_pixel(target),
            "goal_position": None if self.goal_position is None else self.goal_position.copy(),
            "target_velocity": np.zeros(2) if self.slide is None else self.slide.velocity_at(self.sim_time),
        }

    def config(self) -> dict[str, Any]:
        """Constructor settings plus fixed constants, JSON-serialisable (recorded in datasets)."""
        return {
            "task": self.task,
            "image_size": self.image_size,
            "horizon": self.horizon,
            "instruction_template": self.instruction_template,
            "max_joint_step": self.max_joint_step,
            "terminate_on_success": self.terminate_on_success,
            "reach_threshold": self.reach_threshold,
            "push_threshold": self.push_threshold,
            "dt": self.dt,
            "physics_timestep": PHYSICS_TIMESTEP,
            "joint_names": list(self.joint_names),
            "joint_limits": self.joint_limits.tolist(),
            "home_qpos": self.home_qpos.tolist(),
            "robot": self.robot.name,
        }

    # ------------------------------------------------------------------ internals
    def _simulate(self, n_steps: int) -> None:
        """``n_steps`` physics steps; with a slide, the named cube's pose is set before each step."""
        if self.task == "pick":
            for _ in range(n_steps):
                mujoco.mj_step(self.model, self.data)
                self._update_lift()
            return
        if self.slide is None:
            mujoco.mj_step(self.model, self.data, nstep=n_steps)
            return
        for _ in range(n_steps):
            self._place_sliding_cube()
            mujoco.mj_step(self.model, self.data)
        self._place_sliding_cube()
        mujoco.mj_forward(self.model, self.data)

    def lifted(self) -> bool:
        """Pick: the named cube's bottom is ``PICK_LIFT`` above the table and every other cube's below 1 cm."""
        heights = {c: float(self.data.xpos[self._cube_body_id[c]][2]) - CUBE_HALF for c in COLOURS}
        others_down = all(h < 0.01 for c, h in heights.items() if c != self.colour)
        return heights[self.colour] >= PICK_LIFT and others_down

    def _update_lift(self) -> None:
        if not self.lifted():
            self._lifted_since = None
        elif self._lifted_since is None:
            self._lifted_since = float(self.data.time)

    def _check_target(self, target: np.ndarray, given: object) -> None:
        if target.shape != (len(self.joint_names),):
            raise ValueError(f"joint_target must have shape ({len(self.joint_names)},) "
                             f"({', '.join(self.joint_names)}), got {np.shape(given)}")
        if not np.all(np.isfinite(target)):
            raise ValueError("joint_target contains non-finite values")

    def _apply_ctrl(self) -> None:
        self.data.ctrl[:] = self._joint_target[self._ctrl_entry]

    def _place_sliding_cube(self) -> None:
        assert self.slide is not None
        t = float(self.data.time)
        xy, velocity = self.slide.position(t), self.slide.velocity_at(t)
        adr = self._cube_qpos_adr[self.colour]
        self.data.qpos[adr : adr + 7] = (xy[0], xy[1], CUBE_HALF, 1.0, 0.0, 0.0, 0.0)
        dof = int(self.model.joint(cube_body_name(self.colour)).dofadr[0])
        self.data.qvel[dof : dof + 6] = (velocity[0], velocity[1], 0.0, 0.0, 0.0, 0.0)

    def _observation(self) -> Observation:
        return Observation(
            image=self._image.copy(),
            joint_positions=self.joint_positions,
            instruction=self.instruction,
        )

    def _require_episode(self) -> None:
        if self._needs_reset:
            raise RuntimeError("call reset() first (episode finished or never started)")

    def _render_image(self) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("environment is closed")
        self._renderer.update_scene(self.data, camera=self._camera_id)
        return self._renderer.render()

    @staticmethod
    def _sample_cube_layout(rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Non-overlapping cube centres (xy) in the reachable annulus in front of the arm."""
        while True:
            radius = rng.uniform(*_CUBE_RADIUS_RANGE, size=len(COLOURS))
            angle = rng.uniform(-_CUBE_ANGLE_LIMIT, _CUBE_ANGLE_LIMIT, size=len(COLOURS))
            xy = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
            gaps = [np.linalg.norm(xy[i] - xy[j]) for i in range(3) for j in range(i + 1, 3)]
            if min(gaps) >= _MIN_CUBE_SPACING:
                return dict(zip(COLOURS, xy))

    def _sample_slide(self, rng: np.random.Generator, cubes: dict[str, np.ndarray]) -> Slide | None:
        """A slide of the named cube that stays in the workspace and clear of the other cubes."""
        start = cubes[self.colour]
        others = [xy for c, xy in cubes.items() if c != self.colour]
        for _ in range(20):
            t0 = rng.uniform(*_SLIDE_START_RANGE)
            speed = rng.uniform(*_SLIDE_SPEED_RANGE)
            length = rng.uniform(*_SLIDE_LENGTH_RANGE)
            heading = rng.uniform(-math.pi, math.pi)
            direction = np.array([math.cos(heading), math.sin(heading)])
            end = start + length * direction
            if not _CUBE_RADIUS_RANGE[0] <= float(np.linalg.norm(end)) <= _CUBE_RADIUS_RANGE[1]:
                continue
            if abs(math.atan2(end[1], end[0])) > _CUBE_ANGLE_LIMIT:
                continue
            if _segment_point_distance(start, end, np.zeros(2)) < _CUBE_RADIUS_RANGE[0] - 0.02:
                continue  # the chord must not pass next to the arm base
            if all(_segment_point_distance(start, end, o) >= _SLIDE_CLEARANCE for o in others):
                return Slide(start.copy(), direction, float(speed), float(length), float(t0))
        return None

    def _sample_goal(
        self, rng: np.random.Generator, cubes: dict[str, np.ndarray]
    ) -> np.ndarray | None:
        """A goal for the named cube whose push corridor is reachable and free of other cubes."""
        start = cubes[self.colour]
        others = [xy for c, xy in cubes.items() if c != self.colour]
        for _ in range(20):
            distance = rng.uniform(*_GOAL_DISTANCE_RANGE)
            heading = rng.uniform(-math.pi, math.pi)
            direction = np.array([math.cos(heading), math.sin(heading)])
            goal = start + distance * direction
            approach = start - _PUSH_APPROACH * direction
            goal_radius, approach_radius = np.linalg.norm(goal), np.linalg.norm(approach)
            if not _GOAL_RADIUS_RANGE[0] <= goal_radius <= _GOAL_RADIUS_RANGE[1]:
                continue
            if abs(math.atan2(goal[1], goal[0])) > _CUBE_ANGLE_LIMIT:
                continue
            if not _GOAL_RADIUS_RANGE[0] - 0.03 <= approach_radius <= _GOAL_RADIUS_RANGE[1]:
                continue
            if all(_segment_point_distance(approach, goal, o) >= _PUSH_CLEARANCE for o in others):
                return goal
        return None
