"""The policy node over real DDS: frames in, ActionTokens out, live parameters, refusals."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from ceed_vla_ros.image_conversion import rgb_to_image_fields
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC, INSTRUCTION_TOPIC, JOINT_STATES_TOPIC, POLICY_IMAGE_TOPIC
from ceed_vla_ros.nodes.rclpy_compat import call_service

REPO = Path(__file__).resolve().parents[2]
JOINTS = ["base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch"]


class Probe:
    def __init__(self, node) -> None:
        self.node = node
        self.actions: list[ActionTokens] = []
        self.sent_stamps: set[tuple[int, int]] = set()
        self.lock = threading.Lock()
        self.image_age_s = 0.0
        self.joint_positions = [0.1, -0.2, 0.3, 0.0]
        self.joint_stamp_offset_s = 0.0  # added to the next joint state's stamp, then reset
        self.image_publisher = node.create_publisher(Image, POLICY_IMAGE_TOPIC, qos_profile_sensor_data)
        self.joint_publisher = node.create_publisher(JointState, JOINT_STATES_TOPIC, 10)
        latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.instruction_publisher = node.create_publisher(String, INSTRUCTION_TOPIC, latched)
        node.create_subscription(ActionTokens, ACTIONS_TOPIC, self._on_actions, 10)
        node.create_timer(0.02, self._publish_joint_state)
        node.create_timer(0.1, self._publish_image)
        self.set_parameters = node.create_client(SetParameters, "/policy/set_parameters")
        self.image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def _on_actions(self, msg: ActionTokens) -> None:
        with self.lock:
            self.actions.append(msg)

    def _publish_joint_state(self) -> None:
        msg = JointState(name=JOINTS, position=list(self.joint_positions))
        stamp = self.node.get_clock().now().nanoseconds + int(self.joint_stamp_offset_s * 1e9)
        self.joint_stamp_offset_s = 0.0
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        self.joint_publisher.publish(msg)

    def _publish_image(self) -> None:
        stamp = self.node.get_clock().now().nanoseconds - int(self.image_age_s * 1e9)
        msg = Image(**rgb_to_image_fields(self.image))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        msg.header.frame_id = "front_camera"
        with self.lock:
            self.sent_stamps.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
        self.image_publisher.publish(msg)

    def count(self) -> int:
        with self.lock:
            return len(self.actions)

    def since(self, start: int) -> list[ActionTokens]:
        with self.lock:
            return self.actions[start:]

    def set(self, name: str, value) -> tuple[bool, str]:
        if isinstance(value, str):
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        elif isinstance(value, bool):
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        else:
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=parameter_value)])
        assert self.set_parameters.wait_for_service(timeout_sec=10.0)
        result = call_service(self.set_parameters, request, 10.0).results[0]
        return result.successful, result.reason


@pytest.fixture(scope="module")
def policy_process(tiny_model_dir, module_ros_node, module_start_node):
    """One policy process for the module (start-up loads torch: seconds); each test resets its settings."""
    process = module_start_node(
        "policy_node",
        [
            "-r",
            "__node:=policy",
            "--params-file",
            str(REPO / "config/sim_arm.yaml"),
            "-p",
            f"model_dir:={tiny_model_dir}",
            "-p",
            "checkpoint:=tiny_sim",
            "-p",
            "early_exit_steps:=2",
        ],
    )
    probe = Probe(module_ros_node)
    probe.instruction_publisher.publish(String(data="reach the red cube"))
    return process, probe


@pytest.fixture
def policy(policy_process, wait_until):
    process, probe = policy_process
    assert wait_until(lambda: probe.count() >= 2, 30.0), process.output()
    probe.image_age_s = 0.0
    probe.joint_positions = [0.1, -0.2, 0.3, 0.0]
    assert probe.set("decoding_mode", "early_exit")[0] and probe.set("early_exit_steps", 2)[0]
    assert probe.set("fused_prefill", False)[0] and probe.set("keep_final_prefix", False)[0]
    mark = probe.count()
    assert wait_until(lambda: any(m.iterations == 2 for m in probe.since(mark)), 10.0), process.output()
    return process, probe


def test_actions_carry_the_frame_stamp_the_chunk_and_the_decoding_statistics(policy):
    process, probe = policy
    msg = [m for m in probe.since(0) if m.iterations == 2][-1]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) in probe.sent_stamps
    assert msg.header.frame_id == "front_camera"
    assert msg.checkpoint_id.startswith("tiny_sim-")
    assert msg.instruction == "reach the red cube"
    assert (msg.chunk_length, msg.action_dims, len(msg.token_ids)) == (4, 4, 16)
    assert msg.step_dt == pytest.approx(0.1)
    assert (msg.decoding_mode, msg.early_exit_steps, msg.iterations, msg.forward_passes) == ("early_exit", 2, 2, 3)
    sequences = [m.sequence for m in probe.since(0)]
    assert sequences == sorted(set(sequences))


def test_early_exit_steps_set_live_changes_the_next_chunks(policy, wait_until):
    process, probe = policy
    assert probe.set("early_exit_steps", 1) == (True, "")
    mark = probe.count()
    assert wait_until(lambda: any(m.iterations == 1 for m in probe.since(mark)), 10.0)
    assert probe.set("decoding_mode", "ar")[0]
    mark = probe.count()
    assert wait_until(lambda: any(m.decoding_mode == "ar" for m in probe.since(mark)), 10.0)
    ar = [m for m in probe.since(mark) if m.decoding_mode == "ar"][0]
    assert (ar.forward_passes, ar.iterations, ar.converged, ar.early_exit_steps) == (16, 15, True, 0)


def test_fused_prefill_makes_early_exit_at_k_cost_k_forward_passes_and_ar_ignores_it(policy, wait_until):
    process, probe = policy
    assert probe.set("fused_prefill", True) == (True, "")
    assert probe.set("early_exit_steps", 1) == (True, "")
    mark = probe.count()
    assert wait_until(lambda: any(m.iterations == 1 for m in probe.since(mark)), 10.0), process.output()
    fused = [m for m in probe.since(mark) if m.iterations == 1][-1]
    assert (fused.decoding_mode, fused.early_exit_steps, fused.forward_passes) == ("early_exit", 1, 1)
    assert probe.set("decoding_mode", "ar")[0]
    mark = probe.count()
    assert wait_until(lambda: any(m.decoding_mode == "ar" for m in probe.since(mark)), 10.0)
    ar = [m for m in probe.since(mark) if m.decoding_mode == "ar"][0]
    assert (ar.forward_passes, ar.iterations) == (16, 15)


def test_kept_prefix_jacobi_over_dds_still_equals_ar(policy, wait_until):
    """Same frame and joints every time: greedy AR's chunk is the Jacobi fixed point, kept prefix or not."""
    process, probe = policy
    assert probe.set("decoding_mode", "ar")[0]
    mark = probe.count()
    assert wait_until(lambda: any(m.decoding_mode == "ar" for m in probe.since(mark)), 10.0)
    ar = [m for m in probe.since(mark) if m.decoding_mode == "ar"][-1]
    assert probe.set("keep_final_prefix", True)[0] and probe.set("decoding_mode", "jacobi")[0]
    mark = probe.count()
    assert wait_until(lambda: sum(m.decoding_mode == "jacobi" for m in probe.since(mark)) >= 2, 10.0)
    kept = [m for m in probe.since(mark) if m.decoding_mode == "jacobi"]
    assert all(m.converged for m in kept)
    assert all(list(m.token_ids) == list(ar.token_ids) for m in kept)


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("early_exit_steps", 0, "early_exit_steps"),
        ("early_exit_steps", 100000, "early_exit_steps"),
        ("decoding_mode", "beam_search", "not one of ar, jacobi, early_exit"),
        ("checkpoint", "../outside", "invalid checkpoint name"),
        ("checkpoint", "no_such_checkpoint", "missing"),
        ("instruction", "reach\x07 the red cube", "non-printable"),
        ("num_threads", 4, "read-only"),
        ("early_exit_steps", "three", "Wrong parameter type"),
        ("decoding_mode", 2, "Wrong parameter type"),
    ],
)
def test_invalid_parameters_are_rejected_with_a_reason_and_the_node_keeps_going(
    policy, wait_until, name, value, reason
):
    process, probe = policy
    successful, why = probe.set(name, value)
    assert not successful and reason in why, why
    mark = probe.count()
    assert wait_until(lambda: probe.count() > mark, 10.0), "no more actions after a rejected parameter"


