"""The model-backend interface: what the policy, the decoders' adapter and the trainers need from a model.

A checkpoint's metadata (``ceed_vla.yaml``) names its ``backend``; the backend supplies

* the loader: :meth:`ModelBackend.load` (``device`` and ``dtype`` given up front, so that a 7B
  model is materialised once, in its final precision, where it will run) and the cheap folder
  checks (:meth:`ModelBackend.check_folder`: files, pickles, remote code, digest);
* the prompt builder: :meth:`ModelBackend.prompt_ids` (the ids the decoders prefill; the
  Jacobi initial block is drawn from them);
* image preprocessing: :meth:`ModelBackend.model_inputs` (uint8 camera images + normalised
  proprio -> the prefill's keyword inputs, e.g. ``pixel_values``);
* the action-token mapping: ``action_token_scheme`` and the id base in the metadata
  (:class:`~ceed_vla_ros.action_tokenizer.ActionTokenizer`, torch-free: the arm driver uses it);
* the :class:`~ceed_vla_ros.decoding.BlockLM` adapter the decoders run on
  (:meth:`ModelBackend.block_lm`) and the full-sequence logits training needs
  (:meth:`ModelBackend.sequence_logits`), aligned with ``input_ids`` whatever the model inserts;
* saving: :meth:`ModelBackend.save` (distilled students are written in the backend's own layout).

Models of every backend take ``input_ids``, ``attention_mask`` (one entry per input id: the
caller's coordinates, LEFT padding), the prefill inputs, the KV cache (transformers' keyword) and
``use_cache``, and return ``.logits``; batched Jacobi decoding
(:func:`~ceed_vla_ros.decoding.jacobi_trajectories_batched`) relies on that.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ceed_vla_ros.action_tokenizer import ActionTokenizer
from ceed_vla_ros.metadata import CheckpointError, CheckpointMetadata

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


@dataclass
class Checkpoint:
    """A loaded checkpoint: model (eval mode), text tokenizer, metadata, folder and backend."""

    path: Path
    model: torch.nn.Module
    tokenizer: Any
    metadata: CheckpointMetadata
    backend: ModelBackend | None = None

    def __post_init__(self) -> None:
        if self.backend is None:
            from ceed_vla_ros.backends import get_backend

            self.backend = get_backend(self.metadata.backend)

    @property
    def action_tokenizer(self) -> ActionTokenizer:
        return self.metadata.action_tokenizer()

    @property
    def pad_token_id(self) -> int:
        return self.backend.pad_token_id(self.tokenizer)

    def prompt_ids(self, instruction: str) -> list[int]:
        """Full prompt ids the decoders prefill (the backend's prompt builder)."""
        return self.backend.prompt_ids(self.model, self.tokenizer, self.metadata, instruction)

    def model_inputs(
        self, images: np.ndarray | torch.Tensor, proprio: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Prefill inputs of uint8 images (H, W, 3) / (B, H, W, 3) and NORMALISED proprio (B, p),
        on the model's device and in its dtype."""
        return self.backend.model_inputs(self.model, self.metadata, images, proprio)

    def block_lm(self, min_context: int = 0):
        """The :class:`~ceed_vla_ros.decoding.BlockLM` the decoders run on."""
        return self.backend.block_lm(self.model, min_context)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def size_on_disk(self) -> int:
        """Bytes of all files of the model (the checkpoint folder and its ``source_dir``)."""
        folders = {self.path.resolve(), self.metadata.model_folder(self.path)}
        return sum(p.stat().st_size for folder in folders for p in folder.rglob("*") if p.is_file())


class ModelBackend(ABC):
    """One model family. Subclasses are stateless; :data:`ceed_vla_ros.backends.BACKENDS` holds one each."""

    name: ClassVar[str]
    action_token_scheme: ClassVar[str] = "ceed"

    # -- loading ---------------------------------------------------------------------------------
    @abstractmethod
    def check_folder(self, path: Path, metadata: CheckpointMetadata) -> None:
        """Cheap checks before any weight is read; raise :class:`CheckpointError` naming the file."""

    @abstractmethod
    def load_model(
        self, path: Path, metadata: CheckpointMetadata, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> tuple[torch.nn.Module, Any]:
        """(model in eval mode on ``device`` in ``dtype``, text tokenizer) of a checked folder."""

    def load(
        self,
        path: str | Path,
        metadata: CheckpointMetadata,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Checkpoint:
        """Check and load the checkpoint folder ``path`` (its ``ceed_vla.yaml`` is ``metadata``).

        ``device`` (default CPU) and ``dtype`` (default: float32) are applied while loading, not after.
        """
        path = Path(path)
        self.check_folder(path, metadata)
        model, tokenizer = self.load_model(path, metadata, device, dtype)
        model.eval()
        return Checkpoint(path=path, model=model, tokenizer=tokenizer, metadata=metadata, backend=self)

    # -- prompt, images, tokens ------------------------------------------------------------------
    @abstractmethod
    def prompt_ids(
        self, model: torch.nn.Module, tokenizer: Any, metadata: CheckpointMetadata, instruction: str
    ) -> list[int]:
        """Prompt ids of ``instruction`` (everything the prefill sees as ids)."""

    @abstractmethod
    def model_inputs(
        self,
        model: torch.nn.Module,
        metadata: CheckpointMetadata,
        images: np.ndarray | torch.Tensor,
        proprio: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Prefill keyword inputs of uint8 RGB images and normalised proprio (B, p) or None."""

    def pad_token_id(self, tokenizer: Any) -> int:
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token")
        return int(tokenizer.pad_token_id)

    # -- decoding and training -------------------------------------------------------------------
    def block_lm(self, model: torch.nn.Module, min_context: int = 0):
        """The decoders' :class:`~ceed_vla_ros.decoding.BlockLM` over ``model`` (KV-cached forwards)."""
        from ceed_vla_ros.decoding import HFCausalLMAdapter

        return HFCausalLMAdapter(model, min_context=min_context)

    def sequence_logits(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        inputs: Mapping[str, torch.Tensor],
        prompt_length: int,
        *,
        frozen_vision: bool = False,
    ) -> torch.Tensor:
        """Logits (B, L, V) of a full training forward, one row per position of ``input_ids``
        (``prompt_length``: where the prompt ends, the block follows)."""
        return model(input_ids=input_ids, attention_mask=attention_mask, **inputs, use_cache=False).logits

    def freeze_vision(self, model: torch.nn.Module) -> None:
        """Stop gradients into the vision part (``--freeze-vision``)."""
        raise ValueError(f"backend {self.name} cannot freeze its vision part")

    @abstractmethod
    def save(
        self, model: torch.nn.Module, tokenizer: Any, metadata: CheckpointMetadata, path: Path
    ) -> CheckpointMetadata:
        """Write a loadable checkpoint folder (weights, tokenizer, ``ceed_vla.yaml``); return the metadata
        as saved (fresh ``weights_sha256`` / ``checkpoint_id``)."""


# -- helpers shared by the backends ---------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def refuse_pickles(*folders: Path) -> None:
    """CheckpointError naming the first pickle-format file in any of ``folders`` (never opened)."""
    for folder in folders:
        pickles = sorted(
            p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES
        )
        if pickles:
            raise CheckpointError(
                f"{folder / pickles[0]}: pickle-format file(s) {pickles} in checkpoint; refusing to load "
                "(only safetensors weights are read)"
            )


def read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{file}: cannot read JSON ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return data


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` -> float32; names ``float32``/``bfloat16``/``float16`` accepted."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        return names[dtype]
    return dtype
