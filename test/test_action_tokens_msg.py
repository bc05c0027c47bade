"""ActionTokens over real DDS between two processes: every field survives the trip."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import rclpy
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

import ceed_vla_ros
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC

# One value per field, none of them a default, so a field that is dropped or mangled shows.
EXPECTED = {
    "header": {"stamp": {"sec": 1764505655, "nanosec": 123456789}, "frame_id": "wrist_camera"},
    "sequence": 2**40 + 7,
    "checkpoint_id": "sim_student@3f9a2c1d",
    "instruction": "reach the red cube",
    "token_ids": [31999 - i for i in range(35)],
    "chunk_length": 5,
    "action_dims": 7,
    "step_dt": 0.1,
    "decoding_mode": "early_exit",
    "iterations": 3,
    "forward_passes": 4,
    "converged": True,
    "early_exit_steps": 3,
    "decode_time_ms": 12.5,
}

PUBLISHER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import rclpy
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from ceed_vla_ros.msg import ActionTokens
    from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC

    fields = json.loads(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node("action_tokens_test_publisher")
    qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.VOLATILE)
    publisher = node.create_publisher(ActionTokens, ACTIONS_TOPIC, qos)
    msg = ActionTokens()
    msg.header.stamp.sec = fields["header"]["stamp"]["sec"]
    msg.header.stamp.nanosec = fields["header"]["stamp"]["nanosec"]
    msg.header.frame_id = fields["header"]["frame_id"]
    for name, value in fields.items():
        if name != "header":
            setattr(msg, name, value)
    deadline = time.monotonic() + 15.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    for _ in range(50):  # the subscriber exits the test as soon as one message arrived
        publisher.publish(msg)
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def message_to_plain(msg: ActionTokens) -> dict:
    plain = {}
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        if name == "header":
            value = {
                "stamp": {"sec": value.stamp.sec, "nanosec": value.stamp.nanosec},
                "frame_id": value.frame_id,
            }
        elif name == "token_ids":
            value = [int(v) for v in value]
        plain[name] = value
    return plain


def test_generated_messages_live_inside_the_python_package():
    assert ActionTokens.__module__.startswith("ceed_vla_ros.msg")
    assert ceed_vla_ros.__version__
    assert ActionTokens.MODE_EARLY_EXIT == "early_exit"
    assert {ActionTokens.MODE_AR, ActionTokens.MODE_JACOBI} == {"ar", "jacobi"}


def test_expectations_cover_every_field():
    assert set(EXPECTED) == set(ActionTokens.get_fields_and_field_types())


def test_action_tokens_cross_processes_intact(wait_until):
    received: list[ActionTokens] = []
    rclpy.init()
    try:
        node = rclpy.create_node("action_tokens_test_subscriber")
        qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.VOLATILE)
        node.create_subscription(ActionTokens, ACTIONS_TOPIC, received.append, qos)
        # -P: the child must import the installed package, not a source tree in the working directory
        publisher = subprocess.Popen([sys.executable, "-P", "-c", PUBLISHER_SCRIPT, json.dumps(EXPECTED)],
                                     stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: rclpy.spin_once(node, timeout_sec=0.05) or bool(received)
                       or publisher.poll() is not None, 20.0)
        finally:
            publisher.kill()
            _, publisher_errors = publisher.communicate(timeout=10)
        node.destroy_node()
    finally:
        rclpy.shutdown()
    assert received, f"no ActionTokens message arrived within 20 s; publisher said: {publisher_errors}"
    plain = message_to_plain(received[0])
    assert plain.pop("step_dt") == EXPECTED["step_dt"]
    assert abs(plain.pop("decode_time_ms") - EXPECTED["decode_time_ms"]) < 1e-6  # float32 field
    expected = {k: v for k, v in EXPECTED.items() if k not in ("step_dt", "decode_time_ms")}
    assert plain == expected