def test_stale_frames_are_not_decoded(policy, wait_until):
    process, probe = policy
    probe.image_age_s = 5.0
    assert wait_until(lambda: "s old (max_image_age_s" in process.output(), 10.0), process.output()
    mark = probe.count()
    assert not wait_until(lambda: probe.count() > mark + 1, 1.5)
    probe.image_age_s = 0.0
    assert wait_until(lambda: probe.count() > mark + 1, 10.0)


def test_frames_from_the_future_are_not_decoded(policy, wait_until):
    process, probe = policy
    probe.image_age_s = -5.0  # stamped 5 s ahead of the clock
    assert wait_until(lambda: "in the future: skipped" in process.output(), 10.0), process.output()
    mark = probe.count()
    assert not wait_until(lambda: probe.count() > mark + 1, 1.5)


@pytest.mark.parametrize(
    "text, warning",
    [
        ("x" * 600, "longer than 512 characters"),
        ("reach the \x1b[31mred cube", "non-printable"),
    ],
)
def test_bad_instructions_on_the_topic_are_ignored(policy, wait_until, text, warning):
    process, probe = policy
    probe.instruction_publisher.publish(String(data=text))
    assert wait_until(lambda: warning in process.output(), 10.0), process.output()
    mark = probe.count()
    assert wait_until(lambda: probe.count() > mark + 1, 10.0)
    assert all(m.instruction == "reach the red cube" for m in probe.since(mark))


