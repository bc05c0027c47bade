"""The camera subscriber over real DDS: conversion, crop/resize to the checkpoint, stamps, bad frames."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from ceed_vla_ros.image_conversion import image_to_rgb, rgb_to_image_fields
from ceed_vla_ros.nodes.interfaces import POLICY_IMAGE_TOPIC

REPO = Path(__file__).resolve().parents[2]


class Probe:
    def __init__(self, node) -> None:
        self.node = node
        self.received: list[Image] = []
        self.lock = threading.Lock()
        self.publisher = node.create_publisher(Image, "/test_camera/image_raw", qos_profile_sensor_data)
        node.create_subscription(Image, POLICY_IMAGE_TOPIC, self._on_image, qos_profile_sensor_data)

    def _on_image(self, msg: Image) -> None:
        with self.lock:
            self.received.append(msg)

    def frames(self) -> list[Image]:
        with self.lock:
            return list(self.received)

    def send(self, stamp_sec: int, **fields) -> None:
        msg = Image(**fields)
        msg.header.stamp.sec = stamp_sec
        msg.header.frame_id = "cam"
        self.publisher.publish(msg)


@pytest.fixture(scope="module")
def camera(tiny_model_dir, module_ros_node, module_start_node, ):
    process = module_start_node("camera_subscriber", [
        "-r", "__node:=camera_subscriber", "--params-file", str(REPO / "config/sim_arm.yaml"),
        "-p", f"model_dir:={tiny_model_dir}", "-p", "checkpoint:=tiny_sim", "-r", "image:=/test_camera/image_raw"])
    return process, Probe(module_ros_node)


def send_until_received(probe, wait_until, stamp_sec: int, **fields) -> Image | None:
    """Publish (repeatedly, discovery may still be running) until the frame with this stamp is out."""
    def arrived():
        probe.send(stamp_sec, **fields)
        return any(f.header.stamp.sec == stamp_sec for f in probe.frames())
    if wait_until(arrived, 20.0):
        return [f for f in probe.frames() if f.header.stamp.sec == stamp_sec][0]
    return None


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_frames_are_resized_to_the_checkpoint_size_with_their_stamp(camera, wait_until, encoding):
    process, probe = camera
    # a 96 x 128 image: left half red, right half blue (in RGB terms)
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:, :64, 0] = 255
    rgb[:, 64:, 2] = 255
    stamp = 1000 + len(encoding) + (encoding == "bgr8")
    out = send_until_received(probe, wait_until, stamp, **rgb_to_image_fields(rgb, encoding))
    assert out is not None, process.output()
    assert (out.encoding, out.height, out.width, out.header.frame_id) == ("rgb8", 64, 64, "cam")
    image = image_to_rgb(out.encoding, out.height, out.width, out.step, out.data)
    assert image[:, :30, 0].min() > 200 and image[:, :30, 2].max() < 50  # left still red
    assert image[:, 34:, 2].min() > 200 and image[:, 34:, 0].max() < 50  # right still blue


def test_mono_frames_are_converted(camera, wait_until):
    process, probe = camera
    out = send_until_received(probe, wait_until, 2000, encoding="mono8", height=64, width=64, step=64,
                              data=bytes([77]) * 64 * 64)
    assert out is not None, process.output()
    assert set(np.frombuffer(bytes(out.data), np.uint8).tolist()) == {77}


def test_bad_frames_are_dropped_with_a_warning_and_the_node_keeps_running(camera, wait_until):
    process, probe = camera
    probe.send(3000, encoding="yuv422", height=4, width=4, step=8, data=bytes(32))
    probe.send(3001, encoding="rgb8", height=4, width=4, step=12, data=bytes(5))
    assert wait_until(lambda: "unsupported encoding 'yuv422'" in process.output(), 10.0), process.output()
    good = send_until_received(probe, wait_until, 3002, **rgb_to_image_fields(np.zeros((8, 8, 3), np.uint8)))
    assert good is not None and process.alive()
    assert not any(f.header.stamp.sec in (3000, 3001) for f in probe.frames())


@pytest.mark.parametrize("checkpoint", ["rgb_plain", "bgr_crop"])
def test_ros_path_gives_the_pixel_values_training_and_evaluation_give(spec_model_dir, ros_node, start_node,
                                                                      wait_until, checkpoint):
    """camera node (crop + resize) -> /ceed_vla/image -> the policy's preprocessing == preprocessing
    the raw camera frame directly (what training and evaluation do), at several camera sizes."""
    from ceed_vla_ros.metadata import load_metadata
    from ceed_vla_ros.policy import preprocess_images

    topic = f"/spec_camera_{checkpoint}/image_raw"
    process = start_node("camera_subscriber", ["-r", "__node:=camera_subscriber", "-p", f"model_dir:={spec_model_dir}",
                                               "-p", f"checkpoint:={checkpoint}", "-r", f"image:={topic}"])
    probe = Probe(ros_node)
    probe.publisher = ros_node.create_publisher(Image, topic, qos_profile_sensor_data)
    spec = load_metadata(spec_model_dir, checkpoint).image
    rng = np.random.default_rng(0)
    for index, (height, width, encoding) in enumerate([(48, 64, "rgb8"), (120, 90, "bgr8"), (32, 32, "rgb8"),
                                                       (20, 24, "rgb8")]):
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        out = send_until_received(probe, wait_until, 5000 + index, **rgb_to_image_fields(frame, encoding))
        assert out is not None, process.output()
        received = image_to_rgb(out.encoding, out.height, out.width, out.step, out.data)
        ros_path = preprocess_images(received, spec)
        direct = preprocess_images(frame, spec)
        assert ros_path.shape == direct.shape == (1, 3, spec.height, spec.width)
        assert torch_equal(ros_path, direct), (height, width, encoding)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


# -- compressed camera streams (image_transport's `compressed` transport) ---------------------------
class CompressedProbe(Probe):
    def __init__(self, node, topic: str) -> None:
        from sensor_msgs.msg import CompressedImage

        super().__init__(node)
        self.publisher = node.create_publisher(CompressedImage, topic, qos_profile_sensor_data)

    def send(self, stamp_sec: int, **fields) -> None:
        from sensor_msgs.msg import CompressedImage

        msg = CompressedImage(**fields)
        msg.header.stamp.sec = stamp_sec
        msg.header.frame_id = "wrist_cam"
        self.publisher.publish(msg)


def encoded(rgb: np.ndarray, ext: str) -> bytes:
    import cv2

    ok, data = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return data.tobytes()


def test_compressed_jpeg_and_png_frames_become_the_same_rgb8_frames(tiny_model_dir, ros_node, start_node,
                                                                     wait_until):
    """image_transport:=compressed subscribes <remapped base>/compressed, decodes JPEG and PNG, keeps the
    header, and drops undecodable data without stopping."""
    process = start_node("camera_subscriber", [
        "-r", "__node:=camera_subscriber", "--params-file", str(REPO / "config/sim_arm.yaml"),
        "-p", f"model_dir:={tiny_model_dir}", "-p", "checkpoint:=tiny_sim", "-p", "image_transport:=compressed",
        "-r", "image:=/test_compressed_camera/image_raw"])
    probe = CompressedProbe(ros_node, "/test_compressed_camera/image_raw/compressed")
    rgb = np.zeros((96, 128, 3), np.uint8)  # left half red, right half blue
    rgb[:, :64, 0] = 255
    rgb[:, 64:, 2] = 255
    for stamp, ext, format_ in [(7001, ".jpg", "rgb8; jpeg compressed bgr8"), (7002, ".png", "png")]:
        out = send_until_received(probe, wait_until, stamp, format=format_, data=encoded(rgb, ext))
        assert out is not None, process.output()
        assert (out.encoding, out.height, out.width, out.header.frame_id) == ("rgb8", 64, 64, "wrist_cam")
        image = image_to_rgb(out.encoding, out.height, out.width, out.step, out.data)
        assert image[:, :30, 0].min() > 200 and image[:, :30, 2].max() < 50, ext  # left still red
        assert image[:, 34:, 2].min() > 200 and image[:, 34:, 0].max() < 50, ext  # right still blue
    probe.send(7003, format="jpeg", data=b"\xff\xd8 not a jpeg")
    probe.send(7004, format="rgb8; tiff compressed bgr8", data=encoded(rgb, ".png"))
    assert wait_until(lambda: "could not be decoded" in process.output(), 10.0), process.output()
    assert wait_until(lambda: "unsupported compressed format" in process.output(), 10.0), process.output()
    good = send_until_received(probe, wait_until, 7005, format="png", data=encoded(rgb, ".png"))
    assert good is not None and process.alive()
    assert not any(f.header.stamp.sec in (7003, 7004) for f in probe.frames())
