"""sensor_msgs/Image <-> numpy without ROS types: the checks and conversions the camera node needs.

The functions take the Image fields (encoding, height, width, step, data) so that they are tested
without DDS; the node passes ``msg.encoding, msg.height, ...`` straight in. Where the ROS 2
``cv_bridge`` is importable the node may use it instead; this path gives the same RGB array.
"""

from __future__ import annotations

import numpy as np

# encoding -> (channels, index order that turns it into RGB); mono is replicated to 3 channels.
SUPPORTED_ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
MAX_SIDE = 8192


class ImageConversionError(ValueError):
    """The image cannot be used; the message says why (the node logs it and drops the frame)."""


def image_to_rgb(encoding: str, height: int, width: int, step: int, data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """An (height, width, 3) uint8 RGB copy of an 8-bit sensor_msgs/Image, or ImageConversionError."""
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, order = SUPPORTED_ENCODINGS[encoding]
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ImageConversionError(f"image size {width}x{height} outside 1..{MAX_SIDE} pixels per side")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageConversionError(f"step {step} is shorter than a row of {width} {encoding} pixels ({row_bytes} bytes)")
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).reshape(-1)
    if buffer.size != step * height:
        raise ImageConversionError(f"data holds {buffer.size} bytes, step * height = {step * height}")
    rows = buffer.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)
    return np.ascontiguousarray(rows[:, :, list(order)])


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict:
    """Fields of a sensor_msgs/Image holding ``rgb`` (H, W, 3 uint8) as rgb8 or bgr8."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"can only publish rgb8 or bgr8, not {encoding!r}")
    pixels = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    height, width = rgb.shape[:2]
    return {"encoding": encoding, "height": height, "width": width, "step": width * 3,
            "is_bigendian": 0, "data": np.ascontiguousarray(pixels).tobytes()}
