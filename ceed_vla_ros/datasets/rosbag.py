"""``ceed-vla import-bag``: rosbag2 recordings (mcap or sqlite3) -> a LeRobot v3.0 dataset.

Read with the pure-Python ``rosbags`` library (no ROS install needed). One bag = one episode.
Topics:

* ``--image-topic``: ``sensor_msgs/msg/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or
  ``sensor_msgs/msg/CompressedImage`` (JPEG/PNG); time = ``header.stamp``;
* ``--joint-state-topic`` (``/joint_states``): ``sensor_msgs/msg/JointState``, the ``--joints``
  in that order; time = ``header.stamp``;
* ``--action-topic``: the commands, as ``std_msgs/msg/Float64MultiArray`` (a forward position
  controller's), ``sensor_msgs/msg/JointState`` (a leader arm) or
  ``trajectory_msgs/msg/JointTrajectory`` (its first point); time = when the bag received it
  (commands carry no usable stamp).

The streams are resampled to ``--fps`` with :func:`ceed_vla_ros.datasets.align.resample` (the
recorder's and the policy's rule: image = newest frame, state at the image stamp, action =
newest command). Features: ``observation.image``, ``observation.state``, ``action`` (absolute joint
targets).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ceed_vla_ros.datasets.align import resample
from ceed_vla_ros.datasets.lerobot import LeRobotDataset, LeRobotWriter

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ACTION_TYPES = ("std_msgs/msg/Float64MultiArray", "sensor_msgs/msg/JointState", "trajectory_msgs/msg/JointTrajectory")


def _stamp(msg) -> float:
    return float(msg.header.stamp.sec) + 1e-9 * float(msg.header.stamp.nanosec)


def _pick(names: Sequence[str], msg_names: Sequence[str], values: Sequence[float], where: str) -> np.ndarray | None:
    position = {n: i for i, n in enumerate(msg_names)}
    if len(values) != len(msg_names) or not all(n in position for n in names):
        return None
    return np.array([values[position[n]] for n in names], dtype=np.float64)


def read_bag(
    path: str | Path,
    image_topic: str,
    joint_state_topic: str,
    action_topic: str,
    joints: Sequence[str],
) -> tuple[list, list, list]:
    """(images, joint states, commands): lists of (time s, array) from the bag at ``path``."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from ceed_vla_ros.image_conversion import compressed_to_rgb, image_to_rgb

    typestore = get_typestore(Stores.LATEST)
    images, states, commands = [], [], []
    with Reader(Path(path)) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        for topic, allowed in (
            (image_topic, IMAGE_TYPES),
            (joint_state_topic, ("sensor_msgs/msg/JointState",)),
            (action_topic, ACTION_TYPES),
        ):
            if topic not in by_topic:
                raise ValueError(f"{path}: no topic {topic} (topics: {', '.join(sorted(by_topic))})")
            if by_topic[topic].msgtype not in allowed:
                raise ValueError(f"{path}: {topic} is {by_topic[topic].msgtype}, expected {' or '.join(allowed)}")
        wanted = [by_topic[t] for t in (image_topic, joint_state_topic, action_topic)]
        skipped = 0
        for connection, timestamp, raw in reader.messages(connections=wanted):
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            if connection.topic == image_topic:
                if connection.msgtype.endswith("CompressedImage"):
                    rgb = compressed_to_rgb(msg.format, bytes(msg.data))
                else:
                    rgb = image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data))
                images.append((_stamp(msg), rgb))
            if connection.topic == joint_state_topic:
                value = _pick(joints, msg.name, msg.position, str(path))
                if value is None:
                    skipped += 1
                else:
                    states.append((_stamp(msg), value))
            if connection.topic == action_topic:
                received = timestamp * 1e-9
                if connection.msgtype.endswith("Float64MultiArray"):
                    value = np.asarray(msg.data, dtype=np.float64)
                    value = value if len(value) == len(joints) else None
                elif connection.msgtype.endswith("JointState"):
                    value = _pick(joints, msg.name, msg.position, str(path))
                else:
                    value = (
                        None
                        if not len(msg.points)
                        else _pick(joints, msg.joint_names, msg.points[0].positions, str(path))
                    )
                if value is None:
                    skipped += 1
                else:
                    commands.append((received, value))
    if skipped:
        print(f"{path}: {skipped} joint-state / command messages without the joints {list(joints)} skipped")
    return images, states, commands


