"""Image field checks and conversions used by the camera node."""

from __future__ import annotations

import numpy as np
import pytest

from ceed_vla_ros.image_conversion import ImageConversionError, image_to_rgb, rgb_to_image_fields

RGB = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_round_trip(encoding):
    fields = rgb_to_image_fields(RGB, encoding)
    out = image_to_rgb(fields["encoding"], fields["height"], fields["width"], fields["step"], fields["data"])
    assert np.array_equal(out, RGB)


def test_bgr_bytes_are_reversed_channels():
    fields = rgb_to_image_fields(RGB, "bgr8")
    raw = np.frombuffer(fields["data"], np.uint8).reshape(5, 7, 3)
    assert np.array_equal(raw, RGB[:, :, ::-1])


def test_padded_rows_and_alpha_and_mono():
    padded = np.zeros((5, 7 * 4 + 3), np.uint8)
    rgba = np.dstack([RGB, np.full((5, 7), 255, np.uint8)])
    padded[:, : 7 * 4] = rgba.reshape(5, -1)
    assert np.array_equal(image_to_rgb("rgba8", 5, 7, 7 * 4 + 3, padded.tobytes()), RGB)
    mono = RGB[:, :, 0].copy()
    out = image_to_rgb("mono8", 5, 7, 7, mono.tobytes())
    assert out.shape == (5, 7, 3) and all(np.array_equal(out[:, :, c], mono) for c in range(3))


@pytest.mark.parametrize(
    "encoding, height, width, step, size, message",
    [
        ("yuv422", 5, 7, 14, 70, "unsupported encoding"),
        ("16UC1", 5, 7, 14, 70, "unsupported encoding"),
        ("rgb8", 5, 7, 20, 100, "shorter than a row"),
        ("rgb8", 5, 7, 21, 104, "data holds 104 bytes"),
        ("rgb8", 0, 7, 21, 0, "outside 1..8192"),
        ("rgb8", 100000, 7, 21, 21, "outside 1..8192"),
        ("rgb8", 5, 7, 21, 0, "data holds 0 bytes"),
    ],
)
def test_bad_images_raise_a_clear_error(encoding, height, width, step, size, message):
    with pytest.raises(ImageConversionError, match=message):
        image_to_rgb(encoding, height, width, step, bytes(size))


# -- sensor_msgs/CompressedImage (image_transport's compressed plugin) -----------------------------
def smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    """A gradient with distinct channels: JPEG keeps it within a few levels, unlike noise."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 40)]).astype(np.uint8)


def encode(rgb: np.ndarray, ext: str) -> bytes:
    import cv2

    ok, data = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV writes BGR, as image_transport
    assert ok
    return data.tobytes()


def test_compressed_png_decodes_to_the_exact_rgb_frame():
    from ceed_vla_ros.image_conversion import compressed_to_rgb

    rgb = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for format_ in ("rgb8; png compressed bgr8", "bgr8; png compressed bgr8", "png"):
        assert np.array_equal(compressed_to_rgb(format_, encode(rgb, ".png")), rgb), format_


def test_compressed_jpeg_decodes_to_rgb_in_the_right_channel_order():
    from ceed_vla_ros.image_conversion import compressed_to_rgb

    rgb = smooth_rgb()
    out = compressed_to_rgb("rgb8; jpeg compressed bgr8", encode(rgb, ".jpg"))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    error = np.abs(out.astype(int) - rgb.astype(int))
    assert error.mean() < 3 and error.max() < 40
    swapped = np.abs(out[:, :, ::-1].astype(int) - rgb.astype(int)).mean()
    assert swapped > 30  # a BGR/RGB mix-up would be caught


def test_compressed_mono_is_replicated():
    import cv2

    from ceed_vla_ros.image_conversion import compressed_to_rgb

    mono = smooth_rgb()[:, :, 0]
    ok, data = cv2.imencode(".png", mono)
    out = compressed_to_rgb("mono8; png compressed mono8", data.tobytes())
    assert out.shape == (*mono.shape, 3) and all(np.array_equal(out[:, :, c], mono) for c in range(3))


@pytest.mark.parametrize(
    "format_, data, message",
    [
        ("16UC1; compressedDepth png", None, "compressed depth"),
        ("rgb8; tiff compressed bgr8", None, "unsupported compressed format"),
        ("mono16; png compressed mono16", None, "unsupported encoding 'mono16'"),
        ("jpeg", b"", "no data"),
        ("jpeg", b"\xff\xd8\xff\xe0 definitely not a jpeg body", "could not be decoded"),
        ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01\x00\x00\x00\x01\x00\x00\x08\x02\x00\x00\x00",
         "image size 65536x65536 outside"),
    ],
)
def test_bad_compressed_frames_are_refused_with_a_reason(format_, data, message):
    from ceed_vla_ros.image_conversion import compressed_to_rgb

    payload = encode(smooth_rgb(), ".png") if data is None else data
    with pytest.raises(ImageConversionError, match=message):
        compressed_to_rgb(format_, payload)


def test_oversized_jpeg_header_is_refused_before_decoding():
    from ceed_vla_ros.image_conversion import _declared_size, compressed_to_rgb

    data = bytearray(encode(smooth_rgb(), ".jpg"))
    assert _declared_size(np.frombuffer(bytes(data), np.uint8)) == (64, 48)
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5 : sof + 9] = (20000).to_bytes(2, "big") + (64).to_bytes(2, "big")  # height 20000
    with pytest.raises(ImageConversionError, match="64x20000 outside"):
        compressed_to_rgb("jpeg", bytes(data))