def test_an_empty_instruction_stops_decoding_until_one_arrives(policy, wait_until):
    process, probe = policy
    probe.instruction_publisher.publish(String(data="   "))
    assert wait_until(lambda: "no instruction yet" in process.output(), 10.0), process.output()
    mark = probe.count()
    assert not wait_until(lambda: probe.count() > mark + 1, 1.5)
    probe.instruction_publisher.publish(String(data="reach the red cube"))
    assert wait_until(lambda: probe.count() > mark + 1, 10.0)


def test_non_finite_joint_states_never_reach_the_model(policy, wait_until):
    process, probe = policy
    probe.joint_positions = [0.1, float("nan"), 0.3, float("inf")]
    assert wait_until(lambda: "non-finite positions: ignored" in process.output(), 10.0), process.output()
    # once the last finite sample is older than the lookup allows, frames are skipped, not decoded
    assert wait_until(lambda: "no joint state near the frame's stamp" in process.output(), 10.0), process.output()
    mark = probe.count()
    assert not wait_until(lambda: probe.count() > mark + 1, 1.5)
    probe.joint_positions = [0.1, -0.2, 0.3, 0.0]
    assert wait_until(lambda: probe.count() > mark + 1, 10.0)


def test_one_future_stamped_joint_state_does_not_stop_the_loop(policy, wait_until):
    process, probe = policy
    probe.joint_stamp_offset_s = 3600.0  # one sample an hour ahead: a clock step or a bad stamp
    assert wait_until(lambda: "joint-state history restarted" in process.output(), 10.0), process.output()
    mark = probe.count()
    assert wait_until(lambda: probe.count() > mark + 2, 10.0), process.output()


def test_a_bgr_checkpoint_gets_the_channels_evaluation_gives_it(spec_model_dir, ros_node, start_node, wait_until):
    """The node hands the policy RGB, as training and evaluation do; the checkpoint's channel order is
    applied once, in preprocessing (it was applied twice, and the flipped view crashed the decoder)."""
    from ceed_vla_ros.checkpoint import load_checkpoint
    from ceed_vla_ros.decoding import DecodeSettings
    from ceed_vla_ros.policy import CeedVlaPolicy

    process = start_node(
        "policy_node",
        [
            "-r",
            "__node:=policy_bgr",
            "-p",
            f"model_dir:={spec_model_dir}",
            "-p",
            "checkpoint:=bgr_crop",
            "-p",
            "decoding_mode:=ar",
            "-p",
            "instruction:=go",
            "-p",
            "image_topic:=/bgr_test/image",
        ],
    )
    frame = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = CeedVlaPolicy(load_checkpoint(spec_model_dir, "bgr_crop"), DecodeSettings("ar")).predict(
        frame, None, "go"
    )
    received: list[ActionTokens] = []
    ros_node.create_subscription(ActionTokens, ACTIONS_TOPIC, received.append, 10)
    images = ros_node.create_publisher(Image, "/bgr_test/image", qos_profile_sensor_data)

    def publish() -> bool:
        msg = Image(**rgb_to_image_fields(frame))
        msg.header.stamp = ros_node.get_clock().now().to_msg()
        images.publish(msg)
        return any(m.checkpoint_id.startswith("bgr_crop-") for m in received)

    assert wait_until(publish, 30.0), process.output()
    tokens = [m.token_ids for m in received if m.checkpoint_id.startswith("bgr_crop-")][0]
    assert list(tokens) == expected.tokens.tolist()
