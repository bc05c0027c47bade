"""LoRA distillation through ``peft`` (``ceed-vla distill --lora-rank R``): the path a 7B student needs.

The student starts as the teacher; with ``--lora-rank R`` only low-rank adapters on the language
model's linear layers are trained (``--lora-targets``, default the Llama attention and MLP
projections inside ``language_model``); every other weight is frozen. The student is written in
one of two forms (``--lora-save``):

* ``merged`` (default): the adapters are merged into a copy of the weights and the student is a
  complete checkpoint in its backend's layout, loaded like any other (needs a second copy of the
  model in memory while it is written);
* ``adapter``: the student folder holds only ``ceed_vla.yaml``, ``adapter_config.json`` (peft's,
  plain JSON) and ``adapter_model.safetensors`` (the LoRA weights, megabytes for a 7B model). Its
  metadata's ``backend_options.lora`` names the base checkpoint (``base``: a path relative to the
  student folder; ``base_checkpoint_id``: what it must be) and ``weights_sha256`` is the SHA-256 of
  the adapter file. :func:`load_adapter_checkpoint` loads the base through its own backend, checks
  both, applies the adapter and merges it: the policy then runs an ordinary model.

No code of a checkpoint is ever imported; peft reads only the JSON config and safetensors weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ceed_vla_ros.metadata import METADATA_FILE, CheckpointError, CheckpointMetadata, read_metadata_file

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA_SAVE_MODES = ("merged", "adapter")
DEFAULT_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class LoraSettings:
    """``rank`` r, ``alpha`` (scale alpha / r), ``dropout``, ``targets`` (peft ``target_modules``: a
    regular expression over module names, or a comma-separated list of name suffixes), ``save``."""

    rank: int
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str = DEFAULT_TARGETS
    save: str = "merged"

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        if self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError("lora alpha must be > 0 and dropout in [0, 1)")
        if self.save not in LORA_SAVE_MODES:
            raise ValueError(f"lora save must be one of {LORA_SAVE_MODES}, got {self.save!r}")

    def target_modules(self) -> str | list[str]:
        if "," in self.targets or self.targets.isidentifier():
            return [t.strip() for t in self.targets.split(",") if t.strip()]
        return self.targets


def apply_lora(model: torch.nn.Module, settings: LoraSettings):
    """A peft model wrapping ``model`` with fresh adapters (B = 0: the output equals the teacher's)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules(),
        bias="none",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as error:
        raise ValueError(f"--lora-targets {settings.targets!r} matches no layer of this model ({error})") from error
    return peft_model


def trainable_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def merged_copy(peft_model) -> torch.nn.Module:
    """The base model with the adapters merged in, leaving ``peft_model`` (still training) untouched."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload()


def save_adapter_checkpoint(
    peft_model, metadata: CheckpointMetadata, path: Path, base_path: Path
) -> CheckpointMetadata:
    """Write an adapter-only student folder (see the module docstring); return its metadata."""
    from ceed_vla_ros.backends.base import refuse_pickles, sha256_file
    from ceed_vla_ros.backends.ceed_tiny import stamp_created

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(path), safe_serialization=True)
    for extra in ("README.md",):  # peft writes a model card template; keep the folder to what we read
        (path / extra).unlink(missing_ok=True)
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: peft did not write the adapter weights")
    sha = sha256_file(weights)
    base_metadata = read_metadata_file(Path(base_path) / METADATA_FILE)
    options = dict(metadata.backend_options)
    options["lora"] = {
        "base": os.path.relpath(Path(base_path).resolve(), path.resolve()),
        "base_checkpoint_id": base_metadata.checkpoint_id,
        "adapter": ADAPTER_WEIGHTS,
    }
    metadata = dataclasses.replace(
        metadata,
        backend_options=options,
        weights_sha256=sha,
        checkpoint_id=f"{metadata.name}-{sha[:8]}",
        source_dir=None,
    )
    metadata = dataclasses.replace(metadata, provenance=stamp_created(metadata))
    (path / METADATA_FILE).write_text(metadata.to_yaml())
    refuse_pickles(path)
    return metadata


def is_adapter_checkpoint(metadata: CheckpointMetadata) -> bool:
    return isinstance(metadata.backend_options.get("lora"), dict)


def load_adapter_checkpoint(path: Path, metadata: CheckpointMetadata, device=None, dtype=None):
    """Load an adapter-only student: its base checkpoint (checked by its own backend), then the adapter,
    merged. Refused with :class:`CheckpointError` naming the file: a missing base or one whose
    ``checkpoint_id`` differs, a missing or modified adapter file, pickles, ``auto_map`` in the
    adapter config, an adapter whose keys do not match the base model."""
    from safetensors.torch import load_file

    from ceed_vla_ros.backends import get_backend
    from ceed_vla_ros.backends.base import Checkpoint, read_json, refuse_pickles, sha256_file

    path = Path(path)
    refuse_pickles(path)
    lora = metadata.backend_options["lora"]
    base_path = (path / str(lora.get("base", ""))).resolve()
    if not (base_path / METADATA_FILE).is_file():
        raise CheckpointError(f"{path / METADATA_FILE}: LoRA base checkpoint {base_path} not found")
    base_metadata = read_metadata_file(base_path / METADATA_FILE)
    if base_metadata.checkpoint_id != lora.get("base_checkpoint_id"):
        raise CheckpointError(
            f"{base_path / METADATA_FILE}: base checkpoint is {base_metadata.checkpoint_id}, the adapter in {path} "
            f"was trained on {lora.get('base_checkpoint_id')}"
        )
    weights = path / str(lora.get("adapter", ADAPTER_WEIGHTS))
    config_file = path / ADAPTER_CONFIG
    for file in (weights, config_file):
        if not file.is_file():
            raise CheckpointError(f"{file}: required LoRA adapter file is missing")
    adapter_config = read_json(config_file)
    if "auto_map" in adapter_config:
        raise CheckpointError(f"{config_file}: auto_map / remote code is not allowed")
    sha = sha256_file(weights)
    if sha != metadata.weights_sha256:
        raise CheckpointError(f"{weights}: SHA-256 {sha[:12]}... does not match {METADATA_FILE} (file modified)")
    backend = get_backend(base_metadata.backend)
    base = backend.load(base_path, base_metadata, device=device, dtype=dtype)
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    known = {f.name for f in dataclasses.fields(LoraConfig)}
    config = LoraConfig(**{k: v for k, v in adapter_config.items() if k in known and k != "peft_type"})
    peft_model = get_peft_model(base.model, config)
    state = load_file(str(weights), device=str(next(base.model.parameters()).device))
    result = set_peft_model_state_dict(peft_model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k]
    if unexpected or missing:
        raise CheckpointError(f"{weights}: adapter does not fit the base model (unexpected {unexpected[:3]}, "
                              f"missing {missing[:3]})")
    model = peft_model.merge_and_unload().eval()
    if dtype is not None:
        model = model.to(dtype)
    return Checkpoint(path=path, model=model, tokenizer=base.tokenizer, metadata=metadata, backend=backend)


def adapter_summary(path: Path) -> dict:
    """``adapter_config.json`` essentials (rank, alpha, targets) for ``ceed-vla info``."""
    data = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    return {k: data.get(k) for k in ("r", "lora_alpha", "target_modules")}
