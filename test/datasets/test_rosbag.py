"""A small rosbag2 written here (mcap and sqlite3) -> LeRobot, with the alignment rule checked frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from ceed_vla_ros.datasets import FeatureMapping, LeRobotSource
from ceed_vla_ros.datasets.align import resample
from ceed_vla_ros.datasets.lerobot import LeRobotDataset
from ceed_vla_ros.datasets.rosbag import import_bags
from ceed_vla_ros.tools import cli

JOINTS = ["j1", "j2"]


def _write_bag(path, storage: str, t0: float = 100.0) -> None:
    """Camera at 20 Hz (frame i filled with value i), joint states at 50 Hz (j1 = t - t0, j2 = 2 (t - t0),
    joints listed in reverse), commands at 25 Hz (j1 = 10 + (t - t0)) as Float64MultiArray."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.LATEST)
    T = ts.types
    stamp = lambda t: T["builtin_interfaces/msg/Time"](sec=int(t), nanosec=int(round((t - int(t)) * 1e9)))  # noqa: E731
    header = lambda t: T["std_msgs/msg/Header"](stamp=stamp(t), frame_id="cam")  # noqa: E731
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    messages = []
    for i in range(40):  # 2 s of camera
        t = t0 + i / 20
        data = np.full((8, 12, 3), i, dtype=np.uint8)
        msg = T["sensor_msgs/msg/Image"](
            header=header(t), height=8, width=12, encoding="rgb8", is_bigendian=0, step=36, data=data.ravel()
        )
        messages.append(("/camera/image_raw", "sensor_msgs/msg/Image", t + 0.01, msg))
    for i in range(100):
        t = t0 + i / 50
        msg = T["sensor_msgs/msg/JointState"](
            header=header(t),
            name=["j2", "j1"],
            position=np.array([2 * (t - t0), t - t0]),
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
        messages.append(("/joint_states", "sensor_msgs/msg/JointState", t + 0.002, msg))
    layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    for i in range(50):
        t = t0 + i / 25
        msg = T["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.array([10 + (t - t0), 20.0]))
        messages.append(("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray", t, msg))
    messages.sort(key=lambda m: m[2])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for topic, kind, received, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, kind, typestore=ts)
            writer.write(connections[topic], int(round(received * 1e9)), ts.serialize_cdr(msg, kind))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_to_lerobot(tmp_path, storage):
    bag = tmp_path / f"bag_{storage}"
    _write_bag(bag, storage)
    dataset = import_bags([bag], tmp_path / "ds", image_topic="/camera/image_raw", joints=JOINTS, fps=10, task="wave")
    assert dataset.version == "v3.0" and len(dataset) == 1 and dataset.tasks == ["wave"]
    frames = dataset.episode_frames(0)
    state, action = frames["observation.state"], frames["action"]
    # ticks at 100.0, 100.1, ... 101.9 s: frame = the camera frame at the tick (value 2k), state at its stamp
    assert len(state) == 20
    ticks = np.arange(20) / 10
    np.testing.assert_allclose(state[:, 0], ticks, atol=1e-5)  # j1 = t - t0, reordered from the message
    np.testing.assert_allclose(state[:, 1], 2 * ticks, atol=1e-5)
    np.testing.assert_allclose(action[:, 0], 10 + np.floor(ticks * 25 + 1e-6) / 25, atol=1e-5)  # newest command
    images = dataset.episode_images(0, "observation.image")
    assert images.shape == (20, 8, 12, 3)
    np.testing.assert_array_equal(images[:, 0, 0, 0], 2 * np.arange(20))
    episode = LeRobotSource(tmp_path / "ds", FeatureMapping(image_size=8))[0]  # non-square: cropped to 8 x 8
    assert episode.images.shape == (20, 8, 8, 3) and episode.joint_names == tuple(JOINTS)


def test_import_bag_command_and_errors(tmp_path, capsys):
    bag = tmp_path / "bag"
    _write_bag(bag, "mcap")
    common = ["import-bag", str(bag), "--image-topic", "/camera/image_raw", "--joints", *JOINTS, "--task", "wave"]
    assert cli.main([*common, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "a"), "--append"]) == 0
    assert len(LeRobotDataset(tmp_path / "a")) == 2
    assert cli.main([*common, "--out", str(tmp_path / "a")]) == 1  # exists, no --append
    assert (
        cli.main(
            [
                "import-bag",
                str(bag),
                "--image-topic",
                "/nope",
                "--joints",
                *JOINTS,
                "--task",
                "x",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 1
    )
    assert "no topic /nope" in capsys.readouterr().out


def test_resample_drops_stale_images():
    images = [(0.0, np.zeros((2, 2, 3), np.uint8)), (2.0, np.ones((2, 2, 3), np.uint8))]
    joints = [(t, np.array([t])) for t in np.arange(0, 2.01, 0.05)]
    commands = [(0.0, np.array([1.0]))]
    out = resample(images, joints, commands, fps=2, max_image_age_s=0.5)
    # ticks 0, 0.5, 1.0, 1.5, 2.0: 0.5 is exactly max age (kept); 1.0 and 1.5 are stale
    assert out.image_stamps == [0.0, 0.0, 2.0] and out.dropped["stale_image"] == 2