def import_bags(
    bags: Sequence[str | Path],
    out: str | Path,
    *,
    image_topic: str,
    joint_state_topic: str = "/joint_states",
    action_topic: str = "/forward_position_controller/commands",
    joints: Sequence[str],
    fps: int = 10,
    task: str,
    max_image_age_s: float = 0.5,
    video: str | None = None,
    append: bool = False,
) -> LeRobotDataset:
    writer = None
    for bag in bags:
        images, states, commands = read_bag(bag, image_topic, joint_state_topic, action_topic, joints)
        frames = resample(images, states, commands, fps, max_image_age_s)
        if not len(frames):
            raise ValueError(
                f"{bag}: no frame could be aligned ({len(images)} images, {len(states)} joint states, "
                f"{len(commands)} commands; dropped {frames.dropped})"
            )
        arrays = frames.arrays()
        if writer is None:
            height, width = arrays["images"].shape[1:3]
            names = list(joints)
            features = {
                "observation.image": {
                    "dtype": "video" if video else "image",
                    "shape": [height, width, 3],
                    "names": ["height", "width", "channels"],
                },
                "observation.state": {"dtype": "float32", "shape": [len(names)], "names": names},
                "action": {"dtype": "float32", "shape": [len(names)], "names": names},
            }
            writer = LeRobotWriter(out, fps=fps, features=features, video_codec=video or "h264", append=append)
        writer.add_episode(
            {"observation.image": arrays["images"], "observation.state": arrays["state"], "action": arrays["action"]},
            task,
            {"source": str(bag), "dropped_ticks": sum(frames.dropped.values())},
        )
        print(
            f"{bag}: episode {writer.num_episodes - 1}: {len(frames)} frames at {fps} Hz "
            f"from {len(images)} images, {len(states)} joint states, {len(commands)} commands; "
            f"dropped ticks {frames.dropped}"
        )
    if writer is None:
        raise ValueError("no bags given")
    writer.close()
    return LeRobotDataset(out)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", type=Path, nargs="+", help="rosbag2 folders (mcap or sqlite3); one episode each")
    parser.add_argument("--out", type=Path, required=True, help="LeRobot dataset folder (created, or --append)")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--joint-state-topic", default="/joint_states")
    parser.add_argument(
        "--action-topic",
        default="/forward_position_controller/commands",
        help="Float64MultiArray, JointState (leader arm) or JointTrajectory commands",
    )
    parser.add_argument("--joints", nargs="+", required=True, help="joint names, in the order of state and action")
    parser.add_argument("--fps", type=int, default=10, help="frame rate of the dataset (the policy's step rate)")
    parser.add_argument("--task", required=True, help="the instruction of these episodes")
    parser.add_argument("--max-image-age-s", type=float, default=0.5, help="drop ticks whose newest frame is older")
    parser.add_argument("--video", choices=("h264", "av1"), default=None, help="mp4 instead of PNG images")
    parser.add_argument("--append", action="store_true", help="add the episodes to an existing dataset")


def cli_main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        dataset = import_bags(
            args.bags,
            args.out,
            image_topic=args.image_topic,
            joint_state_topic=args.joint_state_topic,
            action_topic=args.action_topic,
            joints=args.joints,
            fps=args.fps,
            task=args.task,
            max_image_age_s=args.max_image_age_s,
            video=args.video,
            append=args.append,
        )
    except (ValueError, FileExistsError, OSError) as error:
        print(f"import-bag: {error}")
        return 1
    print(f"wrote {args.out}: {len(dataset)} episodes, {dataset.num_frames} frames in {time.perf_counter() - t0:.1f} s")
    return 0
