"""A frame whose decoding fails is reported and the next frames are decoded (the worker survives).

The node runs in this process (its own rclpy context and executor) so that the test can make one
decode fail; it talks to the probe node over real DDS as in every other node test.
"""

from __future__ import annotations

import threading

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from ceed_vla_ros.image_conversion import rgb_to_image_fields
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC, JOINT_STATES_TOPIC, POLICY_IMAGE_TOPIC
from ceed_vla_ros.nodes.policy_node import PolicyNode

JOINTS = ["base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch"]


def test_a_failing_decode_is_reported_and_decoding_goes_on(tiny_model_dir, ros_node, wait_until):
    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    node = PolicyNode(context=context, parameter_overrides=[
        Parameter("model_dir", value=str(tiny_model_dir)), Parameter("checkpoint", value="tiny_sim"),
        Parameter("instruction", value="reach the red cube")])
    failures = {"left": 3}
    predict = node._policy.predict

    def failing_predict(*args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("injected decode failure")
        return predict(*args, **kwargs)

    node._policy.predict = failing_predict
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    actions, statuses, lock = [], [], threading.Lock()
    ros_node.create_subscription(ActionTokens, ACTIONS_TOPIC, lambda m: actions.append(m), 10)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        with lock:
            statuses.extend(s for s in msg.status if s.name == "ceed_vla_ros: policy")

    ros_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    images = ros_node.create_publisher(Image, POLICY_IMAGE_TOPIC, qos_profile_sensor_data)
    joints = ros_node.create_publisher(JointState, JOINT_STATES_TOPIC, 10)
    image = np.zeros((64, 64, 3), np.uint8)

    def publish() -> None:
        now = ros_node.get_clock().now().to_msg()
        joints.publish(JointState(name=JOINTS, position=[0.0] * 4, header=dict_header(now)))
        images.publish(Image(header=dict_header(now), **rgb_to_image_fields(image)))

    timer = ros_node.create_timer(0.05, publish)
    try:
        assert wait_until(lambda: failures["left"] == 0 and len(actions) >= 3, 30.0), (failures, len(actions))
        assert wait_until(lambda: any(s.level == DiagnosticStatus.ERROR for s in list(statuses)), 5.0), statuses
        error = next(s for s in list(statuses) if s.level == DiagnosticStatus.ERROR)
        assert "injected decode failure" in error.message
        values = {kv.key: kv.value for kv in list(statuses)[-1].values}
        assert int(values["decode_errors"]) == 3
    finally:
        ros_node.destroy_timer(timer)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        spinner.join(timeout=5)


def dict_header(stamp):
    from std_msgs.msg import Header

    return Header(stamp=stamp, frame_id="camera")
