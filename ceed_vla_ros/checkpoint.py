"""Checkpoints: one folder ``<model_dir>/<name>/`` with everything the policy and the arm driver need.

Folder contents::

    config.json              CeedVlaConfig (model_type "ceed_vla"; no auto_map / remote code)
    generation_config.json
    model.safetensors        weights (safetensors only; pickled weights are refused, never opened)
    tokenizer.json           WordLevel tokenizer (instruction words + specials + action tokens)
    tokenizer_config.json
    ceed_vla.yaml            CheckpointMetadata (see below)

``ceed_vla.yaml`` schema (``CheckpointMetadata.to_dict``)::

    format_version: 1
    name: reach-teacher                  # folder name
    checkpoint_id: reach-teacher-3f9c2a1b  # name + first 8 hex of the weights' SHA-256 (set on save)
    weights_sha256: 3f9c2a1b...          # full SHA-256 of model.safetensors, verified on load
    action_space: joint_delta            # joint_delta | joint_absolute
    joint_names: [shoulder_pan, shoulder_lift, elbow, wrist]
    action_dims: 4                       # == len(joint_names)
    chunk_len: 5                         # actions per decoded chunk
    dt: 0.1                              # seconds between chunk steps
    action_norm: {q01: [...], q99: [...], mask: [true, ...]}
    proprio_names: [shoulder_pan, ...]   # normalised joint positions fed as the proprio token ([] = none)
    proprio_norm: {q01: [...], q99: [...], mask: [...]}   # null when proprio_names is empty
    n_bins: 256
    vocab_size: 300                      # LM vocabulary incl. the action tokens (set on save)
    action_tokens:                       # derived, informational, checked on load
      first_id: 44                       # vocab_size - n_bins
      last_id: 299                       # vocab_size - 1
      mapping: token_id = vocab_size - 1 - bin, bin = clip(floor((a + 1) / 2 * n_bins), 0, n_bins - 1)
    image: {height: 64, width: 64, crop: none, resize: bilinear, channel_order: rgb,
            mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
    prompt_template: "In: What action should the robot take to {instruction}?\\nOut:"
    provenance: {role: teacher, parent: null, command: "...", seeds: {train: 0}, data: "...",
                 notes: "", created: "2026-01-01T00:00:00+00:00"}

Every problem found while loading raises :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from ceed_vla_ros.action_tokenizer import ActionTokenizer, NormStats
from ceed_vla_ros.model import MODEL_TYPE, CeedVlaConfig, CeedVlaForActionPrediction, prefix_token_ids

METADATA_FILE = "ceed_vla.yaml"
WEIGHTS_FILE = "model.safetensors"
REQUIRED_FILES = ("config.json", WEIGHTS_FILE, "tokenizer.json", "tokenizer_config.json", METADATA_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
FORMAT_VERSION = 1
ACTION_SPACES = ("joint_delta", "joint_absolute")
ROLES = ("teacher", "student")
DEFAULT_PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>", "<proprio>")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DEFAULT_MODEL_DIR_ENV = "CEED_VLA_MODEL_DIR"


class CheckpointError(Exception):
    """A checkpoint folder is missing, malformed, unsafe or inconsistent (message names the file)."""


def action_token(bin_index: int) -> str:
    """Tokenizer string of the action token of bin ``bin_index``."""
    return f"<act_{bin_index}>"


@dataclass
class ImageSpec:
    """How a camera image (H x W x 3 uint8) becomes ``pixel_values``.

    ``crop``: ``none`` or ``center_square`` (before resizing); ``resize``: torch interpolation mode
    (``bilinear``, antialiased); ``channel_order`` of the INPUT image (``rgb`` or ``bgr``);
    pixels are scaled to [0, 1] then ``(x - mean) / std`` per channel.
    """

    height: int = 64
    width: int = 64
    crop: str = "none"
    resize: str = "bilinear"
    channel_order: str = "rgb"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def validate(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")
        if self.crop not in ("none", "center_square"):
            raise ValueError(f"image crop must be none or center_square, got {self.crop!r}")
        if self.resize not in ("bilinear", "bicubic", "area", "nearest"):
            raise ValueError(f"image resize must be bilinear, bicubic, area or nearest, got {self.resize!r}")
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"image channel_order must be rgb or bgr, got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("image mean/std need 3 values each, std > 0")


@dataclass
class Provenance:
    """Where a checkpoint came from."""

    role: str = "teacher"
    parent: str | None = None
    command: str = ""
    seeds: dict[str, int] = field(default_factory=dict)
    data: str = ""
    notes: str = ""
    created: str = ""

    def validate(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"provenance role must be one of {ROLES}, got {self.role!r}")


@dataclass
class CheckpointMetadata:
    """Everything the policy and the arm driver need besides the weights (``ceed_vla.yaml``).

    ``vocab_size``, ``checkpoint_id`` and ``weights_sha256`` are filled by :func:`save_checkpoint`.
    """

    name: str
    action_space: str
    joint_names: list[str]
    action_dims: int
    chunk_len: int
    dt: float
    action_norm: NormStats
    proprio_names: list[str] = field(default_factory=list)
    proprio_norm: NormStats | None = None
    n_bins: int = 256
    vocab_size: int | None = None
    image: ImageSpec = field(default_factory=ImageSpec)
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    provenance: Provenance = field(default_factory=Provenance)
    checkpoint_id: str = ""
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.validate()

    @property
    def block_len(self) -> int:
        """Action tokens per chunk (``chunk_len * action_dims``)."""
        return self.chunk_len * self.action_dims

    @property
    def proprio_dim(self) -> int:
        return len(self.proprio_names)

    def validate(self) -> None:
        """Raise ValueError on any inconsistency inside the metadata."""
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"checkpoint name {self.name!r} must match {NAME_PATTERN.pattern}")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {self.format_version} (this code reads {FORMAT_VERSION})")
        if self.action_space not in ACTION_SPACES:
            raise ValueError(f"action_space must be one of {ACTION_SPACES}, got {self.action_space!r}")
        if self.action_dims < 1 or len(self.joint_names) != self.action_dims:
            raise ValueError(f"action_dims ({self.action_dims}) must equal len(joint_names) ({len(self.joint_names)})")
        if self.action_norm.dims != self.action_dims:
            raise ValueError(f"action_norm has {self.action_norm.dims} dims, action_dims is {self.action_dims}")
        if self.chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {self.chunk_len}")
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0 seconds, got {self.dt}")
        if (self.proprio_norm is None) != (not self.proprio_names):
            raise ValueError("proprio_norm must be given exactly when proprio_names is non-empty")
        if self.proprio_norm is not None and self.proprio_norm.dims != len(self.proprio_names):
            raise ValueError(f"proprio_norm has {self.proprio_norm.dims} dims, proprio_names has {len(self.proprio_names)}")
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins}")
        if self.vocab_size is not None and self.vocab_size <= self.n_bins:
            raise ValueError(f"vocab_size ({self.vocab_size}) must exceed n_bins ({self.n_bins})")
        if "{instruction}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{instruction}'")
        self.image.validate()
        self.provenance.validate()

    def action_tokenizer(self) -> ActionTokenizer:
        """The :class:`ActionTokenizer` of this checkpoint (needs ``vocab_size``)."""
        if self.vocab_size is None:
            raise ValueError("vocab_size is not set (it is filled when the checkpoint is saved)")
        return ActionTokenizer(self.vocab_size, self.n_bins, self.action_norm, self.chunk_len)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["action_norm"] = self.action_norm.to_dict()
        data["proprio_norm"] = self.proprio_norm.to_dict() if self.proprio_norm is not None else None
        data["image"]["mean"] = list(self.image.mean)
        data["image"]["std"] = list(self.image.std)
        if self.vocab_size is not None:
            data["action_tokens"] = {
                "first_id": self.vocab_size - self.n_bins,
                "last_id": self.vocab_size - 1,
                "mapping": "token_id = vocab_size - 1 - bin, bin = clip(floor((a + 1) / 2 * n_bins), 0, n_bins - 1)",
            }
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CheckpointMetadata:
        """Parse (and validate) the YAML mapping; raises ValueError / KeyError / TypeError."""
        data = dict(data)
        derived = data.pop("action_tokens", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        data["action_norm"] = NormStats.from_dict(data["action_norm"])
        if data.get("proprio_norm") is not None:
            data["proprio_norm"] = NormStats.from_dict(data["proprio_norm"])
        image = dict(data.get("image") or {})
        for key in ("mean", "std"):
            if key in image:
                image[key] = tuple(float(v) for v in image[key])
        data["image"] = ImageSpec(**image)
        data["provenance"] = Provenance(**(data.get("provenance") or {}))
        metadata = cls(**data)
        if derived is not None and metadata.vocab_size is not None:
            expected = (metadata.vocab_size - metadata.n_bins, metadata.vocab_size - 1)
            if (derived.get("first_id"), derived.get("last_id")) != expected:
                raise ValueError(f"action_tokens ids {derived} disagree with vocab_size/n_bins {expected}")
        return metadata

    def to_yaml(self) -> str:
        head = ("format_version", "name", "checkpoint_id", "weights_sha256")
        data = self.to_dict()
        ordered = {key: data.pop(key) for key in head} | data
        return yaml.dump(ordered, Dumper=_MetadataDumper, sort_keys=False, allow_unicode=True, width=120)


class _MetadataDumper(yaml.SafeDumper):
    """Readable YAML: lists of scalars inline, strings with newlines double-quoted."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if "\n" in data else None)


