"""Camera images -> model inputs: the one resize/normalise path of training, evaluation and inference.

Torch, but no checkpoint or model imports (the backends use it; :mod:`ceed_vla_ros.policy`
re-exports :func:`preprocess_images`).
"""

from __future__ import annotations

import numpy as np
import torch

from ceed_vla_ros.image_conversion import crop_and_resize
from ceed_vla_ros.metadata import ImageSpec


def resize_images(images: np.ndarray | torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """uint8 RGB images (H, W, 3) or (B, H, W, 3) -> uint8 (B, 3, height, width) in the INPUT
    channel order, through :func:`~ceed_vla_ros.image_conversion.crop_and_resize` (the camera
    node's function) when the size or a crop asks for it."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (B, H, W, 3) images, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    height, width = x.shape[1:3]
    crops = spec.crop == "center_square" and height != width  # a square image is its own centre square
    if crops or (height, width) != (spec.height, spec.width):
        resized = np.stack([crop_and_resize(image, spec) for image in x.cpu().numpy()])
        x = torch.from_numpy(resized).to(x.device)
    return x.permute(0, 3, 1, 2)


def normalize_pixels(
    x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], channel_order: str = "rgb"
) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float ``(x / 255 - mean) / std`` per channel (``bgr``: channels reversed first)."""
    x = x.float().div(255.0)
    if channel_order == "bgr":
        x = x.flip(1)
    mean_t = torch.tensor(mean, device=x.device).reshape(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).reshape(1, 3, 1, 1)
    return (x - mean_t) / std_t


def preprocess_images(images: np.ndarray | torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """uint8 RGB images (H, W, 3) or (B, H, W, 3) -> float ``pixel_values`` (B, 3, height, width).

    The one path of training, evaluation and inference: images not already at the checkpoint's size
    (or with a crop to apply) go through :func:`~ceed_vla_ros.image_conversion.crop_and_resize`,
    the same function the camera node applies; then the channel order (``bgr`` checkpoints get the
    channels reversed), scaling to [0, 1] and ``(x - mean) / std`` (see :class:`ImageSpec`).
    """
    return normalize_pixels(resize_images(images, spec), spec.mean, spec.std, spec.channel_order)


