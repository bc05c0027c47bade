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
    TokenRange,
    decode,
    init_random_prompt_tokens,
    init_warm_start,
)
from ceed_vla_ros.preprocess import preprocess_images  # noqa: F401 - re-exported: training and benches use it


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
        self.lm = checkpoint.block_lm(min_context=self.metadata.block_len)
        self.allowed = TokenRange(*self.action_tokenizer.token_range)
        self.settings = settings if settings is not None else DecodeSettings()
        self.warm_start_fill = warm_start_fill
        self.generator = torch.Generator().manual_seed(seed)
        self.previous_tokens: torch.Tensor | None = None
        self.previous_reference: np.ndarray | None = None  # joints at the previous chunk's image (deltas)
        self._prompt_cache: dict[str, torch.Tensor] = {}

    def prompt_ids(self, instruction: str) -> torch.Tensor:
        """(1, L) prompt ids for ``instruction``, cached."""
        ids = self._prompt_cache.get(instruction)
        if ids is None:
            device = next(self.checkpoint.model.parameters()).device
            ids = torch.tensor([self.checkpoint.prompt_ids(instruction)], dtype=torch.long, device=device)
            self._prompt_cache[instruction] = ids
        return ids

    def reset(self) -> None:
        """Forget the previous chunk (call at the start of an episode)."""
        self.previous_tokens = None
        self.previous_reference = None

    def _pinned_tokens(self, shift: int, count: int, joint_positions: np.ndarray | None) -> torch.Tensor | None:
        """The previous chunk's tokens ``shift .. shift + count``. joint_delta actions are relative to
        the joints at their image, so they are re-expressed relative to this image's joints and
        re-tokenised (a token pinned as it was would command a different target); None if that
        cannot be done (no joints, or proprio names that are not the joints)."""
        previous = self.previous_tokens.reshape(-1)
        if self.metadata.action_space != "joint_delta":
            return previous[shift : shift + count]
        if (joint_positions is None or self.previous_reference is None
                or list(self.metadata.proprio_names) != list(self.metadata.joint_names)):
            return None
        actions = self.action_tokenizer.decode(previous.numpy())
        moved = self.previous_reference - np.asarray(joint_positions, dtype=np.float64)
        tokens = self.action_tokenizer.encode(actions + moved[None, :])
        return torch.as_tensor(tokens[shift : shift + count], dtype=previous.dtype)

    @torch.inference_mode()
    def predict(
        self,
        image: np.ndarray,
        joint_positions: np.ndarray | None,
        instruction: str,
        settings: DecodeSettings | None = None,
        *,
        steps_executed: int | None = None,
        pin_steps: int = 0,
    ) -> PolicyOutput:
        """Decode one action chunk.

        Args:
            image: (H, W, 3) uint8 RGB camera image, any size (see :func:`preprocess_images`).
            joint_positions: raw proprio values (``proprio_names`` order); None if the model has none.
            instruction: task text, inserted into the prompt template.
            settings: overrides the constructor's :class:`DecodeSettings` for this call.
            steps_executed: for ``warm_start`` and pinning, chunk steps executed since the previous
                query (default: the whole chunk, i.e. ``chunk_len``).
            pin_steps: prefix pinning (Jacobi / early exit): the first ``pin_steps`` actions of the new
                chunk are the previous chunk's, shifted by ``steps_executed`` (the steps that will be
                executing by the time decoding finishes), and only the rest is decoded. Without a
                previous chunk that covers them, nothing is pinned.
        """
        settings = settings or self.settings
        proprio = None
        if self.metadata.proprio_norm is not None:
            if joint_positions is None:
                raise ValueError("this checkpoint needs joint_positions (proprio)")
            joint_positions = np.asarray(joint_positions, dtype=np.float64)
            if not np.all(np.isfinite(joint_positions)):
                raise ValueError(f"joint_positions must be finite, got {joint_positions.tolist()}")
            normalized = self.metadata.proprio_norm.normalize(joint_positions, clip=False)
            proprio = torch.as_tensor(normalized, dtype=torch.float32).reshape(1, -1)
        inputs = self.checkpoint.model_inputs(image, proprio)
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
        pinned = None
        if pin_steps > 0 and settings.mode != "ar" and self.previous_tokens is not None:
            shift = (self.metadata.chunk_len if steps_executed is None else steps_executed) * self.metadata.action_dims
            count = pin_steps * self.metadata.action_dims
            if shift + count <= block_len and count < block_len:
                pinned = self._pinned_tokens(shift, count, joint_positions)
        result = decode(
            self.lm,
            input_ids,
            inputs,
            mode=settings.mode,
            block_len=block_len,
            allowed=self.allowed,
            initial_block=initial,
            early_exit_steps=settings.early_exit_steps,
            pinned_prefix=pinned,
            fused_prefill=settings.fused_prefill,
            keep_final_prefix=settings.keep_final_prefix,
        )
        self.previous_tokens = result.tokens
        self.previous_reference = None if joint_positions is None else np.asarray(joint_positions, dtype=np.float64)
        actions = self.action_tokenizer.decode(result.tokens.numpy())
        return PolicyOutput(tokens=result.tokens, actions=actions, stats=result.stats)
