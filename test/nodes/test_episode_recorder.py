"""The episode recorder over real DDS: start / stop saves, discard drops, state aligned to the image
stamp, and kill -9 mid-episode leaves a readable dataset holding every saved episode."""

from __future__ import annotations

import signal
import time

import numpy as np
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from ceed_vla_ros.datasets import LeRobotSource
from ceed_vla_ros.datasets.lerobot import LeRobotDataset
from ceed_vla_ros.nodes.interfaces import FORWARD_COMMAND_TOPIC, JOINT_STATES_TOPIC
from ceed_vla_ros.nodes.rclpy_compat import call_service

JOINTS = ["a", "b"]
CAMERA = "/test_recorder/image"


class Teleop:
    """Camera at 20 Hz (pixel = frame count), joint states at 50 Hz (a = clock s mod 100, b = -a), commands at 25 Hz."""

    def __init__(self, node) -> None:
        self.node = node
        self.count = 0
        self.camera = node.create_publisher(Image, CAMERA, 10)
        self.joints = node.create_publisher(JointState, JOINT_STATES_TOPIC, 10)
        self.commands = node.create_publisher(Float64MultiArray, FORWARD_COMMAND_TOPIC, 10)
        node.create_timer(0.05, self._image)
        node.create_timer(0.02, self._joint_state)
        node.create_timer(0.04, lambda: self.commands.publish(Float64MultiArray(data=[1.0, 2.0])))

    def _now(self):
        return self.node.get_clock().now()

    def _image(self) -> None:
        self.count += 1
        msg = Image(height=4, width=6, encoding="rgb8", step=18, data=bytes([self.count % 256]) * 72)
        msg.header.stamp = self._now().to_msg()
        self.camera.publish(msg)

    def _joint_state(self) -> None:
        now = self._now()
        t = (now.nanoseconds * 1e-9) % 100
        msg = JointState(name=["b", "a"], position=[-t, t])
        msg.header.stamp = now.to_msg()
        self.joints.publish(msg)


_CLIENTS: dict = {}


def _call(node, name: str) -> Trigger.Response:
    """One client per service for the whole test (a second client of the same service can miss its response)."""
    if (node, name) not in _CLIENTS:
        _CLIENTS[(node, name)] = node.create_client(Trigger, f"/episode_recorder/{name}")
    client = _CLIENTS[(node, name)]
    assert client.wait_for_service(timeout_sec=20.0), f"{name} service not found"
    response = call_service(client, Trigger.Request(), 10.0)
    assert response is not None, f"{name}: no response"
    return response


def test_record_discard_and_kill_mid_episode(start_node, ros_node, tmp_path, wait_until):
    dataset_dir = tmp_path / "recorded"
    Teleop(ros_node)
    recorder = start_node(
        "episode_recorder",
        [
            "-r",
            "__node:=episode_recorder",
            "-p",
            f"dataset_dir:={dataset_dir}",
            "-p",
            f"image_topic:={CAMERA}",
            "-p",
            "joint_names:=[a, b]",
            "-p",
            "fps:=10",
            "-p",
            "instruction:=wave the arm",
        ],
    )
    saved = []
    for _ in range(2):
        assert _call(ros_node, "start_episode").success
        time.sleep(1.2)
        response = _call(ros_node, "stop_episode")
        assert response.success, response.message
        saved.append(response.message)
    assert recorder.alive(), recorder.output()
    assert not _call(ros_node, "stop_episode").success, recorder.output()  # nothing running
    assert _call(ros_node, "start_episode").success
    time.sleep(0.6)
    assert "discarded" in _call(ros_node, "discard_episode").message
    assert _call(ros_node, "start_episode").success
    time.sleep(1.0)
    recorder.stop(signal.SIGKILL)  # mid-episode
    assert recorder.process.returncode == -signal.SIGKILL

    dataset = LeRobotDataset(dataset_dir)
    assert len(dataset) == 2 and dataset.tasks == ["wave the arm"], saved
    for i in range(2):
        episode = LeRobotSource(dataset_dir)[i]
        assert 6 <= episode.num_steps <= 14, saved  # ~1.2 s at 10 Hz
        # state at the IMAGE stamp: a = b * -1 = stamp mod 100 (float32), frames 0.1 s apart
        np.testing.assert_allclose(episode.joint_positions[:, 0], -episode.joint_positions[:, 1], atol=1e-4)
        steps = np.diff(episode.joint_positions[:, 0])
        assert np.all(np.abs(steps - 0.1) < 0.06), steps
        np.testing.assert_allclose(episode.joint_target, np.tile([1.0, 2.0], (episode.num_steps, 1)))
        pixels = episode.images[:, 0, 0, 0].astype(int)
        assert np.all(np.diff(pixels) > 0)  # a newer camera frame every tick, in order
