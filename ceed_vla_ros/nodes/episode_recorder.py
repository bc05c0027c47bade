"""Episode recorder node: camera, /joint_states, the commands and the instruction, at a fixed rate,
straight into a LeRobot v3.0 dataset (one data file per episode), for teleoperated demonstrations.

At each tick of a ``fps`` timer while an episode runs, one frame is recorded with the rule of
:mod:`ceed_vla_ros.datasets.align` (the policy's: image = newest camera frame, state = joint
positions interpolated at the image's stamp, action = newest command); a tick without a fresh
frame, a joint state near it, or any command yet is dropped and counted. Services (std_srvs/Trigger):
``~/start_episode``, ``~/stop_episode`` (saves it: the dataset on disk then holds it),
``~/discard_episode``. The instruction is the ``instruction`` parameter, or else the latest
``/ceed_vla/instruction``. An episode in progress lives in memory only: Ctrl-C (``on_shutdown``
``discard``, default; ``save`` keeps it) or ``kill -9`` never leave a half-written file behind, and
the dataset keeps every episode saved before. ``/diagnostics``: frames written and dropped.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from ceed_vla_ros.arm_control import JointStateHistory
from ceed_vla_ros.datasets.align import AlignedFrames, align_tick
from ceed_vla_ros.datasets.lerobot import LeRobotWriter
from ceed_vla_ros.image_conversion import ImageConversionError, image_to_rgb
from ceed_vla_ros.nodes.diagnostics import OK, WARN, DiagnosticsPublisher, Health, WarningThrottle
from ceed_vla_ros.nodes.interfaces import (
    FORWARD_COMMAND_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    JointPicker,
    stamp_to_seconds,
)
from ceed_vla_ros.nodes.parameters import Param, StartupError, declare_parameters, parameter_values, run_node

SIM_JOINTS = ["base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch"]
ACTION_TYPES = ("forward_position", "joint_state", "joint_trajectory")

PARAMETERS = (
    Param("dataset_dir", "", "LeRobot dataset folder (created, or appended to when it exists)", read_only=True),
    Param("image_topic", "image", "sensor_msgs/Image camera topic (remap it to the camera's)", read_only=True),
    Param("joint_names", list(SIM_JOINTS), "joints of state and action, in this order", read_only=True),
    Param("action_topic", FORWARD_COMMAND_TOPIC, "the commands recorded as the action", read_only=True),
    Param(
        "action_type",
        "forward_position",
        "Float64MultiArray commands, a leader arm's JointState, or JointTrajectory (first point)",
        choices=ACTION_TYPES,
        read_only=True,
    ),
    Param(
        "fps",
        10,
        "frames per second (the policy's step rate, 1 / the checkpoint's dt)",
        minimum=1,
        maximum=120,
        read_only=True,
    ),
    Param("max_image_age_s", 0.5, "a tick whose newest camera frame is older is dropped", minimum=0.001, maximum=10.0),
    Param("instruction", "", "the task text of the episodes; empty: the latest instruction topic message"),
    Param(
        "image_storage",
        "image",
        "image: lossless PNG in the parquet; video: mp4",
        choices=("image", "video"),
        read_only=True,
    ),
    Param("video_codec", "h264", "codec of image_storage video", choices=("h264", "av1"), read_only=True),
    Param(
        "on_shutdown",
        "discard",
        "what Ctrl-C does with an episode in progress",
        choices=("discard", "save"),
        read_only=True,
    ),
)


class EpisodeRecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("episode_recorder")
        declare_parameters(self, PARAMETERS)
        values = parameter_values(self, PARAMETERS)
        if not values["dataset_dir"]:
            raise StartupError("dataset_dir is empty: give the LeRobot dataset folder to record into")
        self.values = values
        self.dataset_dir = Path(values["dataset_dir"]).expanduser()
        self.joints = list(values["joint_names"])
        self._picker = JointPicker(self.joints)
        self._history = JointStateHistory()
        self._lock = threading.Lock()
        self._image: tuple[float, np.ndarray] | None = None
        self._command: np.ndarray | None = None
        self._topic_instruction = ""
        self._episode: AlignedFrames | None = None
        self._writer: LeRobotWriter | None = None
        self.frames_written = self.frames_dropped = self.episodes_saved = self.episodes_discarded = 0
        self._warnings = WarningThrottle(self.get_logger())
        if (self.dataset_dir / "meta/info.json").exists():
            self.get_logger().info(f"appending to {self.dataset_dir}")
        self.create_subscription(Image, values["image_topic"], self._on_image, qos_profile_sensor_data)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, 50)
        kind = {"forward_position": Float64MultiArray, "joint_state": JointState, "joint_trajectory": JointTrajectory}[
            values["action_type"]
        ]
        self.create_subscription(kind, values["action_topic"], self._on_command, 50)
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, LATCHED_QOS)
        self.create_service(Trigger, "~/start_episode", self._start)
        self.create_service(Trigger, "~/stop_episode", self._stop)
        self.create_service(Trigger, "~/discard_episode", self._discard)
        self.create_timer(1.0 / values["fps"], self._tick)
        DiagnosticsPublisher(self, self._health)
        self.get_logger().info(f"recording into {self.dataset_dir} at {values['fps']} Hz: call ~/start_episode")

    # -- inputs --------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        except ImageConversionError as error:
            self._warnings.warn(f"camera frame dropped: {error}", kind="image")
            return
        with self._lock:
            self._image = (stamp_to_seconds(msg.header.stamp), rgb)

    def _on_joint_state(self, msg: JointState) -> None:
        positions = self._picker.pick(msg)
        if positions is not None:
            self._history.add(stamp_to_seconds(msg.header.stamp), np.array(positions))

    def _on_command(self, msg) -> None:
        if isinstance(msg, Float64MultiArray):
            value = list(msg.data) if len(msg.data) == len(self.joints) else None
        elif isinstance(msg, JointState):
            value = self._picker.pick(msg)
        else:
            value = None
            if msg.points and all(n in msg.joint_names for n in self.joints):
                index = {n: i for i, n in enumerate(msg.joint_names)}
                value = [msg.points[0].positions[index[n]] for n in self.joints]
        if value is None:
            self._warnings.warn(f"a command without the {len(self.joints)} joints {self.joints}: ignored", "command")
            return
        with self._lock:
            self._command = np.asarray(value, dtype=np.float64)

    def _on_instruction(self, msg: String) -> None:
        self._topic_instruction = msg.data.strip()

    # -- recording -----------------------------------------------------------------------------
    def _tick(self) -> None:
        with self._lock:
            if self._episode is None:
                return
            now = self.get_clock().now().nanoseconds * 1e-9
            kept = align_tick(
                now,
                self._image,
                self._history,
                self._command,
                self.get_parameter("max_image_age_s").value,
                self._episode,
            )
            if kept:
                self.frames_written += 1
            else:
                self.frames_dropped += 1

    def _instruction(self) -> str:
        return self.get_parameter("instruction").value.strip() or self._topic_instruction

    def _start(self, request, response):
        with self._lock:
            if self._episode is not None:
                response.success, response.message = False, "an episode is already running (stop or discard it first)"
                return response
            if not self._instruction():
                response.success, response.message = False, "no instruction (parameter or /ceed_vla/instruction) yet"
                return response
            self._episode = AlignedFrames()
        response.success, response.message = True, "recording"
        self.get_logger().info(f"episode started: {self._instruction()!r}")
        return response

    def _save(self, episode: AlignedFrames) -> str:
        arrays = episode.arrays()
        if self._writer is None:
            height, width = arrays["images"].shape[1:3]
            images = self.values["image_storage"]
            features = {
                "observation.image": {
                    "dtype": images,
                    "shape": [height, width, 3],
                    "names": ["height", "width", "channels"],
                },
                "observation.state": {"dtype": "float32", "shape": [len(self.joints)], "names": self.joints},
                "action": {"dtype": "float32", "shape": [len(self.joints)], "names": self.joints},
            }
            self._writer = LeRobotWriter(
                self.dataset_dir,
                fps=self.values["fps"],
                features=features,
                video_codec=self.values["video_codec"],
                episodes_per_file=1,
                append=(self.dataset_dir / "meta/info.json").exists(),
            )
        index = self._writer.add_episode(
            {"observation.image": arrays["images"], "observation.state": arrays["state"], "action": arrays["action"]},
            self._instruction(),
            {"dropped_ticks": sum(episode.dropped.values())},
        )
        self.episodes_saved += 1
        return f"episode {index} saved: {len(episode)} frames, {sum(episode.dropped.values())} ticks dropped"

    def _stop(self, request, response):
        with self._lock:
            episode, self._episode = self._episode, None
        if episode is None:
            response.success, response.message = False, "no episode running"
        elif not len(episode):
            response.success, response.message = (
                False,
                f"no frame recorded (dropped ticks: {episode.dropped}): nothing saved",
            )
        else:
            try:
                response.success, response.message = True, self._save(episode)
            except (OSError, ValueError) as error:
                response.success, response.message = False, f"saving failed: {error}"
        if response.success:
            self.get_logger().info(response.message)
        else:
            self.get_logger().warning(response.message)
        return response

    def _discard(self, request, response):
        with self._lock:
            episode, self._episode = self._episode, None
        response.success = episode is not None
        response.message = f"discarded {len(episode)} frames" if episode is not None else "no episode running"
        if episode is not None:
            self.episodes_discarded += 1
        self.get_logger().info(response.message)
        return response

    def _health(self) -> Health:
        with self._lock:
            recording = self._episode is not None
            frames = len(self._episode) if recording else 0
            dropped = dict(self._episode.dropped) if recording else {}
        level = WARN if recording and frames == 0 and sum(dropped.values()) > 2 else OK
        message = f"recording ({frames} frames)" if recording else "idle"
        return Health(
            level,
            message,
            values={
                "recording": recording,
                "episode_frames": frames,
                **{f"episode_dropped_{k}": v for k, v in dropped.items()},
            },
            counters={
                "frames_written": self.frames_written,
                "frames_dropped": self.frames_dropped,
                "episodes_saved": self.episodes_saved,
                "episodes_discarded": self.episodes_discarded,
            },
        )

    def destroy_node(self) -> None:
        with self._lock:
            episode, self._episode = self._episode, None
        if episode is not None and len(episode):
            if self.values["on_shutdown"] == "save":
                self.get_logger().info(self._save(episode))
            else:
                self.get_logger().info(f"shutting down: the episode in progress ({len(episode)} frames) discarded")
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(EpisodeRecorderNode, args, description=__doc__, params=PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
