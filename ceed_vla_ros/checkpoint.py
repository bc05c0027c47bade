"""Checkpoints: one folder ``<model_dir>/<name>/`` with everything the policy and the arm driver need.

Folder contents::

    config.json              CeedVlaConfig (model_type "ceed_vla"; no auto_map / remote code)
    generation_config.json
    model.safetensors        weights (safetensors only; pickled weights are refused, never opened)
    tokenizer.json           WordLevel tokenizer (instruction words + specials + action tokens)
    tokenizer_config.json
    ceed_vla.yaml            CheckpointMetadata (see below)

``ceed_vla.yaml`` holds :class:`~ceed_vla_ros.metadata.CheckpointMetadata` (schema in
:mod:`ceed_vla_ros.metadata`, which reads it without torch).

Every problem found while loading raises :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import GenerationConfig, PreTrainedTokenizerFast

from ceed_vla_ros.action_tokenizer import ActionTokenizer
from ceed_vla_ros.metadata import (
    METADATA_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointMetadata,
    read_metadata_file,
    resolve_checkpoint_path,
)
from ceed_vla_ros.model import (
    MODEL_TYPE,
    CeedVlaConfig,
    CeedVlaForActionPrediction,
    action_token,
    build_tokenizer,
    encode_prompt,
    make_model_config,
    new_model,
)

REQUIRED_FILES = ("config.json", WEIGHTS_FILE, "tokenizer.json", "tokenizer_config.json", METADATA_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


@dataclass
class Checkpoint:
    """A loaded checkpoint: model (eval mode), text tokenizer, metadata and folder."""

    path: Path
    model: CeedVlaForActionPrediction
    tokenizer: PreTrainedTokenizerFast
    metadata: CheckpointMetadata

    @property
    def action_tokenizer(self) -> ActionTokenizer:
        return self.metadata.action_tokenizer()

    def prompt_ids(self, instruction: str) -> list[int]:
        """Full prompt ids: image/proprio placeholders, then the templated instruction."""
        return encode_prompt(self.tokenizer, self.metadata, self.model.config, instruction)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def size_on_disk(self) -> int:
        """Bytes of all files in the folder."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    model: CeedVlaForActionPrediction,
    tokenizer: PreTrainedTokenizerFast,
    metadata: CheckpointMetadata,
    path: str | Path,
) -> CheckpointMetadata:
    """Write a checkpoint folder (created if needed) and return the metadata as saved.

    Fills ``vocab_size`` (from the model), ``weights_sha256``, ``checkpoint_id`` and (if empty)
    ``provenance.created``; checks the metadata against model and tokenizer first. Raises
    CheckpointError if the folder holds pickle-format files afterwards (e.g. left from an older run):
    such a folder would be refused on load.
    """
    path = Path(path)
    vocab_size = model.config.text_config.vocab_size
    if metadata.vocab_size not in (None, vocab_size):
        raise ValueError(f"metadata vocab_size {metadata.vocab_size} != model vocab_size {vocab_size}")
    metadata = dataclasses.replace(metadata, vocab_size=vocab_size)
    _check_consistency(model.config, tokenizer, metadata)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    sha = sha256_file(path / WEIGHTS_FILE)
    provenance = metadata.provenance
    if not provenance.created:
        created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
        provenance = dataclasses.replace(provenance, created=created)
    metadata = dataclasses.replace(
        metadata, weights_sha256=sha, checkpoint_id=f"{metadata.name}-{sha[:8]}", provenance=provenance
    )
    (path / METADATA_FILE).write_text(metadata.to_yaml())
    pickles = sorted(p for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{path}: pickle-format files in the checkpoint folder: {[str(p) for p in pickles]}")
    return metadata


def load_checkpoint(model_dir: str | Path, name: str, *, allow_remote_code_config: bool = False) -> Checkpoint:
    """Load checkpoint ``name`` from ``model_dir`` (see :func:`load_checkpoint_path`)."""
    path = resolve_checkpoint_path(model_dir, name)
    return load_checkpoint_path(path, allow_remote_code_config=allow_remote_code_config)


def load_checkpoint_arg(model_dir: str | Path, name_or_path: str) -> Checkpoint:
    """A command-line checkpoint argument: a folder path if it contains a path separator (or is
    ``.``/``..``), else a checkpoint name inside ``model_dir``."""
    if os.sep in name_or_path or name_or_path in (".", ".."):
        return load_checkpoint_path(name_or_path)
    return load_checkpoint(model_dir, name_or_path)


def load_checkpoint_path(path: str | Path, *, allow_remote_code_config: bool = False) -> Checkpoint:
    """Load and verify a checkpoint folder; the model is returned in eval mode, fp32, on CPU.

    Refused with :class:`CheckpointError`: missing files; any pickle-format file in the folder
    (``*.bin *.pt *.pth *.pkl *.pickle *.ckpt *.joblib``; refused even next to safetensors and never
    opened); ``auto_map`` in config.json / tokenizer_config.json (remote code; the
    ``allow_remote_code_config`` override only skips this check -- remote code is never executed,
    our own class is always used); a model_type other than ``ceed_vla``; metadata that does not
    parse or validate; weights whose SHA-256 differs from the metadata (modified or truncated);
    an unreadable safetensors file; metadata that disagrees with the model or tokenizer.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint folder does not exist")
    pickles = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{path / pickles[0]}: pickle-format file(s) {pickles} in checkpoint; refusing to load")
    for required in REQUIRED_FILES:
        if not (path / required).is_file():
            raise CheckpointError(f"{path / required}: required checkpoint file is missing")
    config_dict = _read_json(path / "config.json")
    if not allow_remote_code_config:
        for json_file in ("config.json", "tokenizer_config.json"):
            data = config_dict if json_file == "config.json" else _read_json(path / json_file)
            if "auto_map" in data or data.get("trust_remote_code"):
                raise CheckpointError(f"{path / json_file}: auto_map / remote code is not allowed")
    if config_dict.get("model_type") != MODEL_TYPE:
        raise CheckpointError(
            f"{path / 'config.json'}: model_type {config_dict.get('model_type')!r}, expected {MODEL_TYPE!r}"
        )
    metadata = read_metadata_file(path / METADATA_FILE)
    weights = path / WEIGHTS_FILE
    sha = sha256_file(weights)
    if sha != metadata.weights_sha256:
        raise CheckpointError(
            f"{weights}: SHA-256 {sha[:12]}... does not match {METADATA_FILE} weights_sha256 "
            f"{metadata.weights_sha256[:12]!r}... (file modified or truncated)"
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            f.keys()
    except Exception as error:  # noqa: BLE001 - any parse failure of the file is reported the same way
        raise CheckpointError(f"{weights}: not a readable safetensors file ({error})") from error
    try:
        model, info = CeedVlaForActionPrediction.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=torch.float32, output_loading_info=True
        )
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{weights}: cannot load the model ({type(error).__name__}: {error})") from error
    bad_keys = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad_keys:
        raise CheckpointError(f"{weights}: weights do not match config.json: {bad_keys}")
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{path / 'tokenizer.json'}: cannot load the tokenizer ({error})") from error
    try:
        _check_consistency(model.config, tokenizer, metadata)
    except ValueError as error:
        raise CheckpointError(f"{path / METADATA_FILE}: {error}") from error
    model.eval()
    return Checkpoint(path=path, model=model, tokenizer=tokenizer, metadata=metadata)


def build_tiny_checkpoint(
    path: str | Path,
    metadata: CheckpointMetadata,
    *,
    seed: int = 0,
    instructions: Iterable[str] = (),
    **model_sizes,
) -> Checkpoint:
    """Build, save and return a randomly initialised checkpoint (tests, benchmarks, training start).

    ``instructions`` supply the tokenizer's words; ``model_sizes`` go to :func:`make_model_config`.
    """
    tokenizer = build_tokenizer(instructions, metadata.n_bins, metadata.prompt_template)
    model = new_model(make_model_config(tokenizer, metadata, **model_sizes), seed)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    provenance = dataclasses.replace(metadata.provenance, seeds={**metadata.provenance.seeds, "init": seed})
    saved = save_checkpoint(model, tokenizer, dataclasses.replace(metadata, provenance=provenance), path)
    return Checkpoint(path=Path(path), model=model, tokenizer=tokenizer, metadata=saved)


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{file}: cannot read JSON ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return data


def _check_consistency(config: CeedVlaConfig, tokenizer: PreTrainedTokenizerFast, metadata: CheckpointMetadata) -> None:
    """Raise ValueError where the metadata disagrees with the model config or the tokenizer."""
    vocab_size = config.text_config.vocab_size
    if metadata.vocab_size != vocab_size:
        raise ValueError(f"vocab_size {metadata.vocab_size} != model vocab_size {vocab_size}")
    if len(tokenizer) != vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, model vocab_size is {vocab_size}")
    vocab = tokenizer.get_vocab()
    for b in range(metadata.n_bins):
        if vocab.get(action_token(b)) != vocab_size - 1 - b:
            raise ValueError(
                f"tokenizer id of {action_token(b)} is {vocab.get(action_token(b))}, expected {vocab_size - 1 - b} "
                f"(action tokens must be the last n_bins={metadata.n_bins} ids)"
            )
    if vocab.get("<image>") != config.image_token_id or vocab.get("<proprio>") != config.proprio_token_id:
        raise ValueError("tokenizer <image>/<proprio> ids differ from config image_token_id/proprio_token_id")
    if config.image_token_id >= vocab_size - metadata.n_bins or config.proprio_token_id >= vocab_size - metadata.n_bins:
        raise ValueError("placeholder token ids fall inside the action-token range")
    if config.proprio_dim != metadata.proprio_dim:
        raise ValueError(f"model proprio_dim {config.proprio_dim} != len(proprio_names) {metadata.proprio_dim}")
    if not (metadata.image.height == metadata.image.width == config.image_size):
        raise ValueError(
            f"image {metadata.image.height}x{metadata.image.width} differs from model image_size {config.image_size}"
        )
