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
