"""``sim_arm``: the MuJoCo tabletop arm of :mod:`ceed_vla_ros.sim` as a ROS 2 node.

The node speaks the interfaces of a real arm run by ros2_control (joint state broadcaster, forward
position controller, joint trajectory controller) plus a camera and an episode interface, so the
rest of the stack cannot tell it from hardware. It is a thin wrapper: physics, rendering, scene
layout and success tests live in :class:`ceed_vla_ros.sim.env.TabletopArmEnv`.

Two robots (``robot``, :mod:`ceed_vla_ros.sim.robots`): ``arm`` (default), the 4-joint arm without a
gripper (joints base_yaw, shoulder_pitch, elbow_pitch, wrist_pitch; tasks reach | push), and
``gripper_arm``, the 6-joint arm with a parallel gripper (joints base_yaw, shoulder_pitch,
elbow_pitch, forearm_roll, wrist_pitch, wrist_roll, then ``gripper``: a finger position in m, 0
closed .. 0.055 open; tasks pick | reach; a wrist camera). "The joints" below are the robot's
joints in that order, the gripper included: joint states, commands and trajectories treat it as
one more joint.

Physics runs in real time: a steady-clock timer at 50 Hz, and every publisher, command and reset
callback before it acts, integrates the wall time elapsed since the last update in 0.01 s physics
steps (the remainder is carried over). So published states are current and commands take effect
when they arrive, to one physics step. An update integrates at most 0.1 s; if the node falls
further behind (CPU starved), the rest is skipped and a throttled warning is logged. The real-time
factor (simulated / wall time) is logged at shutdown.

Published topics:

* ``/joint_states`` (sensor_msgs/JointState) at ``joint_state_rate_hz``: name, position (rad; the
  gripper: m), velocity (rad/s; m/s) of the joints (4 for ``arm``, 7 for ``gripper_arm``); stamp =
  node clock now.
* ``camera/image_raw`` (sensor_msgs/Image, SensorData QoS) at ``camera_rate_hz``: rgb8,
  ``image_size`` square, frame_id ``front_camera``, stamp = when the frame was rendered; plus one
  frame right at every reset (the first frame of the episode).
* ``wrist_camera/image_raw`` (sensor_msgs/Image, SensorData QoS; only a robot with a wrist camera:
  ``gripper_arm``): the wrist camera, looking along the tool at the fingers; the same rate, size,
  encoding and reset frame as ``camera/image_raw``, frame_id ``wrist_camera``, and each frame has
  the stamp of the front frame rendered from the same state.
* ``/ceed_vla/instruction`` (std_msgs/String, depth 1, reliable, transient local: late joiners
  get the current one) at every reset.
* ``~/success`` (std_msgs/Bool) at ``joint_state_rate_hz``, with each joint state: whether the
  current episode has succeeded. With ``end_on_success`` (default) the first success ENDS the
  episode, as in ``ceed-vla eval``: ``~/success`` stays true, the arm holds the pose it
  succeeded in and joint commands are ignored (logged once) until the next ``~/reset_episode``.
  The policy and the driver keep running; only the simulated arm stops obeying. Without it the
  success test is evaluated afresh every time and the arm keeps following commands.

Subscribed topics:

* ``/forward_position_controller/commands`` (std_msgs/Float64MultiArray): absolute joint position
  targets, one per joint in ``/joint_states`` name order (``gripper_arm``: 7, the gripper last),
  clipped to the joint limits (no rate limit here: the arm driver limits the rate, as in front of a
  real position controller). A wrong length or a non-finite value: throttled warning, message
  ignored.
* ``/joint_trajectory_controller/joint_trajectory`` (trajectory_msgs/JointTrajectory): executed
  in time like a joint_trajectory_controller: point j is reached at ``header.stamp`` (zero: on
  receipt) + its ``time_from_start``, linearly interpolated from the target in force when the
  message arrived; a new message replaces the rest of the old one, points already in the past are
  skipped; joints are matched by ``joint_names`` (``gripper`` is one of them on ``gripper_arm``)
  and joints not named keep their target. Unknown
  or repeated names, a length mismatch, non-finite values, times that do not increase, or no
  point still ahead: throttled warning, message ignored.

Services:

* ``~/reset_episode`` (ceed_vla_ros/srv/ResetEpisode): new episode of ``task`` (one of the robot's
  tasks: "reach" | "push" on ``arm``, "pick" | "reach" on ``gripper_arm``; empty keeps the current
  task) with layout ``seed`` (>= 0) and named cube ``colour`` (empty: by seed). The arm is put back
  at its home pose (the gripper open), and so is the command. The instruction is
  returned and published. On success ``message`` ends with ``episode start stamp <sec>.<nanosec>``,
  the stamp of the reset frame on ``camera/image_raw``: frames stamped earlier show the previous
  episode. Invalid requests: ``success`` false, ``message`` says why, nothing changes.

Parameters (all read-only: set them at start-up, e.g. ``--ros-args -p task:=push``; rates are
doubles, write ``15.0`` not ``15``; a rejected start-up value stops the node with exit code 1):

* ``robot`` (string, default ``arm``): the simulated robot, arm | gripper_arm.
* ``task`` (string, default ``reach``): task of the first episode, one of the robot's tasks: reach |
  push (``arm``), pick | reach (``gripper_arm``).
* ``seed`` (int >= 0, default 0): layout seed of the first episode.
* ``colour`` (string, default ""): named cube of the first episode, red | green | blue, or ""
  (chosen by the seed).
* ``joint_state_rate_hz`` (double 1-1000, default 100.0): rate of /joint_states and ~/success.
* ``camera_rate_hz`` (double 0.1-60, default 15.0): rate of camera/image_raw (and wrist_camera/image_raw).
* ``image_size`` (int 8-1024, default 64): width = height of the camera images (px; both cameras).
* ``end_on_success`` (bool, default true): the first success ends the episode (see ``~/success``).
* ``expert_teleop`` (bool, default false): the scripted expert of :mod:`ceed_vla_ros.sim.expert`
  acts as a teleoperator: every ``CONTROL_DT`` (0.1 s) it computes the next absolute joint target
  from the simulator's privileged state (the same target, velocity limited, that ``ceed-vla
  record`` stores as the label) and PUBLISHES it on ``/forward_position_controller/commands``,
  where this node (and an ``episode_recorder``) receive it like any other command (``gripper_arm``:
  7 entries, the gripper fully open or closed; the pick expert plans through the IK of
  ``config/sim_gripper_arm.urdf``). After an
  ``end_on_success`` success it publishes the held pose. For recording demonstrations over DDS
  (``ceed-vla launch record_sim``); leave it off when a policy drives the arm.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, Header, String
from trajectory_msgs.msg import JointTrajectory

from ceed_vla_ros.image_conversion import rgb_to_image_fields
from ceed_vla_ros.nodes.diagnostics import WarningThrottle
from ceed_vla_ros.nodes.interfaces import (
    FORWARD_COMMAND_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    TRAJECTORY_TOPIC,
)
from ceed_vla_ros.nodes.interfaces import SIM_CAMERA_TOPIC as IMAGE_TOPIC
from ceed_vla_ros.nodes.parameters import Param, StartupError, declare_parameters, run_node
from ceed_vla_ros.sim.env import COLOURS, CONTROL_DT, DYNAMIC_TASKS, TabletopArmEnv
from ceed_vla_ros.sim.expert import Expert, PickExpert, make_expert
from ceed_vla_ros.sim.mjcf import PHYSICS_TIMESTEP
from ceed_vla_ros.sim.robots import ROBOTS
from ceed_vla_ros.srv import ResetEpisode

NODE_NAME = "sim_arm"
SUCCESS_TOPIC = "~/success"
RESET_SERVICE = "~/reset_episode"
CAMERA_FRAME_ID = "front_camera"
WRIST_IMAGE_TOPIC = "wrist_camera/image_raw"  # relative, as camera/image_raw
WRIST_CAMERA_FRAME_ID = "wrist_camera"
ROBOT_TASKS: dict[str, tuple[str, ...]] = {
    name: tuple(t for t in robot.tasks if t not in DYNAMIC_TASKS) for name, robot in ROBOTS.items()}
"""Tasks the node runs, per robot (the environment's, less the dynamic ones)."""

PHYSICS_RATE_HZ = 50.0
"""Least rate of physics updates (callbacks that publish or command update physics first too)."""
MAX_UPDATE_S = 0.1
"""Most wall time one physics update integrates; beyond it the node is behind and skips time."""
WARN_THROTTLE_S = 2.0
"""Repeated warnings (bad commands, falling behind) are logged at most this often."""

def _colour_problem(value: str) -> str | None:
    return None if value in ("", *COLOURS) else f"must be empty or one of {', '.join(COLOURS)}, got {value!r}"


PARAMETERS = (
    Param("robot", "arm", "the simulated robot", choices=tuple(ROBOTS), read_only=True),
    Param("task", "reach", "task of the first episode, one of the robot's ("
          + "; ".join(f"{robot}: {', '.join(tasks)}" for robot, tasks in ROBOT_TASKS.items())
          + "); ~/reset_episode changes episodes", read_only=True),
    Param("seed", 0, "layout seed of the first episode", minimum=0, maximum=2**63 - 1, read_only=True),
    Param("colour", "", "named cube of the first episode; empty: chosen by the seed", read_only=True,
          check=_colour_problem),
    Param("joint_state_rate_hz", 100.0, "rate of /joint_states and ~/success (Hz)", minimum=1.0, maximum=1000.0,
          read_only=True),
    Param("camera_rate_hz", 15.0, "rate of camera/image_raw and wrist_camera/image_raw (Hz)", minimum=0.1,
          maximum=60.0, read_only=True),
    Param("image_size", 64, "width and height of the camera images (px)", minimum=8, maximum=1024, read_only=True),
    Param("end_on_success", True, "the first success ends the episode: the arm holds and ignores commands "
          "until ~/reset_episode", read_only=True),
    Param("expert_teleop", False, "the scripted expert publishes its joint targets on the forward command "
          "topic every 0.1 s, as a teleoperator would (recording demonstrations)", read_only=True),
)


def episode_request_error(task: str, colour: str, seed: int, robot: str = "arm") -> str | None:
    """Why ``(task, colour, seed)`` cannot start an episode of ``robot``, or ``None`` if it can.

    An empty ``task`` means "keep the current task", an empty ``colour`` "chosen by the seed".
    """
    tasks = ROBOT_TASKS[robot]
    if task and task not in tasks:
        return f"unknown task {task!r} for robot {robot}: expected one of {', '.join(tasks)}"
    if colour and colour not in COLOURS:
        return f"unknown colour {colour!r}: expected one of {', '.join(COLOURS)} or empty"
    if seed < 0:
        return f"seed must be >= 0, got {seed}"
    return None


class SimArmNode(Node):
    """The simulated arm: real-time MuJoCo physics behind ros2_control-style interfaces.

    See the module docstring for the topics, services and parameters.
    """

    def __init__(self) -> None:
        # Set before Node.__init__: rclpy's shutdown calls destroy_node() even on a node whose
        # construction failed (rejected start-up parameters).
        self._envs: dict[str, TabletopArmEnv] = {}
        self._wall_start: float | None = None  # set by the first physics update (spinning)
        self._simulated_s = 0.0
        self._episode_over = False  # the episode succeeded and end_on_success holds the arm
        self._trajectory: tuple[np.ndarray, np.ndarray] | None = None  # (times, targets) in force
        super().__init__(NODE_NAME)
        self._warnings = WarningThrottle(self.get_logger(), WARN_THROTTLE_S)
        declare_parameters(self, PARAMETERS)
        self._image_size: int = self.get_parameter("image_size").value
        self._end_on_success: bool = self.get_parameter("end_on_success").value
        self._robot = ROBOTS[self.get_parameter("robot").value]
        task = self.get_parameter("task").value
        if task not in ROBOT_TASKS[self._robot.name]:
            raise StartupError(f"invalid start-up parameter: task: {task!r} is not one of "
                               f"{', '.join(ROBOT_TASKS[self._robot.name])} (robot {self._robot.name})")

        self._env = self._env_for(task)

        self._joint_state_pub = self.create_publisher(JointState, JOINT_STATES_TOPIC, 10)
        self._success_pub = self.create_publisher(Bool, SUCCESS_TOPIC, 10)
        self._image_pub = self.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self._wrist_pub = None
        if self._robot.wrist_camera is not None:
            self._wrist_pub = self.create_publisher(Image, WRIST_IMAGE_TOPIC, qos_profile_sensor_data)
        self._instruction_pub = self.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)

        self.create_subscription(
            Float64MultiArray, FORWARD_COMMAND_TOPIC, self._on_forward_command, 10)
        self.create_subscription(JointTrajectory, TRAJECTORY_TOPIC, self._on_trajectory, 10)
        self.create_service(ResetEpisode, RESET_SERVICE, self._on_reset_episode)

        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0 / PHYSICS_RATE_HZ, self._update_physics, clock=steady)
        self.create_timer(1.0 / self.get_parameter("joint_state_rate_hz").value,
                          self._publish_joint_state, clock=steady)
        self._camera_timer = self.create_timer(
            1.0 / self.get_parameter("camera_rate_hz").value, self._publish_image, clock=steady)

        if self.get_parameter("expert_teleop").value:
            self._expert_pub = self.create_publisher(Float64MultiArray, FORWARD_COMMAND_TOPIC, 10)
            self._experts: dict[str, Expert | PickExpert] = {}
            self.create_timer(CONTROL_DT, self._publish_expert_command, clock=steady)

        colour = self.get_parameter("colour").value
        self._start_episode(self._env, self.get_parameter("seed").value, colour or None)
        # Simulated time starts with the first update: the executor may start spinning later.
        self._last_update: float | None = None
        joints = ", ".join(self._env.joint_names)
        cameras = "front" + (", wrist" if self._wrist_pub is not None else "")
        self.get_logger().info(f"simulated arm ready: robot {self._robot.name}, task {self._env.task}, "
                               f"joints {joints}; cameras {cameras}")

    # ------------------------------------------------------------------ physics
    def _env_for(self, task: str) -> TabletopArmEnv:
        """The environment of ``task`` (one per task, created on first use)."""
        if task not in self._envs:
            self._envs[task] = TabletopArmEnv(task=task, image_size=self._image_size, robot=self._robot)
        return self._envs[task]

    def _update_physics(self) -> None:
        """Integrate the wall time elapsed since the last update (at most ``MAX_UPDATE_S``)."""
        now = time.monotonic()
        if self._last_update is None:
            self._last_update = self._wall_start = now
            return
        elapsed = now - self._last_update
        self._last_update = now
        if elapsed > MAX_UPDATE_S:
            self.get_logger().warning(
                f"simulation fell {elapsed - MAX_UPDATE_S:.3f} s behind real time (CPU starved?);"
                " skipping that time", throttle_duration_sec=WARN_THROTTLE_S)
            elapsed = MAX_UPDATE_S
        self._simulated_s += self._env.advance(elapsed) * PHYSICS_TIMESTEP
        self._follow_trajectory()

    def real_time_factor(self) -> float:
        """Simulated time / wall time since start-up (1.0 = the simulation keeps up)."""
        wall = 0.0 if self._wall_start is None else time.monotonic() - self._wall_start
        return self._simulated_s / wall if wall > 0 else 1.0

    # ------------------------------------------------------------------ publishers
    def _publish_joint_state(self) -> None:
        self._update_physics()
        env = self._env
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(env.joint_names)
        msg.position = env.joint_positions.tolist()
        msg.velocity = env.joint_velocities.tolist()
        self._joint_state_pub.publish(msg)
        success = self._episode_over or env.success()
        if success and self._end_on_success and not self._episode_over:
            self._episode_over = True
            env.set_joint_command(env.joint_positions)
            self.get_logger().info("episode succeeded: the arm holds, commands are ignored until "
                                   "~/reset_episode")
        self._success_pub.publish(Bool(data=success))

    def _publish_image(self) -> None:
        self._update_physics()
        self._publish_frame(self._env.render_current())

    def _publish_frame(self, rgb: np.ndarray) -> Header:
        """Publish the front frame ``rgb`` and, with a wrist camera, its frame of the same state (same stamp)."""
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=CAMERA_FRAME_ID)
        self._image_pub.publish(Image(header=header, **rgb_to_image_fields(rgb)))
        if self._wrist_pub is not None:
            wrist = self._env.render_camera(self._robot.wrist_camera)
            self._wrist_pub.publish(Image(header=Header(stamp=header.stamp, frame_id=WRIST_CAMERA_FRAME_ID),
                                          **rgb_to_image_fields(wrist)))
        return header

    # ------------------------------------------------------------------ commands
    def _apply_command(self, target: np.ndarray) -> None:
        self._update_physics()  # the previous target acted until now
        if self._episode_over:
            return  # the episode has ended (end_on_success): hold until the next reset
        self._env.set_joint_command(target)

    def _reject(self, topic: str, reason: str) -> None:
        """Warn that a command was ignored; at most once per ``WARN_THROTTLE_S`` per topic."""
        self._warnings.warn(f"ignored a message on {topic}: {reason}", kind=topic)

    def _on_forward_command(self, msg: Float64MultiArray) -> None:
        self._trajectory = None  # a forward command takes over from a trajectory
        target = np.asarray(msg.data, dtype=np.float64)
        n_joints = len(self._env.joint_names)
        if target.shape != (n_joints,):
            self._reject(FORWARD_COMMAND_TOPIC, f"{target.size} values, expected {n_joints} "
                         f"({', '.join(self._env.joint_names)})")
        elif not np.all(np.isfinite(target)):
            self._reject(FORWARD_COMMAND_TOPIC, f"non-finite value in {target.tolist()}")
        else:
            self._apply_command(target)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        names = list(self._env.joint_names)
        joints = list(msg.joint_names)
        if not joints or any(n not in names for n in joints) or len(set(joints)) != len(joints):
            self._reject(TRAJECTORY_TOPIC, f"joint_names {joints} must be distinct names out of "
                         f"{names}")
            return
        self._update_physics()  # the previous target acted until now
        now = self.get_clock().now().nanoseconds * 1e-9
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        start = stamp if stamp > 0 else now
        times = np.array([start + Duration.from_msg(p.time_from_start).nanoseconds * 1e-9
                          for p in msg.points])
        if len(times) == 0 or np.any(np.diff(times) <= 0):
            self._reject(TRAJECTORY_TOPIC, "points must have increasing time_from_start")
            return
        if times[-1] < now:
            self._reject(TRAJECTORY_TOPIC, "every point is in the past")
            return
        try:
            points = np.array([p.positions for p in msg.points], dtype=np.float64)
        except ValueError:
            points = np.empty(0)
        if points.shape != (len(times), len(joints)) or not np.all(np.isfinite(points)):
            self._reject(TRAJECTORY_TOPIC, f"point positions are not one finite value per joint "
                         f"name {joints}")
            return
        index = [names.index(n) for n in joints]
        full = np.repeat(self._env.joint_target[None, :], len(times), axis=0)
        full[:, index] = points
        ahead = times >= now
        self._trajectory = (np.concatenate(([now], times[ahead])),
                            np.vstack((self._env.joint_target, full[ahead])))
        self._follow_trajectory()

    def _follow_trajectory(self) -> None:
        """Set the target from the trajectory in force (linear between its points)."""
        if self._trajectory is None:
            return
        times, points = self._trajectory
        now = self.get_clock().now().nanoseconds * 1e-9
        target = np.array([np.interp(now, times, points[:, j]) for j in range(points.shape[1])])
        if now >= times[-1]:
            self._trajectory = None
        if not self._episode_over:
            self._env.set_joint_command(target)

    # ------------------------------------------------------------------ expert teleoperator
    def _publish_expert_command(self) -> None:
        """expert_teleop: publish the scripted expert's next target (the held pose once over)."""
        self._update_physics()
        env = self._env
        if self._episode_over:
            target = env.joint_target
        else:
            if env.task not in self._experts:
                self._experts[env.task] = make_expert(env)
            obs = {"joint_positions": env.joint_positions}
            target = env.clip_joint_target(self._experts[env.task].act(obs, env.privileged()), env.joint_target)
        self._expert_pub.publish(Float64MultiArray(data=target.tolist()))

    # ------------------------------------------------------------------ episodes
    def _start_episode(self, env: TabletopArmEnv, seed: int, colour: str | None) -> Header:
        """Reset ``env`` to ``seed``, make it current, publish its instruction and first frame."""
        env.reset(seed=seed, colour=colour)
        self._env = env
        self._episode_over = False
        self._trajectory = None
        self._last_update = time.monotonic()
        self._instruction_pub.publish(String(data=env.instruction))
        self._camera_timer.reset()
        return self._publish_frame(env.render())

    def _on_reset_episode(self, request: ResetEpisode.Request,
                          response: ResetEpisode.Response) -> ResetEpisode.Response:
        error = episode_request_error(request.task, request.colour, request.seed, self._robot.name)
        if error is not None:
            response.success, response.message = False, error
            self.get_logger().warning(f"reset_episode rejected: {error}")
            return response
        self._update_physics()  # account the old episode's time before it is discarded
        env = self._env_for(request.task or self._env.task)
        header = self._start_episode(env, request.seed, request.colour or None)
        response.success = True
        response.instruction = env.instruction
        response.message = (f"task {env.task}, seed {request.seed}, colour {env.colour}; "
                            f"episode start stamp {header.stamp.sec}.{header.stamp.nanosec:09d}")
        self.get_logger().info(f"new episode: {response.message}: {env.instruction!r}")
        return response

    # ------------------------------------------------------------------ shutdown
    def destroy_node(self) -> None:
        """Release the renderers, destroy the node, then log the real-time factor."""
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        super().destroy_node()
        if self._wall_start is not None:
            # Logged after the node is gone: no /rosout publisher, whose context may be shut down.
            self.get_logger().info(f"real-time factor {self.real_time_factor():.3f} "
                                   f"over {time.monotonic() - self._wall_start:.1f} s")


def main(args: list[str] | None = None) -> int:
    return run_node(SimArmNode, args, description=__doc__, params=PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
