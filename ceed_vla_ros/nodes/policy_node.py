"""Policy node: newest camera frame + joint state + instruction -> action tokens on /actions.

Thin wiring over :class:`ceed_vla_ros.policy.CeedVlaPolicy` (early-exit Jacobi decoding). Decoding
runs on a worker thread of its own; callbacks only store the newest frame (keep-latest: a slow
policy skips frames, it never builds a backlog).

Subscribes
    ``/ceed_vla/image`` (sensor_msgs/Image, from the camera subscriber; ``image_topic``).
    ``/joint_states`` (sensor_msgs/JointState): proprioception at the image stamp.
    ``/ceed_vla/instruction`` (std_msgs/String): the instruction, unless the ``instruction``
    parameter is set.
Publishes
    ``/actions`` (ceed_vla_ros/ActionTokens), stamped with the image's stamp and frame.
Parameters (``ros2 param set /policy <name> <value>``)
    see :data:`PARAMETERS`; ``decoding_mode``, ``early_exit_steps``, ``init_strategy``, ``fused_prefill``,
    ``keep_final_prefix``, ``prefix_pin_steps``, ``instruction`` and ``max_image_age_s`` apply from the
    next chunk. A new ``checkpoint`` is loaded and warmed up in the background and swapped in
    atomically; one that fails to load is reverted and the running one keeps going.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from transformers.utils import logging as hf_logging

from ceed_vla_ros.arm_control import JointStateHistory
from ceed_vla_ros.checkpoint import load_checkpoint
from ceed_vla_ros.decoding import DECODE_MODES, INIT_STRATEGIES, DecodeSettings
from ceed_vla_ros.image_conversion import ImageConversionError, image_to_rgb
from ceed_vla_ros.metadata import CheckpointError
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher, Health, WarningThrottle
from ceed_vla_ros.nodes.interfaces import (
    ACTIONS_QOS,
    ACTIONS_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    POLICY_IMAGE_TOPIC,
    JointPicker,
    overridable_qos,
    stamp_to_seconds,
)
from ceed_vla_ros.nodes.parameters import (
    Param,
    StartupError,
    checkpoint_change_validator,
    declare_parameters,
    parameter_values,
    run_node,
)
from ceed_vla_ros.paths import resolve_model_dir
from ceed_vla_ros.policy import CeedVlaPolicy
from ceed_vla_ros.precision import (
    PrecisionError,
    check_device_name,
    check_dtype_name,
    float32_output_head,
    resolve_precision,
)

MAX_INSTRUCTION_CHARS = 512
STALL_S = 2.0
WARN_PERIOD_S = 2.0


def instruction_problem(text: str) -> str | None:
    """Why an instruction cannot be used (None if it can); empty is allowed (= none)."""
    if len(text) > MAX_INSTRUCTION_CHARS:
        return f"longer than {MAX_INSTRUCTION_CHARS} characters ({len(text)})"
    if any(not ch.isprintable() for ch in text):
        return "contains control or non-printable characters"
    return None


def _precision_check(check):
    """A Param check from a precision-name check (None, or the reason the value is refused)."""

    def refusal(value):
        try:
            check(value)
        except PrecisionError as error:
            return str(error)
        return None

    return refusal


PARAMETERS = (
    Param("model_dir", "", "shared model directory (empty: $CEED_VLA_MODEL_DIR or the shipped models/)",
          read_only=True),
    Param("checkpoint", "sim_student", "checkpoint name inside model_dir; changing it loads the new one "
          "in the background and swaps it in"),
    Param("instruction", "", "task instruction; empty: follow the instruction topic",
          check=instruction_problem),
    Param("decoding_mode", "early_exit", "ar: one forward per token; jacobi: until the fixed point; "
          "early_exit: Jacobi capped at early_exit_steps", choices=DECODE_MODES),
    Param("early_exit_steps", 2, "Jacobi iterations in early_exit mode", minimum=1, maximum=256),
    Param("init_strategy", "random_prompt_tokens", "initial Jacobi block", choices=INIT_STRATEGIES),
    Param("fused_prefill", False, "jacobi / early_exit: run the prompt and a guessed block in one forward, so "
          "early exit at k costs k forward passes (k = 1: one per chunk) instead of k + 1; converged output "
          "unchanged, small k less exact unless the student was distilled for it; ignored by ar"),
    Param("keep_final_prefix", False, "jacobi / early_exit: keep the cache entries of the tokens already final "
          "after each iteration and run only the rest of the block again (same outputs); ignored by ar"),
    Param("prefix_pin_steps", 0, "prefix pinning (Jacobi / early exit): pin the first N actions of a chunk to "
          "the previous chunk's (the steps executing while it decodes) and decode the rest; 0: off",
          minimum=0, maximum=64),
    Param("max_image_age_s", 0.5, "skip frames older than this (camera stall protection)",
          minimum=0.01, maximum=60.0),
    Param("num_threads", 1, "torch CPU threads for decoding", minimum=1, maximum=64, read_only=True),
    Param("device", "auto", "where the model runs: auto (first CUDA GPU if torch sees one, else cpu), cpu, cuda, "
          "cuda:N; cuda where torch has none is refused at start-up", read_only=True,
          check=_precision_check(check_device_name)),
    Param("dtype", "auto", "model precision: auto (float32 on cpu, bfloat16 on a GPU), float32, bfloat16, "
          "float16 (GPU only)", read_only=True, check=_precision_check(check_dtype_name)),
    Param("float32_head", True, "with dtype bfloat16/float16: compute the output logits in float32 (fewer "
          "rounding ties between action tokens, see ceed-vla bench-precision)", read_only=True),
    Param("image_topic", POLICY_IMAGE_TOPIC, "preprocessed camera frames", read_only=True),
    Param("instruction_topic", INSTRUCTION_TOPIC, "instruction topic", read_only=True),
    Param("seed", 0, "seed of the random initial Jacobi blocks", minimum=0, maximum=2**31 - 1, read_only=True),
)


class PolicyNode(Node):
    def __init__(self, **node_options) -> None:
        """``node_options`` go to rclpy's Node (e.g. ``context``, ``parameter_overrides``)."""
        # set before anything can fail: destroy_node also runs on a node whose __init__ failed
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._frame_ready = threading.Condition()
        super().__init__("policy", **node_options)
        declare_parameters(self, PARAMETERS, on_accepted=self._on_parameters_changed)
        values = parameter_values(self, PARAMETERS)
        torch.set_num_threads(values["num_threads"])
        hf_logging.disable_progress_bar()  # no progress bars in a node's log
        self.model_dir = resolve_model_dir(values["model_dir"])
        self.add_on_set_parameters_callback(checkpoint_change_validator(self.model_dir))
        try:
            self.precision = resolve_precision(values["device"], values["dtype"])
        except PrecisionError as error:
            raise StartupError(str(error)) from error
        self._lock = threading.Lock()  # guards the policy swap and the settings below
        self._newest_frame: Image | None = None
        self._topic_instruction = ""
        self._settings = values
        self._sequence = 0
        self._last_stats = None
        self._last_publish_time: float | None = None
        self.skipped = 0
        self.skip_reason = ""
        self._warnings = WarningThrottle(self.get_logger(), WARN_PERIOD_S)
        self._previous_stamp: float | None = None
        self._joint_states = JointStateHistory()
        self._joint_picker = JointPicker(())
        self._joint_states_refused = 0
        self._decode_errors = 0
        self._last_decode_error: tuple[float, str] | None = None  # (monotonic time, message)
        try:
            self._policy = self._build_policy(values["checkpoint"])
        except (CheckpointError, ValueError) as error:  # ValueError: the model cannot decode (warm-up)
            raise StartupError(str(error)) from error

        self.publisher = self.create_publisher(ActionTokens, ACTIONS_TOPIC, **overridable_qos(ACTIONS_QOS))
        self.create_subscription(Image, values["image_topic"], self._on_image,
                                 **overridable_qos(qos_profile_sensor_data))
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, 50)
        self.create_subscription(String, values["instruction_topic"], self._on_instruction, LATCHED_QOS)
        self._worker = threading.Thread(target=self._decode_loop, name="policy-decoder", daemon=True)
        self._worker.start()
        DiagnosticsPublisher(self, self._health)

    def _health(self) -> Health:
        with self._lock:
            policy, settings, last = self._policy, self._settings, self._last_stats
        values = {"checkpoint_id": policy.metadata.checkpoint_id, "decoding_mode": settings["decoding_mode"],
                  "early_exit_steps": settings["early_exit_steps"],
                  "instruction": settings["instruction"].strip() or self._topic_instruction}
        if last is not None:
            values.update(last_decode_ms=last.wall_time_ms, last_iterations=last.iterations,
                          last_forward_passes=last.forward_passes, last_converged=last.converged)
        now = time.monotonic()
        silent = None if self._last_publish_time is None else now - self._last_publish_time
        history = self._joint_states
        if history.last_reset is not None:
            values["joint_state_clock_reset"] = (f"stamps went back from {history.last_reset[0]:.3f} "
                                                 f"to {history.last_reset[1]:.3f} s: history restarted")
        error = self._last_decode_error
        if error is not None and now - error[0] < STALL_S:
            level, message = ERROR, f"decoding failed: {error[1]}"
        elif silent is None or silent > STALL_S:
            level = WARN
            message = "no chunk published yet" if silent is None else f"no chunk for {silent:.1f} s"
            if self.skip_reason:
                message += f" (last skip: {self.skip_reason})"
        else:
            level, message = OK, "publishing chunks"
        return Health(level, message, values, counters={
            "chunks": self._sequence, "frames_skipped": self.skipped, "decode_errors": self._decode_errors,
            "joint_states_refused": self._joint_states_refused, "joint_state_clock_resets": history.clock_resets})

    # -- checkpoints ---------------------------------------------------------------------------------
    def _build_policy(self, name: str) -> CeedVlaPolicy:
        """Load, wrap and warm up a checkpoint (slow: call off the executor when live)."""
        started = time.perf_counter()
        checkpoint = load_checkpoint(self.model_dir, name, device=self.precision.device, dtype=self.precision.dtype)
        if self._settings["float32_head"]:
            float32_output_head(checkpoint.model)
        metadata = checkpoint.metadata
        policy = CeedVlaPolicy(checkpoint, seed=self._settings["seed"])
        blank = np.zeros((metadata.image.height, metadata.image.width, 3), np.uint8)
        joints = np.zeros(metadata.proprio_dim) if metadata.proprio_dim else None
        for mode in ("ar", "jacobi"):  # first calls allocate; keep that out of the control loop
            policy.predict(blank, joints, "warm up", DecodeSettings(mode))
        policy.reset()
        self.get_logger().info(f"loaded {metadata.checkpoint_id} ({metadata.provenance.role}, "
                               f"{metadata.chunk_len}x{metadata.action_dims} actions, dt {metadata.dt} s) "
                               f"on {self.precision.label} in {time.perf_counter() - started:.1f} s")
        return policy

    def _swap_checkpoint(self, name: str, previous: str) -> None:
        try:
            policy = self._build_policy(name)
        except (CheckpointError, OSError, ValueError, RuntimeError) as error:
            self.get_logger().error(f"checkpoint {name!r} failed to load, keeping {previous!r}: {error}")
            self.set_parameters([Parameter("checkpoint", value=previous)])
            return
        with self._lock:
            self._policy = policy

    def _on_parameters_changed(self, parameters: list[Parameter]) -> None:
        for parameter in parameters:
            with self._lock:
                previous = self._settings.get(parameter.name)
                self._settings = {**self._settings, parameter.name: parameter.value}
            if parameter.name == "checkpoint" and parameter.value != self._policy.metadata.name:
                threading.Thread(target=self._swap_checkpoint, args=(parameter.value, previous),
                                 name="checkpoint-loader", daemon=True).start()

    # -- inputs ---------------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        with self._frame_ready:
            self._newest_frame = msg
            self._frame_ready.notify()

    def _on_joint_state(self, msg: JointState) -> None:
        names = tuple(self._policy.metadata.proprio_names)
        if self._joint_picker.names != names:  # another checkpoint: other joints, start a new history
            self._joint_picker, self._joint_states = JointPicker(names), JointStateHistory()
        positions = self._joint_picker.pick(msg)
        if positions is None:
            return
        resets = self._joint_states.clock_resets
        if not self._joint_states.add(stamp_to_seconds(msg.header.stamp), np.array(positions)):
            if not np.all(np.isfinite(positions)):
                self._joint_states_refused += 1
                self._warnings.warn("joint state with non-finite positions: ignored", kind="joint non-finite")
        elif self._joint_states.clock_resets != resets:
            before, after = self._joint_states.last_reset
            self.get_logger().warning(f"/joint_states stamps went back from {before:.3f} to {after:.3f} s "
                                      "(clock step or a bad stamp): joint-state history restarted")

    def _on_instruction(self, msg: String) -> None:
        problem = instruction_problem(msg.data)
        if problem:
            self._warnings.warn(f"instruction topic: ignored ({problem})", kind=f"instruction {problem.split()[0]}")
            return
        self._topic_instruction = msg.data.strip()
        self.get_logger().info(f"instruction: {self._topic_instruction!r}")

    # -- decoding ----------------------------------------------------------------------------------------
    def _decode_loop(self) -> None:
        while not self._stopping.is_set():
            with self._frame_ready:
                self._frame_ready.wait_for(lambda: self._newest_frame is not None or self._stopping.is_set(),
                                           timeout=0.5)
                frame, self._newest_frame = self._newest_frame, None
            if frame is None:
                continue
            try:
                self._decode_and_publish(frame)
            except Exception as error:  # noqa: BLE001 - a failing frame must not end decoding for good
                self._decode_errors += 1
                self._last_decode_error = (time.monotonic(), f"{type(error).__name__}: {error}")
                self.get_logger().error(f"decoding a frame failed ({self._decode_errors} so far), "
                                        f"decoding the next: {type(error).__name__}: {error}",
                                        throttle_duration_sec=WARN_PERIOD_S)

    def _skip(self, reason: str) -> None:
        """A frame that is not decoded: count it, log the reason (throttled)."""
        self.skipped += 1
        self.skip_reason = reason
        self._warnings.warn(reason)

    def _decode_and_publish(self, frame: Image) -> None:
        with self._lock:
            policy, settings = self._policy, self._settings
        instruction = settings["instruction"].strip() or self._topic_instruction
        if not instruction:
            return self._skip("no instruction yet (parameter or topic): not decoding")
        stamp = stamp_to_seconds(frame.header.stamp)
        age = self.get_clock().now().nanoseconds * 1e-9 - stamp
        if age > settings["max_image_age_s"]:
            return self._skip(f"frame {age:.2f} s old (max_image_age_s {settings['max_image_age_s']}): skipped")
        if age < -settings["max_image_age_s"]:
            return self._skip(f"frame stamped {-age:.2f} s in the future: skipped")
        try:
            image = image_to_rgb(frame.encoding, frame.height, frame.width, frame.step, frame.data)
        except ImageConversionError as error:
            return self._skip(f"frame dropped: {error}")
        metadata = policy.metadata  # the policy takes RGB and applies the checkpoint's channel order itself
        joints = None
        if metadata.proprio_dim:
            joints = self._joint_states.at(stamp)
            if joints is None:
                return self._skip("no joint state near the frame's stamp: not decoding")
        decode = DecodeSettings.from_parameters(settings["decoding_mode"], settings["early_exit_steps"],
                                                settings["init_strategy"], settings["fused_prefill"],
                                                settings["keep_final_prefix"])
        steps_executed = None  # warm start: chunk steps the arm has executed since the last frame
        if self._previous_stamp is not None:
            steps_executed = max(0, round((stamp - self._previous_stamp) / metadata.dt))
        self._previous_stamp = stamp
        pin_steps = settings["prefix_pin_steps"] if steps_executed is not None else 0
        output = policy.predict(image, joints, instruction, decode, steps_executed=steps_executed, pin_steps=pin_steps)
        stats = output.stats
        self._sequence += 1
        msg = ActionTokens()
        msg.header = frame.header
        msg.sequence = self._sequence
        msg.checkpoint_id = metadata.checkpoint_id
        msg.instruction = instruction
        msg.token_ids = [int(t) for t in output.tokens.tolist()]
        msg.chunk_length = metadata.chunk_len
        msg.action_dims = metadata.action_dims
        msg.step_dt = float(metadata.dt)
        msg.decoding_mode = decode.mode
        msg.iterations = stats.iterations
        msg.forward_passes = stats.forward_passes
        msg.converged = bool(stats.converged)
        msg.early_exit_steps = decode.early_exit_steps or 0
        msg.decode_time_ms = float(stats.wall_time_ms)
        self.publisher.publish(msg)
        with self._lock:
            self._last_stats = stats
            self._last_publish_time = time.monotonic()

    def destroy_node(self) -> None:
        self._stopping.set()
        with self._frame_ready:
            self._frame_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, args, description=__doc__, params=PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
