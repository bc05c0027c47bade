"""Backend ``ceed_tiny``: the package's own small VLA (:mod:`ceed_vla_ros.model`), unchanged.

Folder contents::

    config.json              CeedVlaConfig (model_type "ceed_vla"; no auto_map / remote code)
    generation_config.json
    model.safetensors        weights (safetensors only; pickled weights are refused, never opened)
    tokenizer.json           WordLevel tokenizer (instruction words + specials + action tokens)
    tokenizer_config.json
    ceed_vla.yaml            CheckpointMetadata (``weights_sha256`` = SHA-256 of model.safetensors)

Prompt: image / proprio placeholders, then the templated instruction (:func:`~ceed_vla_ros.model.encode_prompt`);
images: :func:`~ceed_vla_ros.preprocess.preprocess_images` with the metadata's ``ImageSpec``;
action tokens: scheme ``ceed``, the last ``n_bins`` ids of the vocabulary.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import GenerationConfig, PreTrainedTokenizerFast

from ceed_vla_ros.backends.base import (
    PICKLE_SUFFIXES,
    Checkpoint,
    ModelBackend,
    read_json,
    refuse_pickles,
    resolve_dtype,
    sha256_file,
)
from ceed_vla_ros.metadata import METADATA_FILE, WEIGHTS_FILE, CheckpointError, CheckpointMetadata
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
from ceed_vla_ros.preprocess import preprocess_images

REQUIRED_FILES = ("config.json", WEIGHTS_FILE, "tokenizer.json", "tokenizer_config.json", METADATA_FILE)


class CeedTinyBackend(ModelBackend):
    """Our CoordConv-keypoint + Llama model (see :mod:`ceed_vla_ros.model`)."""

    name = "ceed_tiny"
    action_token_scheme = "ceed"

    def check_folder(self, path: Path, metadata: CheckpointMetadata) -> None:
        """Refused: missing files; any pickle-format file in the folder (refused even next to
        safetensors and never opened); ``auto_map`` in config.json / tokenizer_config.json (remote
        code); a model_type other than ``ceed_vla``; weights whose SHA-256 differs from the metadata;
        an unreadable safetensors file."""
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint folder does not exist")
        refuse_pickles(path)
        for required in REQUIRED_FILES:
            if not (path / required).is_file():
                raise CheckpointError(f"{path / required}: required checkpoint file is missing")
        config_dict = read_json(path / "config.json")
        for json_file in ("config.json", "tokenizer_config.json"):
            data = config_dict if json_file == "config.json" else read_json(path / json_file)
            if "auto_map" in data or data.get("trust_remote_code"):
                raise CheckpointError(f"{path / json_file}: auto_map / remote code is not allowed")
        if config_dict.get("model_type") != MODEL_TYPE:
            raise CheckpointError(
                f"{path / 'config.json'}: model_type {config_dict.get('model_type')!r}, expected {MODEL_TYPE!r}"
            )
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

    def load_model(self, path, metadata, device, dtype):
        weights = path / WEIGHTS_FILE
        try:
            model, info = CeedVlaForActionPrediction.from_pretrained(
                path, local_files_only=True, use_safetensors=True, dtype=resolve_dtype(dtype),
                output_loading_info=True, **({"device_map": str(device)} if device is not None else {}),
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
            check_consistency(model.config, tokenizer, metadata)
        except ValueError as error:
            raise CheckpointError(f"{path / METADATA_FILE}: {error}") from error
        return model, tokenizer

    def prompt_ids(self, model, tokenizer, metadata, instruction):
        return encode_prompt(tokenizer, metadata, model.config, instruction)

    def model_inputs(self, model, metadata, images, proprio):
        parameter = next(model.parameters())
        inputs = {"pixel_values": preprocess_images(images, metadata.image).to(parameter.device, parameter.dtype)}
        if metadata.proprio_dim:
            if proprio is None:
                raise ValueError("this checkpoint needs proprio (joint positions)")
            inputs["proprio"] = torch.as_tensor(proprio).reshape(-1, metadata.proprio_dim).to(
                parameter.device, parameter.dtype)
        return inputs

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
        """The image tokens see the prompt only (``prompt_length``); with ``frozen_vision`` the CNN stage
        runs once per distinct image row of the first half without gradients (state and fixed-point
        rows of a distillation batch share their images)."""
        inputs = dict(inputs)
        if frozen_vision:
            pixel_values = inputs.pop("pixel_values")
            size = pixel_values.shape[0] // 2
            with torch.no_grad():
                features = getattr(model, "module", model).vision_encoder.features(pixel_values[:size])
            inputs["vision_features"] = features.repeat(2, 1)
        return model(
            input_ids=input_ids, attention_mask=attention_mask, prompt_length=prompt_length, use_cache=False, **inputs
        ).logits

    def freeze_vision(self, model: torch.nn.Module) -> None:
        model.freeze_vision()

    def save(self, model, tokenizer, metadata, path):
        return save_checkpoint(model, tokenizer, metadata, path)


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
    check_consistency(model.config, tokenizer, metadata)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    sha = sha256_file(path / WEIGHTS_FILE)
    metadata = dataclasses.replace(
        metadata, weights_sha256=sha, checkpoint_id=f"{metadata.name}-{sha[:8]}", provenance=stamp_created(metadata)
    )
    (path / METADATA_FILE).write_text(metadata.to_yaml())
    pickles = sorted(p for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{path}: pickle-format files in the checkpoint folder: {[str(p) for p in pickles]}")
    return metadata


def stamp_created(metadata: CheckpointMetadata):
    """The provenance with ``created`` set to now when it is empty."""
    provenance = metadata.provenance
    if not provenance.created:
        created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
        provenance = dataclasses.replace(provenance, created=created)
    return provenance


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
    return Checkpoint(path=Path(path), model=model, tokenizer=tokenizer, metadata=saved, backend=CeedTinyBackend())


def check_consistency(config: CeedVlaConfig, tokenizer: PreTrainedTokenizerFast, metadata: CheckpointMetadata) -> None:
    """Raise ValueError where the metadata disagrees with the model config or the tokenizer."""
    if metadata.backend != CeedTinyBackend.name or metadata.action_token_scheme != "ceed":
        raise ValueError(
            f"backend {metadata.backend!r} / action_token_scheme {metadata.action_token_scheme!r}: a ceed_vla model "
            "needs backend ceed_tiny and scheme ceed"
        )
    if metadata.action_vocab_size not in (None, config.text_config.vocab_size):
        raise ValueError("a ceed_tiny checkpoint has its action tokens at the end of its vocabulary")
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

