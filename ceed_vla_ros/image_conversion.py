"""sensor_msgs/Image <-> numpy without ROS types, and the one crop + resize every image path uses.

The functions take the Image fields (encoding, height, width, step, data) so that they are tested
without DDS; the node passes ``msg.encoding, msg.height, ...`` straight in. Where the ROS 2
``cv_bridge`` is importable the node may convert with it instead (after :func:`check_image_fields`);
this path gives the same RGB array.

:func:`crop_and_resize` is THE geometric preprocessing of a checkpoint's ``ImageSpec``: the camera
node applies it before publishing, and ``policy.preprocess_images`` (training, evaluation,
inference) applies it to any image not already at the checkpoint's size, so a deployed policy sees
the pixels it was trained on whatever the camera's size.

:func:`compressed_to_rgb` decodes a sensor_msgs/CompressedImage (the ``.../compressed`` topics
image_transport's compressed plugin publishes, JPEG or PNG) with OpenCV into the same RGB array.
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


def _as_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A flat uint8 view of a message's ``data`` field (bytes, array.array-like or numpy), no copy."""
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


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
    buffer = _as_bytes(data)
    if buffer.size != step * height:
        raise ImageConversionError(f"data holds {buffer.size} bytes, step * height = {step * height}")
    return buffer.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)


def image_to_rgb(
    encoding: str, height: int, width: int, step: int, data: bytes | bytearray | memoryview | np.ndarray
) -> np.ndarray:
    """An (height, width, 3) uint8 RGB copy of an 8-bit sensor_msgs/Image, or ImageConversionError."""
    rows = check_image_fields(encoding, height, width, step, data)
    return np.ascontiguousarray(rows[:, :, list(SUPPORTED_ENCODINGS[encoding][1])])


# CompressedImage.format as image_transport's compressed plugin writes it: "<encoding>; <jpeg|png> compressed
# <target>" (e.g. "rgb8; jpeg compressed bgr8"), or just "jpeg" / "png" from older or other publishers.
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
MAX_COMPRESSED_BYTES = 64 * 1024 * 1024


def compressed_to_rgb(format_: str, data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """An (height, width, 3) uint8 RGB array from a sensor_msgs/CompressedImage (JPEG or PNG of an
    8-bit mono/colour image), decoded with OpenCV; or ImageConversionError saying why not.

    The payload is decoded whatever the format string claims (OpenCV reads the file's own magic
    bytes); the format string only refuses what this path cannot give: depth images
    (``compressedDepth``), non-8-bit encodings (``mono16``, ``16UC1``...) and unknown codecs. Colour
    JPEG/PNG payloads hold BGR (OpenCV's order, which image_transport's publisher writes), mono ones
    are replicated to three channels; an alpha channel is dropped.
    """
    text = format_.strip().lower()
    if "compresseddepth" in text.replace(" ", ""):
        raise ImageConversionError(f"compressed depth images ({format_!r}) are not camera frames")
    encoding, _, compression = text.rpartition(";") if ";" in text else ("", "", text)
    codec = compression.split()[0] if compression.split() else ""
    if codec not in COMPRESSED_FORMATS:
        raise ImageConversionError(f"unsupported compressed format {format_!r}; supported: jpeg, png")
    encoding = encoding.strip()
    if encoding and encoding not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r} in compressed format {format_!r}; supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)}")
    buffer = _as_bytes(data)
    if buffer.size == 0:
        raise ImageConversionError("compressed image with no data")
    if buffer.size > MAX_COMPRESSED_BYTES:
        raise ImageConversionError(f"compressed image of {buffer.size} bytes (limit {MAX_COMPRESSED_BYTES})")
    declared = _declared_size(buffer)
    if declared is not None and not (0 < declared[0] <= MAX_SIDE and 0 < declared[1] <= MAX_SIDE):
        raise ImageConversionError(  # refused before decoding: no memory spent on a bogus header
            f"image size {declared[0]}x{declared[1]} outside 1..{MAX_SIDE} pixels per side")
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"{codec} data ({buffer.size} bytes) could not be decoded")
    height, width = bgr.shape[:2]
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ImageConversionError(f"image size {width}x{height} outside 1..{MAX_SIDE} pixels per side")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _declared_size(buffer: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's SOF header, None when neither is found."""
    raw = buffer[:65536].tobytes()
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) >= 24 and raw[12:16] == b"IHDR":
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if not raw.startswith(b"\xff\xd8"):
        return None
    position = 2
    while position + 9 <= len(raw):
        if raw[position] != 0xFF:
            return None
        marker = raw[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(raw[position + 2 : position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height = int.from_bytes(raw[position + 5 : position + 7], "big")
            width = int.from_bytes(raw[position + 7 : position + 9], "big")
            return width, height
        position += 2 + length
    return None


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
