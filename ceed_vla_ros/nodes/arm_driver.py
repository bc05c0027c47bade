"""Arm driver node: /actions -> joint commands for a ros2_control controller, at a high rate, safely.

Thin wiring over :class:`ceed_vla_ros.arm_control.ArmDriverCore` (chunk scheduling, cubic
interpolation, watchdog, e-stop, position / velocity / acceleration limits, decelerating stops) and
the checkpoints' metadata (action tokenizer, action space).

Subscribes
    ``/actions`` (ceed_vla_ros/ActionTokens): decoded chunks. Refused, with a throttled warning:
    an unknown checkpoint id, joint names or action space that do not fit, ids that are not action
    tokens, a wrong length, stale / duplicate / out-of-order / future stamps.
    ``/joint_states`` (sensor_msgs/JointState): measured positions (by joint name).
    ``~/estop`` (std_msgs/Bool): ``true`` latches the e-stop (``false`` does NOT clear it).
Services
    ``~/estop`` (std_srvs/Trigger): latch the e-stop. ``~/reset_estop`` (std_srvs/Trigger): clear it;
    motion resumes only with actions decoded after the reset.
Publishes (``command_interface``)
    ``forward_position``: std_msgs/Float64MultiArray on ``forward_command_topic`` (a
    forward_command_controller's ``~/commands``), one position per joint, every control period.
    ``joint_trajectory``: trajectory_msgs/JointTrajectory on ``trajectory_topic`` (a
    joint_trajectory_controller's ``~/joint_trajectory``): ONE message per accepted chunk, header
    stamp = the chunk's image stamp, one point per remaining step at the end of its window, with
    velocities; when the driver starts holding (watchdog, e-stop, IK refusal; not when a chunk is
    used up) the stop: the decelerating command stream, one point per control period until at rest
    (one point at the command in force for an ``immediate`` e-stop).
    Gripper (``gripper_interface``): ``joint``: one more joint (``gripper_joint``) in those
    commands; ``topic``: std_msgs/Float64MultiArray [position] on ``gripper_command_topic`` every
    control period (a forward_command_controller of the gripper).
    ``~/holding`` (std_msgs/Bool): true while the driver holds the arm (no actions, watchdog,
    e-stop, chunk used up), published on change.

Timing (``control_loop``): ``streamer`` (default, ``forward_position``): a native thread
(:mod:`ceed_vla_ros.nodes.command_streamer`, C) publishes each period's command at its absolute
deadline on the monotonic clock, with no Python in the period; a Python thread plans the
commands ``stream_plan_period_s`` at a time, twice that ahead
(:class:`ceed_vla_ros.control_loop.LookaheadPlanner`), and every event that changes them (a
chunk, an e-stop or its reset, a parameter, the first joint states) re-plans at once from the
next unpublished period, so the stream is the one a per-period loop would send. ``~/holding``
and the log report a period once it has passed. ``thread`` (and ``streamer`` where the library
is missing or with ``joint_trajectory``): a Python thread (:class:`ceed_vla_ros.control_loop.
DeadlineLoop`) computes and publishes every period at absolute deadlines. ``rclpy_timer``: the
executor's timer (the former loop). The executor (main thread) serves the subscriptions,
services and diagnostics; all share the core under one lock. ``realtime_priority`` > 0 asks for
SCHED_FIFO for the control threads (logged when the system does not permit it).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ceed_vla_ros.action_tokenizer import ActionTokenizer
from ceed_vla_ros.arm_control import (
    CHUNK_TRANSITIONS,
    ESTOP_STOPS,
    ActionLayout,
    ArmDriverCore,
    GripperLimits,
    JointLimits,
)
from ceed_vla_ros.control_loop import CONTROL_LOOPS, DeadlineLoop, LookaheadPlanner
from ceed_vla_ros.metadata import CheckpointError, CheckpointMetadata, list_checkpoints, load_metadata
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher, Health, WarningThrottle
from ceed_vla_ros.nodes.interfaces import (
    ACTIONS_QOS,
    ACTIONS_TOPIC,
    FORWARD_COMMAND_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    TRAJECTORY_TOPIC,
    JointPicker,
    overridable_qos,
    stamp_to_seconds,
)
from ceed_vla_ros.nodes.parameters import Param, StartupError, declare_parameters, parameter_values, run_node
from ceed_vla_ros.nodes.rclpy_compat import low_overhead_executor
from ceed_vla_ros.paths import resolve_model_dir, share_directory

COMMAND_INTERFACES = ("forward_position", "joint_trajectory")
GRIPPER_INTERFACES = ("none", "joint", "topic")
WARN_PERIOD_S = 2.0


def _non_empty_list(value) -> str | None:
    return None if len(value) > 0 else "must not be empty"


PARAMETERS = (
    Param("model_dir", "", "shared model directory holding the checkpoints whose actions are accepted "
          "(empty: $CEED_VLA_MODEL_DIR or the shipped models/)", read_only=True),
    Param("joint_names", ["joint1"], "joints in command order (must match the checkpoint's joint names)",
          read_only=True, check=_non_empty_list),
    Param("position_lower", [-1.0], "lower position limit per joint (rad)", read_only=True),
    Param("position_upper", [1.0], "upper position limit per joint (rad)", read_only=True),
    Param("max_velocity", [0.5], "velocity limit per joint (rad/s)", read_only=True),
    Param("max_acceleration", [2.0], "acceleration limit per joint (rad/s^2), kept by every command and "
          "trajectory point; stops take at most max_velocity / max_acceleration", read_only=True),
    Param("control_rate_hz", 200.0, "command rate (a dedicated thread at absolute deadlines; 500 Hz is supported)",
          minimum=10.0, maximum=2000.0, read_only=True),
    Param("realtime_priority", 0, "SCHED_FIFO priority of the control thread (1-99; 0: normal scheduling). "
          "Needs CAP_SYS_NICE or an rtprio limit; without it the driver logs a warning and runs normally",
          minimum=0, maximum=99, read_only=True),
    Param("control_loop", "streamer", "what runs the control periods: streamer (a native thread publishes the "
          "commands a Python thread plans ahead; forward_position only, else thread), thread (a Python deadline "
          "thread computes and publishes every period), or rclpy_timer (the executor's timer, the former loop, "
          "kept for `ceed-vla bench-pipeline --compare-timer`)", choices=CONTROL_LOOPS, read_only=True),
    Param("stream_plan_period_s", 0.02, "control_loop streamer: plan the commands this often, twice this far "
          "ahead (events re-plan at once: it adds no latency)", minimum=0.002, maximum=0.2, read_only=True),
    Param("watchdog_timeout_s", 0.5, "hold the arm when no fresh action arrived for this long",
          minimum=0.02, maximum=10.0),
    Param("enable_actuation", False, "send commands at all (false: compute and log only)"),
    Param("command_interface", "forward_position", "controller interface", choices=COMMAND_INTERFACES,
          read_only=True),
    Param("forward_command_topic", FORWARD_COMMAND_TOPIC,
          "Float64MultiArray command topic of a forward position controller", read_only=True),
    Param("trajectory_topic", TRAJECTORY_TOPIC,
          "JointTrajectory topic of a joint_trajectory_controller", read_only=True),
    Param("chunk_transition", "replace", "how a new chunk takes over from the one in force: replace its "
          "remaining steps, or temporal_ensemble (ACT: average the overlapping steps)", choices=CHUNK_TRANSITIONS),
    Param("ensemble_decay", 0.5, "temporal_ensemble: the k-th prediction of a step weighs exp(-decay k), "
          "the oldest k = 0", minimum=0.0, maximum=10.0),
    Param("urdf_file", "", "the robot's URDF, for the IK of end-effector actions (relative paths: inside "
          "share/ceed_vla_ros; empty: robot_description)", read_only=True),
    Param("robot_description", "", "the robot's URDF as a string (as robot_state_publisher takes it); used "
          "when urdf_file is empty", read_only=True),
    Param("ik_max_iterations", 50, "damped least squares iterations per IK solve (one solve per chunk step)",
          minimum=1, maximum=1000, read_only=True),
    Param("ik_position_tolerance", 0.002, "IK: largest tip position error accepted (m)",
          minimum=1e-6, maximum=0.1, read_only=True),
    Param("ik_rotation_tolerance", 0.02, "IK: largest tip rotation error accepted (rad)",
          minimum=1e-6, maximum=1.0, read_only=True),
    Param("ik_damping", 0.05, "IK: damping lambda of the least squares step", minimum=1e-6, maximum=10.0,
          read_only=True),
    Param("gripper_interface", "none", "gripper channel: none, joint (gripper_joint in the arm's commands) or "
          "topic (Float64MultiArray on gripper_command_topic)", choices=GRIPPER_INTERFACES, read_only=True),
    Param("gripper_joint", "gripper", "the gripper's joint name (commands, and its /joint_states entry if any)",
          read_only=True),
    Param("gripper_command_topic", "/gripper_controller/commands", "Float64MultiArray topic of the gripper's "
          "forward controller (gripper_interface: topic)", read_only=True),
    Param("gripper_closed_position", 0.0, "gripper position when fully closed (m or rad)", read_only=True),
    Param("gripper_open_position", 0.04, "gripper position when fully open (m or rad)", read_only=True),
    Param("gripper_max_velocity", 0.1, "gripper velocity limit (per s)", minimum=1e-6, maximum=100.0,
          read_only=True),
    Param("gripper_max_acceleration", 1.0, "gripper acceleration limit (per s^2)", minimum=1e-6, maximum=1e4,
          read_only=True),
    Param("estop_stop", "decelerate", "what the e-stop does to the command: decelerate (brake within the "
          "acceleration limits, then hold) or immediate (freeze at once: a velocity step)", choices=ESTOP_STOPS,
          read_only=True),
)


def load_urdf(urdf_file: str, robot_description: str) -> str | None:
    """The URDF text from the file parameter (relative: inside share/ceed_vla_ros) or the string
    parameter; None if neither is set. Raises StartupError for a file that cannot be read."""
    if urdf_file:
        path = Path(urdf_file).expanduser()
        if not path.is_absolute():
            path = share_directory() / path
        try:
            return path.read_text()
        except OSError as error:
            raise StartupError(f"urdf_file {path}: {error}") from error
    return robot_description or None


class ArmDriverNode(Node):
    def __init__(self) -> None:
        super().__init__("arm_driver")
        declare_parameters(self, PARAMETERS, on_accepted=self._on_parameters_changed)
        values = parameter_values(self, PARAMETERS)
        try:
            limits = JointLimits(
                names=tuple(values["joint_names"]),
                lower=tuple(values["position_lower"]),
                upper=tuple(values["position_upper"]),
                max_velocity=tuple(values["max_velocity"]),
                max_acceleration=tuple(values["max_acceleration"]),
            )
        except ValueError as error:
            raise StartupError(f"joint limits: {error}") from error
        self.joint_names = list(limits.names)
        self._joints = JointPicker(self.joint_names)
        self.model_dir = resolve_model_dir(values["model_dir"])
        self.control_period_s = 1.0 / values["control_rate_hz"]
        self.gripper_interface = values["gripper_interface"]
        self.gripper_joint = values["gripper_joint"]
        gripper = None
        if self.gripper_interface != "none":
            try:
                gripper = GripperLimits(values["gripper_closed_position"], values["gripper_open_position"],
                                        values["gripper_max_velocity"], values["gripper_max_acceleration"])
            except ValueError as error:
                raise StartupError(str(error)) from error
            if self.gripper_joint in self.joint_names:
                raise StartupError(f"gripper_joint {self.gripper_joint!r} is also one of joint_names")
        self.core = ArmDriverCore(limits=limits, control_period_s=self.control_period_s,
                                  watchdog_timeout_s=values["watchdog_timeout_s"],
                                  enable_actuation=values["enable_actuation"], gripper=gripper,
                                  chunk_transition=values["chunk_transition"],
                                  ensemble_decay=values["ensemble_decay"], estop_stop=values["estop_stop"],
                                  plan_trajectories=values["command_interface"] == "joint_trajectory")
        self._urdf = load_urdf(values["urdf_file"], values["robot_description"])
        self._ik_options = dict(damping=values["ik_damping"], max_iterations=values["ik_max_iterations"],
                                position_tolerance=values["ik_position_tolerance"],
                                rotation_tolerance=values["ik_rotation_tolerance"])
        self._kinematics: dict[tuple[str, str], object] = {}
        if self._urdf is not None:
            from ceed_vla_ros.kinematics import check_urdf

            try:  # parse once at start-up: a bad URDF or joint list ends the node with its reason
                check_urdf(self._urdf, self.joint_names)
            except ValueError as error:
                raise StartupError(f"URDF: {error}") from error
        self._lock = threading.Lock()
        self._metadata_by_id: dict[str, tuple[CheckpointMetadata, ActionTokenizer, ActionLayout | str]] = {}
        self._scanning = False
        self._last_scan = time.monotonic()
        self._last_sequence: int | None = None
        self._holding: bool | None = None
        self._warnings = WarningThrottle(self.get_logger(), WARN_PERIOD_S)
        self.refused = 0
        self._scan_checkpoints()

        self.command_interface = values["command_interface"]
        if self.command_interface == "forward_position":
            self.command_publisher = self.create_publisher(Float64MultiArray, values["forward_command_topic"], 10)
        else:
            self.command_publisher = self.create_publisher(JointTrajectory, values["trajectory_topic"], 10)
        self.gripper_publisher = None
        if self.gripper_interface == "topic":
            self.gripper_publisher = self.create_publisher(Float64MultiArray, values["gripper_command_topic"], 10)
        self.trajectories_sent = 0
        self.holding_publisher = self.create_publisher(Bool, "~/holding", LATCHED_QOS)
        self.create_subscription(ActionTokens, ACTIONS_TOPIC, self._on_actions,
                                 **overridable_qos(ACTIONS_QOS))
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, 50)
        self.create_subscription(Bool, "~/estop", self._on_estop_topic, 10)
        self.create_service(Trigger, "~/estop", self._on_estop_service)
        self.create_service(Trigger, "~/reset_estop", self._on_reset_service)
        self._prepare_command_message()
        self.commands_sent = 0
        self.chunks_accepted = 0
        self._last_reason = "starting"
        DiagnosticsPublisher(self, self._health)
        # The GIL: a waiting thread asks the running one to let go after this interval (default 5 ms,
        # more than a 500 Hz period); the loop thread must not wait that long behind a callback.
        sys.setswitchinterval(min(sys.getswitchinterval(), max(0.0005, self.control_period_s / 4)))
        self.planner: LookaheadPlanner | None = None
        self.streamer = None
        self.control_loop = values["control_loop"]
        if self.control_loop == "streamer":
            unavailable = self._start_streamer(values["stream_plan_period_s"], values["realtime_priority"])
            if unavailable is not None:
                self.get_logger().warning(f"control_loop streamer unavailable ({unavailable}): using the Python "
                                          "deadline thread")
                self.control_loop = "thread"
        if self.control_loop != "streamer":
            self.loop = DeadlineLoop(self.control_period_s, self._on_control_period, name="arm-driver-control",
                                     realtime_priority=values["realtime_priority"], on_error=self._on_loop_error)
        if self.control_loop == "thread":
            self.loop.start()
        elif self.control_loop == "rclpy_timer":  # the executor's timer (no deadline thread; its counters stay 0)
            self.loop.realtime_status = ("rclpy timer on the executor (control_loop rclpy_timer; "
                                         "realtime_priority unused)")
            self.create_timer(self.control_period_s, lambda: self._on_control_period(0.0, 0.0))
        threads = [("control thread", self.loop.realtime_status)]
        if self.streamer is not None:
            threads = [(f"native command streamer (planned every {values['stream_plan_period_s'] * 1000:g} ms, "
                        f"{self.planner.lookahead_periods} periods ahead)", self.streamer.status),
                       ("planning thread", self.loop.realtime_status)]
        for thread, status in threads:
            log_scheduling = self.get_logger().warning if values["realtime_priority"] > 0 and not \
                status.startswith("SCHED_FIFO") else self.get_logger().info
            log_scheduling(f"{thread}: {status}")
        self.get_logger().info(
            f"{len(self.joint_names)} joints at {values['control_rate_hz']:.0f} Hz via {self.command_interface}; "
            f"gripper {self.gripper_interface}; chunk transition {values['chunk_transition']}; "
            f"URDF {'loaded' if self._urdf else 'none (no end-effector actions)'}; "
            f"actuation {'ENABLED' if values['enable_actuation'] else 'disabled'}; "
            f"checkpoints known: {', '.join(sorted(self._metadata_by_id)) or 'none yet'}")

    def _prepare_command_message(self) -> None:
        """The per-period messages, allocated once and refilled in place through numpy views of the
        arrays they hold (no per-period message, list or float objects). The views are taken from
        the messages' own arrays: the generated constructors copy what they are given. The joint
        positions (plus the gripper when it is a joint) are ``_command_positions``; trajectories
        (``joint_trajectory``, one per chunk) are built when they are sent."""
        width = len(self.joint_names) + (1 if self.gripper_interface == "joint" else 0)
        self._command_message = Float64MultiArray(data=[0.0] * width)
        self._command_positions = np.frombuffer(self._command_message.data, dtype=np.float64)  # writable view
        self._gripper_message = Float64MultiArray(data=[0.0])
        self._gripper_positions = np.frombuffer(self._gripper_message.data, dtype=np.float64)

    def _start_streamer(self, plan_period_s: float, realtime_priority: int) -> str | None:
        """Start the native streamer and the planning thread (``self.loop``); None, or why not."""
        if self.command_interface != "forward_position":
            return "joint_trajectory publishes one trajectory per chunk, not a command per period"
        from ceed_vla_ros.nodes.command_streamer import NativeCommandStreamer

        plan_periods = max(1, int(round(plan_period_s / self.control_period_s)))
        lookahead = 2 * plan_periods
        joints = len(self.joint_names)
        width = joints + (1 if self.gripper_interface == "joint" else 0)
        try:
            streamer = NativeCommandStreamer(self.command_publisher, width, self.control_period_s, lookahead + 2,
                                             gripper_publisher=self.gripper_publisher)
        except OSError as error:
            return str(error)
        if self.gripper_interface == "joint":
            def to_values(command):
                return [*command.positions.tolist(), command.gripper], 0.0
        else:
            def to_values(command):
                return command.positions.tolist(), command.gripper or 0.0
        first_deadline_ns = time.monotonic_ns() + 2 * streamer.period_ns
        # an event re-plans from the period after the next 2 ms or so: time to queue the new plan
        margin = max(1, round(0.002 / self.control_period_s))
        self.planner = LookaheadPlanner(self.core, streamer, self.control_period_s, first_deadline_ns * 1e-9,
                                        lookahead, clock_now=self._now, to_values=to_values,
                                        replan_margin_periods=min(margin, lookahead - 1))
        self.streamer = streamer
        with self._lock:
            self.planner.plan()
        streamer.start(first_deadline_ns, realtime_priority)
        self.loop = DeadlineLoop(plan_periods * self.control_period_s, self._on_plan_period, name="arm-driver-plan",
                                 realtime_priority=realtime_priority, on_error=self._on_loop_error)
        self.loop.start()
        return None

    def _change_stream(self, event):
        """Run ``event()`` (a core change; the caller holds ``self._lock``), re-planning the
        streamer's queue around it; returns what ``event`` returned."""
        if self.planner is None:
            return event()
        return self.planner.replan(event)

    def destroy_node(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.stop()  # no publishing from the control thread into a destroyed node
        streamer = getattr(self, "streamer", None)
        if streamer is not None:
            streamer.stop()  # before its publishers go
            streamer.close()
            self.streamer = None
        super().destroy_node()

    def _on_loop_error(self, error: BaseException) -> None:
        self.get_logger().fatal(f"control loop stopped by {type(error).__name__}: {error}; the arm is not commanded")

    def _health(self) -> Health:
        with self._lock:
            estopped, actuation = self.core.estopped, self.core.enable_actuation
        values = {"holding": bool(self._holding), "reason": self._last_reason, "estop_latched": estopped,
                  "actuation_enabled": actuation, "command_interface": self.command_interface}
        if estopped:
            level, message = ERROR, "E-STOP latched: call ~/reset_estop"
        elif self._holding:
            level, message = WARN, f"holding: {self._last_reason}"
        else:
            level, message = OK, "following actions"
        loop = self.loop
        values |= {"control_loop": self.control_loop, "control_scheduling": loop.realtime_status,
                   "control_max_lateness_ms": round(1000.0 * loop.max_lateness_s, 3)}
        counters = {"commands_sent": self.commands_sent, "control_periods": loop.periods,
                    "control_periods_missed": loop.missed}
        if self.streamer is not None:  # the native thread's periods; loop: the planning thread's
            stream = self.streamer.counters()
            values |= {"control_scheduling": self.streamer.status, "planning_scheduling": loop.realtime_status,
                       "control_max_lateness_ms": round(stream["max_late_ns"] * 1e-6, 3),
                       "planning_max_lateness_ms": round(1000.0 * loop.max_lateness_s, 3)}
            counters = {"commands_sent": stream["published"],
                        "control_periods": stream["published"] + stream["empty"],
                        "control_periods_missed": stream["missed"], "publish_errors": stream["errors"],
                        "plans": loop.periods, "replans": self.planner.replans,
                        "planned_too_late": self.planner.refused_pushes}
            if stream["errors"]:
                level, message = ERROR, f"command publishing failed: {self.streamer.last_error()}"
        if loop.error is not None:
            level, message = ERROR, f"control loop stopped: {loop.error}"
        return Health(level, message, values, counters=counters | {
            "trajectories_sent": self.trajectories_sent, "chunks_accepted": self.chunks_accepted,
            "chunks_refused": self.refused, "ik_refusals": self.core.ik_refusals})

    # -- checkpoints -------------------------------------------------------------------------------
    def _kinematics_for(self, base_frame: str, tip_frame: str):
        """The IK of this URDF between two frames, cached (built in the checkpoint scan, not per chunk)."""
        from ceed_vla_ros.kinematics import ArmKinematics

        key = (base_frame, tip_frame)
        cached = self._kinematics.get(key)
        if cached is None:
            cached = self._kinematics[key] = ArmKinematics(
                self._urdf, self.joint_names, base_frame, tip_frame, lower=self.core.limits.lower,
                upper=self.core.limits.upper, **self._ik_options)
        return cached

    def _layout_for(self, name: str, metadata: CheckpointMetadata) -> ActionLayout:
        kinematics = None
        if metadata.end_effector is not None and self._urdf is not None:
            try:
                kinematics = self._kinematics_for(metadata.end_effector.base_frame, metadata.end_effector.tip_frame)
            except ValueError as error:  # its chunks are refused: "need the robot's URDF" names why
                self.get_logger().warning(f"checkpoint {name}: no IK for its frames: {error}",
                                          throttle_duration_sec=30.0)
        return ActionLayout.from_metadata(metadata, kinematics)

    def _scan_checkpoints(self) -> None:
        """Index the metadata of every checkpoint in model_dir by checkpoint id (no weights loaded)."""
        found: dict[str, tuple[CheckpointMetadata, ActionTokenizer, ActionLayout]] = {}
        for name in list_checkpoints(self.model_dir):
            try:
                metadata = load_metadata(self.model_dir, name)
            except CheckpointError as error:
                self.get_logger().warning(f"ignoring checkpoint {name}: {error}", throttle_duration_sec=30.0)
                continue
            found[metadata.checkpoint_id] = (metadata, metadata.action_tokenizer(), self._layout_for(name, metadata))
        with self._lock:
            self._metadata_by_id = found
            self._scanning = False

    def _metadata_for(self, checkpoint_id: str) -> tuple[CheckpointMetadata, ActionTokenizer, ActionLayout] | None:
        """The metadata (and its action tokenizer) of ``checkpoint_id``. An unknown id starts one
        rescan of model_dir in the background (at most once a second): the YAML is never read on the
        thread that runs the control timer, so this chunk is refused and later ones are accepted."""
        with self._lock:
            known = self._metadata_by_id.get(checkpoint_id)
            rescan = known is None and not self._scanning and time.monotonic() - self._last_scan > 1.0
            if rescan:
                self._scanning, self._last_scan = True, time.monotonic()
        if rescan:
            threading.Thread(target=self._scan_checkpoints, name="checkpoint-scan", daemon=True).start()
        return known

    # -- callbacks ---------------------------------------------------------------------------------
    def _now(self) -> float:
        """The ROS clock in seconds: the system clock (``time.time``, the same CLOCK_REALTIME rcl
        reads, without building rclpy Time objects every control period) unless simulated time
        is active."""
        clock = self.get_clock()
        if clock.ros_time_is_active:
            return clock.now().nanoseconds * 1e-9
        return time.time()

    def _refuse(self, reason: str) -> None:
        """Count and log a refusal (each kind of reason at most once per WARN_PERIOD_S)."""
        self.refused += 1
        self._warnings.warn(f"refused /actions ({self.refused} so far): {reason}", kind=" ".join(reason.split()[:2]))

    def _on_actions(self, msg: ActionTokens) -> None:
        known = self._metadata_for(msg.checkpoint_id)
        if known is None:
            return self._refuse(f"unknown checkpoint id {msg.checkpoint_id!r} (not in {self.model_dir})")
        metadata, action_tokenizer, layout = known
        if list(metadata.joint_names) != self.joint_names:
            return self._refuse(f"checkpoint {metadata.name} drives joints {metadata.joint_names}, "
                                f"this driver {self.joint_names}")
        if msg.action_dims != metadata.action_dims or msg.chunk_length != metadata.chunk_len:
            return self._refuse(f"shape {msg.chunk_length}x{msg.action_dims} differs from checkpoint "
                                f"{metadata.chunk_len}x{metadata.action_dims}")
        try:
            actions = action_tokenizer.decode(np.asarray(msg.token_ids, dtype=np.int64))
        except ValueError as error:
            return self._refuse(str(error))
        if self._last_sequence is not None and msg.sequence == self._last_sequence:
            return self._refuse(f"duplicate sequence {msg.sequence}")
        stamp = stamp_to_seconds(msg.header.stamp)
        with self._lock:
            accepted, reason = self._change_stream(lambda: self.core.on_chunk(stamp, actions, layout, msg.step_dt,
                                                                              self._now()))
            trajectory = self.core.last_trajectory if accepted else None
        if not accepted:
            return self._refuse(reason)
        self._last_sequence = msg.sequence
        self.chunks_accepted += 1
        if self.command_interface == "joint_trajectory" and self.core.enable_actuation and trajectory is not None:
            self._publish_trajectory(msg.header.stamp, trajectory.time_from_stamp, trajectory.positions,
                                     trajectory.velocities)

    def _on_joint_state(self, msg: JointState) -> None:
        if self.core.gripper is not None and self.gripper_joint in msg.name:
            index = list(msg.name).index(self.gripper_joint)
            if index < len(msg.position):
                with self._lock:
                    self.core.on_gripper_state(float(msg.position[index]))  # the start command (below)
        picked = self._joints.pick(msg)
        if picked is None:
            self.get_logger().warning(f"joint state without all of {self.joint_names}: ignored",
                                      throttle_duration_sec=WARN_PERIOD_S)
            return
        positions = np.array(picked)
        stamp = stamp_to_seconds(msg.header.stamp)
        try:
            with self._lock:
                self.core.on_joint_state(stamp, positions)
                if self.planner is not None and not self.planner.stream_started:
                    self.planner.replan()  # the first command starts from the measured joints
        except ValueError as error:
            self.get_logger().warning(f"joint state ignored: {error}", throttle_duration_sec=WARN_PERIOD_S)

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._latch_estop("topic")

    def _latch_estop(self, source: str) -> None:
        with self._lock:
            self._change_stream(self.core.trigger_estop)
        self.get_logger().error(f"E-STOP latched ({source}); holding until ~/reset_estop")

    def _on_estop_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._latch_estop("service")
        response.success, response.message = True, "e-stop latched"
        return response

    def _on_reset_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            was_latched = self.core.estopped
            self._change_stream(self.core.reset_estop)
        message = "e-stop reset: waiting for fresh actions" if was_latched else "e-stop was not latched"
        self.get_logger().warning(message)
        response.success, response.message = True, "e-stop cleared" if was_latched else "e-stop was not latched"
        return response

    def _on_parameters_changed(self, parameters) -> None:
        attributes = {"enable_actuation": bool, "watchdog_timeout_s": float, "chunk_transition": str,
                      "ensemble_decay": float}
        for parameter in parameters:
            if parameter.name in attributes:
                value = attributes[parameter.name](parameter.value)
                with self._lock:
                    self._change_stream(lambda name=parameter.name, value=value: setattr(self.core, name, value))

    def _on_control_period(self, deadline_s: float, now_s: float) -> None:
        """One control period, on the control thread (``deadline_s``, ``now_s``: monotonic clock)."""
        now = self._now()
        with self._lock:
            command = self.core.step(now)
        started_holding = self._report(command.holding, command.reason)
        if command.positions is None:
            return
        self.commands_sent += 1
        self._command_positions[: len(self.joint_names)] = command.positions
        if self.gripper_interface == "joint":
            self._command_positions[-1] = command.gripper
        elif self.gripper_publisher is not None:
            self._gripper_positions[0] = command.gripper
            self.gripper_publisher.publish(self._gripper_message)
        if self.command_interface == "forward_position":
            self.command_publisher.publish(self._command_message)
        elif started_holding:  # one trajectory per chunk; a hold replaces the rest of it with the stop
            with self._lock:
                stop = self.core.stop_trajectory()
            self._publish_trajectory(None, stop.time_from_stamp, stop.positions, stop.velocities)

    def _report(self, holding: bool, reason: str) -> bool:
        """Keep the reason, publish ``~/holding`` and log on a change; True when a hold starts that
        a controller does not make by itself (not a used-up chunk: it holds at its last point)."""
        self._last_reason = reason
        started_holding = holding and self._holding is False and reason != "chunk used up"
        if holding != self._holding:
            self._holding = holding
            self.holding_publisher.publish(Bool(data=holding))
            log = self.get_logger().info if holding else self.get_logger().debug
            log(f"{'holding' if holding else 'moving'}: {reason}")
        return started_holding

    def _on_plan_period(self, deadline_s: float, now_s: float) -> None:
        """control_loop streamer: plan ahead, then report the periods the streamer has passed."""
        with self._lock:
            self.planner.plan()
            periods = self.planner.take_published()
        for period in periods:
            self._report(period.holding, period.reason)

    def _publish_trajectory(self, stamp, time_from_stamp: np.ndarray, positions: np.ndarray,
                            velocities: np.ndarray) -> None:
        """One JointTrajectory: points at ``stamp`` (None: zero, i.e. on receipt) + ``time_from_stamp``."""
        names = list(self.joint_names)
        if self.gripper_interface == "joint":
            names.append(self.gripper_joint)
        else:
            positions, velocities = positions[:, : len(names)], velocities[:, : len(names)]
        msg = JointTrajectory(joint_names=names)
        if stamp is not None:
            msg.header.stamp = stamp
        for t, p, v in zip(time_from_stamp, positions, velocities):
            seconds, nanoseconds = divmod(int(round(float(t) * 1e9)), 10**9)
            msg.points.append(JointTrajectoryPoint(positions=p.tolist(), velocities=v.tolist(),
                                                   time_from_start=Duration(sec=seconds, nanosec=nanoseconds)))
        self.command_publisher.publish(msg)
        self.trajectories_sent += 1


def main(args: list[str] | None = None) -> int:
    # the executor serves 100 Hz joint states besides the rest: the C++ events executor where rclpy has it
    return run_node(ArmDriverNode, args, description=__doc__, params=PARAMETERS,
                    executor_factory=low_overhead_executor)


if __name__ == "__main__":
    raise SystemExit(main())