_MetadataDumper.add_representer(list, _represent_list)
_MetadataDumper.add_representer(str, _represent_str)


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


def encode_prompt(
    tokenizer: PreTrainedTokenizerFast, metadata: CheckpointMetadata, config: CeedVlaConfig, instruction: str
) -> list[int]:
    """Prompt ids: placeholders (``prefix_token_ids``) + tokenised ``prompt_template`` (no BOS/EOS)."""
    text = metadata.prompt_template.format(instruction=instruction.strip())
    return prefix_token_ids(config) + tokenizer(text, add_special_tokens=False)["input_ids"]


def build_tokenizer(texts: Iterable[str], n_bins: int = 256, template: str = DEFAULT_PROMPT_TEMPLATE) -> PreTrainedTokenizerFast:
    """WordLevel tokenizer: specials, the lower-cased words of ``template`` and ``texts``, then actions.

    Ids: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3, ``<image>`` 4, ``<proprio>`` 5, the words
    (sorted), and last the ``n_bins`` action tokens so that ``id = vocab_size - 1 - bin``.
    """
    pre_tokenizer = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for text in [template.replace("{instruction}", " "), *texts]:
        words.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(text.lower()))
    tokens = list(SPECIAL_TOKENS) + sorted(words - set(SPECIAL_TOKENS))
    tokens += [action_token(b) for b in range(n_bins - 1, -1, -1)]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<image>", "<proprio>"],
    )


