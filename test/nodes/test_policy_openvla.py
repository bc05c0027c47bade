"""The policy node over real DDS on an imported OpenVLA-layout checkpoint: frames in, ActionTokens out."""

from __future__ import annotations

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from ceed_vla_ros.image_conversion import rgb_to_image_fields
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC

TOWERS = ({"embed_dim": 16, "depth": 2, "num_heads": 2}, {"embed_dim": 16, "depth": 2, "num_heads": 2})


def test_policy_node_publishes_the_openvla_checkpoints_action_tokens(tmp_path, ros_node, start_node, wait_until):
    from ceed_vla_ros.backends.openvla import build_tiny_openvla_folder, import_openvla
    from ceed_vla_ros.checkpoint import load_checkpoint
    from ceed_vla_ros.decoding import DecodeSettings
    from ceed_vla_ros.policy import CeedVlaPolicy

    source = build_tiny_openvla_folder(tmp_path / "tiny-openvla", instructions=["pick up the block"], hidden_size=32,
                                       num_layers=1, num_heads=2, towers=TOWERS, image_size=56)
    import_openvla(source, tmp_path / "models", "ovla", action_space="joint_delta", dt=0.2)
    process = start_node("policy_node", [
        "-r", "__node:=policy_openvla", "-p", f"model_dir:={tmp_path / 'models'}", "-p", "checkpoint:=ovla",
        "-p", "decoding_mode:=jacobi", "-p", "instruction:=pick up the block", "-p", "image_topic:=/ovla/image",
    ])
    frame = np.random.default_rng(5).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    checkpoint = load_checkpoint(tmp_path / "models", "ovla")
    expected = CeedVlaPolicy(checkpoint, DecodeSettings("ar")).predict(frame, None, "pick up the block")
    received: list[ActionTokens] = []
    ros_node.create_subscription(ActionTokens, ACTIONS_TOPIC, received.append, 10)
    images = ros_node.create_publisher(Image, "/ovla/image", qos_profile_sensor_data)

    def publish() -> bool:
        msg = Image(**rgb_to_image_fields(frame))
        msg.header.stamp = ros_node.get_clock().now().to_msg()
        images.publish(msg)
        return any(m.checkpoint_id == checkpoint.metadata.checkpoint_id for m in received)

    assert wait_until(publish, 60.0), process.output()
    message = next(m for m in received if m.checkpoint_id == checkpoint.metadata.checkpoint_id)
    assert (message.chunk_length, message.action_dims) == (1, 7)
    assert list(message.token_ids) == expected.tokens.tolist()  # Jacobi on the node == AR here
    assert all(31744 <= t < 32000 for t in message.token_ids)
    assert not list(source.glob("REMOTE_CODE_RAN_*"))
