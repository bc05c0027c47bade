"""sensor_msgs/Image <-> numpy without ROS types, and the one crop + resize every image path uses.

The functions take the Image fields (encoding, height, width, step, data) so that they are tested
without DDS; the node passes ``msg.encoding, msg.height, ...`` straight in. Where the ROS 2
``cv_bridge`` is importable the node may convert with it instead (after :func:`check_image_fields`);
this path gives the same RGB array.

:func:`crop_and_resize` is THE geometric preprocessing of a checkpoint's ``ImageSpec``: the camera
node applies it before publishing, and ``policy.preprocess_images`` (training, evaluation,
inference) applies it to any image not already at the checkpoint's size, so a deployed policy sees
the pixels it was trained on whatever the camera's size.
"""

from __future__ import annotations

import cv2
import numpy as np

from ceed_vla_ros.metadata import ImageSpec

# ImageSpec.resize -> OpenCV interpolation (area averaging whenever the image shrinks, see below)
_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
                  "nearest": cv2.INTER_NEAREST}

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


def check_image_fields(encoding: str, height: int, width: int, step: int,
                       data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Validate an 8-bit sensor_msgs/Image; return its pixels as an (height, width, channels) view
    of ``data`` (no copy), or raise ImageConversionError."""
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, _ = SUPPORTED_ENCODINGS[encoding]
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ImageConversionError(f"image size {width}x{height} outside 1..{MAX_SIDE} pixels per side")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is shorter than a row of {width} {encoding} pixels ({row_bytes} bytes)"
        )
    buffer = (
        np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).reshape(-1)
    )
    if buffer.size != step * height:
        raise ImageConversionError(f"data holds {buffer.size} bytes, step * height = {step * height}")
    return buffer.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)


def image_to_rgb(
    encoding: str, height: int, width: int, step: int, data: bytes | bytearray | memoryview | np.ndarray
) -> np.ndarray:
    """An (height, width, 3) uint8 RGB copy of an 8-bit sensor_msgs/Image, or ImageConversionError."""
    rows = check_image_fields(encoding, height, width, step, data)
    return np.ascontiguousarray(rows[:, :, list(SUPPORTED_ENCODINGS[encoding][1])])


def crop_and_resize(rgb: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """(H, W, 3) uint8 -> the checkpoint's crop, then its size: (spec.height, spec.width, 3) uint8.

    ``crop`` ``center_square`` keeps the central min(H, W) square. Resizing uses OpenCV: area
    averaging when the image shrinks in both directions (it does not alias), otherwise
    ``spec.resize`` (bilinear, bicubic, area, nearest). An image already at the size is returned
    as it is (no copy when it is contiguous).
    """
    if spec.crop == "center_square":
        height, width = rgb.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        rgb = rgb[top : top + side, left : left + side]
    if rgb.shape[:2] != (spec.height, spec.width):
        shrinking = rgb.shape[0] >= spec.height and rgb.shape[1] >= spec.width
        interpolation = cv2.INTER_AREA if shrinking else _INTERPOLATION[spec.resize]
        rgb = cv2.resize(np.ascontiguousarray(rgb), (spec.width, spec.height), interpolation=interpolation)
    return np.ascontiguousarray(rgb)


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict:
    """Fields of a sensor_msgs/Image holding ``rgb`` (H, W, 3 uint8) as rgb8 or bgr8."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"can only publish rgb8 or bgr8, not {encoding!r}")
    pixels = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    height, width = rgb.shape[:2]
    return {
        "encoding": encoding,
        "height": height,
        "width": width,
        "step": width * 3,
        "is_bigendian": 0,
        "data": np.ascontiguousarray(pixels).tobytes(),
    }
