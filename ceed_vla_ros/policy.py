"""Policy-level inference: camera image + joint positions + instruction -> action chunk.

Used by the ROS policy node and the closed-loop evaluation; batch size 1, CPU friendly:
prompt ids are cached per instruction, everything runs under ``torch.inference_mode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ceed_vla_ros.checkpoint import Checkpoint
from ceed_vla_ros.decoding import (
    DecodeSettings,
    DecodeStats,
    HFCausalLMAdapter,
    TokenRange,
    decode,
    init_random_prompt_tokens,
    init_warm_start,
)
from ceed_vla_ros.image_conversion import crop_and_resize
from ceed_vla_ros.metadata import ImageSpec


def preprocess_images(images: np.ndarray | torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """uint8 RGB images (H, W, 3) or (B, H, W, 3) -> float ``pixel_values`` (B, 3, height, width).

    The one path of training, evaluation and inference: images not already at the checkpoint's size
    (or with a crop to apply) go through :func:`~ceed_vla_ros.image_conversion.crop_and_resize`,
    the same function the camera node applies; then the channel order (``bgr`` checkpoints get the
    channels reversed), scaling to [0, 1] and ``(x - mean) / std`` (see :class:`ImageSpec`).
    """
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
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if spec.channel_order == "bgr":
        x = x.flip(1)
    mean = torch.tensor(spec.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(spec.std).reshape(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class PolicyOutput:
    """One policy query: action tokens (n,), the unnormalised chunk (chunk_len, action_dims), stats."""

    tokens: torch.Tensor
    actions: np.ndarray
    stats: DecodeStats


class CeedVlaPolicy:
    """Decodes action chunks from a loaded :class:`~ceed_vla_ros.checkpoint.Checkpoint`.

    Args:
        checkpoint: the loaded checkpoint.
        settings: the default :class:`DecodeSettings` of :meth:`predict` (mode, early-exit steps,
            initial block; ``warm_start`` falls back to random prompt tokens without a previous chunk).
        warm_start_fill: tail of a warm-started block, ``repeat_last`` or ``random``.
        seed: seed of the random initial blocks (reproducible sequences of queries).

    Every argmax is restricted to the action tokens, so the output always decodes to actions.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        settings: DecodeSettings | None = None,
        *,
        warm_start_fill: Literal["repeat_last", "random"] = "repeat_last",
        seed: int = 0,
    ) -> None:
        self.checkpoint = checkpoint
        self.metadata = checkpoint.metadata
        self.action_tokenizer = checkpoint.action_tokenizer
        self.lm = HFCausalLMAdapter(checkpoint.model, min_context=self.metadata.block_len)
        self.allowed = TokenRange(*self.action_tokenizer.token_range)
        self.settings = settings if settings is not None else DecodeSettings()
        self.warm_start_fill = warm_start_fill
        self.generator = torch.Generator().manual_seed(seed)
        self.previous_tokens: torch.Tensor | None = None
        self._prompt_cache: dict[str, torch.Tensor] = {}

    def prompt_ids(self, instruction: str) -> torch.Tensor:
        """(1, L) prompt ids for ``instruction``, cached."""
        ids = self._prompt_cache.get(instruction)
        if ids is None:
            ids = torch.tensor([self.checkpoint.prompt_ids(instruction)], dtype=torch.long)
            self._prompt_cache[instruction] = ids
        return ids

    def reset(self) -> None:
        """Forget the previous chunk (call at the start of an episode)."""
        self.previous_tokens = None

    @torch.inference_mode()
    def predict(
        self,
        image: np.ndarray,
        joint_positions: np.ndarray | None,
        instruction: str,
        settings: DecodeSettings | None = None,
        *,
        steps_executed: int | None = None,
    ) -> PolicyOutput:
        """Decode one action chunk.

        Args:
            image: (H, W, 3) uint8 RGB camera image, any size (see :func:`preprocess_images`).
            joint_positions: raw proprio values (``proprio_names`` order); None if the model has none.
            instruction: task text, inserted into the prompt template.
            settings: overrides the constructor's :class:`DecodeSettings` for this call.
            steps_executed: for ``warm_start``, chunk steps executed since the previous query
                (default: the whole chunk, i.e. ``chunk_len``).
        """
        settings = settings or self.settings
        inputs = {"pixel_values": preprocess_images(image, self.metadata.image)}
        if self.metadata.proprio_norm is not None:
            if joint_positions is None:
                raise ValueError("this checkpoint needs joint_positions (proprio)")
            joint_positions = np.asarray(joint_positions, dtype=np.float64)
            if not np.all(np.isfinite(joint_positions)):
                raise ValueError(f"joint_positions must be finite, got {joint_positions.tolist()}")
            proprio = self.metadata.proprio_norm.normalize(joint_positions, clip=False)
            inputs["proprio"] = torch.as_tensor(proprio, dtype=torch.float32).reshape(1, -1)
        input_ids = self.prompt_ids(instruction)
        block_len = self.metadata.block_len
        if settings.init == "warm_start" and self.previous_tokens is not None:
            steps = self.metadata.chunk_len if steps_executed is None else steps_executed
            initial = init_warm_start(
                self.previous_tokens,
                steps,
                self.metadata.action_dims,
                self.warm_start_fill,
                self.allowed,
                self.generator,
            )
        else:
            initial = init_random_prompt_tokens(input_ids, block_len, self.generator)
        result = decode(
            self.lm,
            input_ids,
            inputs,
            mode=settings.mode,
            block_len=block_len,
            allowed=self.allowed,
            initial_block=initial,
            early_exit_steps=settings.early_exit_steps,
            fused_prefill=settings.fused_prefill,
            keep_final_prefix=settings.keep_final_prefix,
        )
        self.previous_tokens = result.tokens
        actions = self.action_tokenizer.decode(result.tokens.numpy())
        return PolicyOutput(tokens=result.tokens, actions=actions, stats=result.stats)