def make_model_config(
    tokenizer: PreTrainedTokenizerFast,
    metadata: CheckpointMetadata,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    num_image_tokens: int = 4,
    num_keypoints: int = 32,
    vision_channels: tuple[int, ...] = (32, 32, 64, 64),
    vision_strides: tuple[int, ...] = (2, 1, 2, 1),
    vision_mlp_hidden: int = 256,
    max_position_embeddings: int = 512,
    vision_prompt_conditioning: bool = False,
) -> CeedVlaConfig:
    """A :class:`CeedVlaConfig` matching the tokenizer and metadata (vocab, proprio dim, image size)."""
    if metadata.image.height != metadata.image.width:
        raise ValueError("the model expects square images (image.height == image.width)")
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return CeedVlaConfig(
        text_config=text_config,
        image_size=metadata.image.height,
        vision_channels=list(vision_channels),
        vision_strides=list(vision_strides),
        num_keypoints=num_keypoints,
        vision_mlp_hidden=vision_mlp_hidden,
        num_image_tokens=num_image_tokens,
        vision_prompt_conditioning=vision_prompt_conditioning,
        proprio_dim=metadata.proprio_dim,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        proprio_token_id=tokenizer.convert_tokens_to_ids("<proprio>"),
    )


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


def resolve_checkpoint_path(model_dir: str | Path, name: str) -> Path:
    """``<model_dir>/<name>``; raises CheckpointError for names that are not one plain folder name
    or that resolve (e.g. through a symlink) outside ``model_dir``."""
    if not NAME_PATTERN.match(name) or name in (".", ".."):
        raise CheckpointError(f"{name!r}: invalid checkpoint name (must match {NAME_PATTERN.pattern})")
    root = Path(model_dir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise CheckpointError(f"{name!r}: resolves to {path}, outside the model dir {root}")
    return path


def load_checkpoint(model_dir: str | Path, name: str, *, allow_remote_code_config: bool = False) -> Checkpoint:
    """Load checkpoint ``name`` from ``model_dir`` (see :func:`load_checkpoint_path`)."""
    return load_checkpoint_path(resolve_checkpoint_path(model_dir, name), allow_remote_code_config=allow_remote_code_config)


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
        raise CheckpointError(f"{path / 'config.json'}: model_type {config_dict.get('model_type')!r}, expected {MODEL_TYPE!r}")
    metadata = _read_metadata(path / METADATA_FILE)
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


def new_model(config: CeedVlaConfig, seed: int) -> CeedVlaForActionPrediction:
    """A randomly initialised model, reproducible from ``seed``."""
    torch.manual_seed(seed)
    return CeedVlaForActionPrediction(config).eval()


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


def load_metadata(model_dir: str | Path, name: str) -> CheckpointMetadata:
    """Only the metadata of checkpoint ``name`` (no weights): what the camera node and the arm
    driver need. Raises CheckpointError like :func:`load_checkpoint`."""
    file = resolve_checkpoint_path(model_dir, name) / METADATA_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    return _read_metadata(file)


def list_checkpoints(model_dir: str | Path) -> list[str]:
    """Names of the folders in ``model_dir`` that hold a metadata file (not validated)."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / METADATA_FILE).is_file() and NAME_PATTERN.match(p.name))


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{file}: cannot read JSON ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return data


def _read_metadata(file: Path) -> CheckpointMetadata:
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CheckpointError(f"{file}: cannot read YAML ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a YAML mapping")
    try:
        metadata = CheckpointMetadata.from_dict(data)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{file}: invalid metadata ({type(error).__name__}: {error})") from error
    if metadata.vocab_size is None or not metadata.weights_sha256:
        raise CheckpointError(f"{file}: vocab_size and weights_sha256 must be set (write it with save_checkpoint)")
    if metadata.name != file.parent.name:
        raise CheckpointError(f"{file}: name {metadata.name!r} differs from the folder name {file.parent.name!r}")
    return metadata


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


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint folder path (containing '/') or a name inside --model-dir")
    parser.add_argument(
        "--model-dir",
        default=os.environ.get(DEFAULT_MODEL_DIR_ENV, "models"),
        help=f"folder holding named checkpoints (default: ${DEFAULT_MODEL_DIR_ENV} or ./models)",
    )


def cli_main(args: argparse.Namespace) -> int:
    """``ceed-vla info``: metadata, parameter count and size on disk of a checkpoint."""
    hf_logging.disable_progress_bar()
    try:
        checkpoint = load_checkpoint_arg(args.model_dir, args.checkpoint)
    except CheckpointError as error:
        print(f"error: {error}")
        return 1
    print(f"# checkpoint {checkpoint.metadata.checkpoint_id} at {checkpoint.path}")
    print(f"# parameters: {checkpoint.num_parameters():,}")
    print(f"# size on disk: {checkpoint.size_on_disk() / 1e6:.2f} MB")
    print(checkpoint.metadata.to_yaml(), end="")
    return 0
