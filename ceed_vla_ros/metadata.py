"""Checkpoint metadata: the torch-free contract between the policy, the camera node and the arm driver.

A checkpoint is one folder ``<model_dir>/<name>/`` (see :mod:`ceed_vla_ros.checkpoint` for its
files). Its ``ceed_vla.yaml`` holds :class:`CheckpointMetadata`; this module reads and writes it
and finds checkpoints in a model directory, importing neither torch nor transformers, so nodes
that only need the metadata (camera subscriber, arm driver) stay small.

``ceed_vla.yaml`` schema (``CheckpointMetadata.to_dict``)::

    format_version: 1
    name: reach-teacher                  # folder name
    checkpoint_id: reach-teacher-3f9c2a1b  # name + first 8 hex of the weights' SHA-256 (set on save)
    weights_sha256: 3f9c2a1b...          # full SHA-256 of model.safetensors, verified on load
    action_space: joint_delta            # joint_delta | joint_absolute | ee_delta | ee_absolute
    joint_names: [shoulder_pan, shoulder_lift, elbow, wrist]   # the joints the driver commands
    action_dims: 4                       # arm dims (len(joint_names), or 3 + rotation dims) + 1 with a gripper
    end_effector: null                   # ee_* only: {base_frame: base_link, tip_frame: tool_tip,
                                         #   rotation: rpy | axis_angle | none, delta_frame: base | tool,
                                         #   delta_reference: image_pose | previous_step}
    gripper: null                        # or {mode: binary | continuous, closed_value: 0.0, open_value: 1.0,
                                         #   threshold: 0.5}: the last action dim
    chunk_len: 5                         # actions per decoded chunk
    dt: 0.1                              # seconds between chunk steps
    action_norm: {q01: [...], q99: [...], mask: [true, ...]}
    proprio_names: [shoulder_pan, ...]   # normalised joint positions fed as the proprio token ([] = none)
    proprio_norm: {q01: [...], q99: [...], mask: [...]}   # null when proprio_names is empty
    n_bins: 256
    vocab_size: 300                      # LM vocabulary incl. the action tokens (set on save)
    action_token_scheme: ceed            # ceed | openvla (see action_tokenizer.py)
    action_vocab_size: null              # id base the action tokens count down from (null: vocab_size;
                                         # openvla: the text vocabulary without its padding, 32000)
    action_tokens:                       # derived, informational, checked on load
      first_id: 44                       # action base - n_bins
      last_id: 299                       # action base - 1
      mapping: token_id = vocab_size - 1 - bin, bin = clip(floor((a + 1) / 2 * n_bins), 0, n_bins - 1)
    image: {height: 64, width: 64, crop: none, resize: bilinear, channel_order: rgb,
            mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
    prompt_template: "In: What action should the robot take to {instruction}?\\nOut:"
    provenance: {role: teacher, parent: null, command: "...", seeds: {train: 0}, data: "...",
                 notes: "", created: "2026-01-01T00:00:00+00:00"}
    backend: ceed_tiny                   # model backend (ceed_vla_ros/backends): ceed_tiny | openvla
    source_dir: null                     # folder of the model files, absolute or relative to this
                                         # folder (null: this folder); set by `ceed-vla import`
    backend_options: {}                  # backend-specific settings, e.g. openvla {unnorm_key: ...}

``weights_sha256`` is the SHA-256 of model.safetensors for ``ceed_tiny``; backends with sharded
weights define their own digest (``openvla``: of the index and each shard's size and header).

Every problem found while reading raises :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ceed_vla_ros.action_tokenizer import ACTION_TOKEN_MAPPINGS, ACTION_TOKEN_SCHEMES, ActionTokenizer, NormStats

METADATA_FILE = "ceed_vla.yaml"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
ACTION_SPACES = ("joint_delta", "joint_absolute", "ee_delta", "ee_absolute")
EE_ROTATIONS = ("rpy", "axis_angle", "none")
DELTA_FRAMES = ("base", "tool")
DELTA_REFERENCES = ("image_pose", "previous_step")
GRIPPER_MODES = ("binary", "continuous")
ROLES = ("teacher", "student")
DEFAULT_BACKEND = "ceed_tiny"
BACKEND_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DEFAULT_PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class CheckpointError(Exception):
    """A checkpoint folder is missing, malformed, unsafe or inconsistent (message names the file)."""


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
class EndEffectorSpec:
    """Frames and rotation of end-effector actions ``[x, y, z, r1, r2, r3]`` (ee_delta / ee_absolute).

    Positions (m) are of ``tip_frame`` in ``base_frame`` (URDF link names). ``rotation``: ``rpy``
    (roll, pitch, yaw about fixed x, y, z: R = Rz(yaw) Ry(pitch) Rx(roll)), ``axis_angle`` (rotation
    vector) or ``none`` (position-only actions, 3 dims; the orientation is left to the IK).
    ee_delta: ``delta_frame`` ``base`` adds the translation in the base frame and left-multiplies the
    rotation (R' = dR R); ``tool`` applies both in the tip frame (p' = p + R dp, R' = R dR).
    ``delta_reference``: ``image_pose`` (every step relative to the tip pose at the image stamp, as
    ``joint_delta`` is) or ``previous_step`` (step i relative to step i - 1's target: per-step deltas
    as in Bridge / LIBERO data, composed along the chunk).
    """

    base_frame: str = "base_link"
    tip_frame: str = "tool_tip"
    rotation: str = "rpy"
    delta_frame: str = "base"
    delta_reference: str = "image_pose"

    def validate(self) -> None:
        if not self.base_frame or not self.tip_frame:
            raise ValueError("end_effector needs base_frame and tip_frame (URDF link names)")
        if self.rotation not in EE_ROTATIONS:
            raise ValueError(f"end_effector rotation must be one of {EE_ROTATIONS}, got {self.rotation!r}")
        if self.delta_frame not in DELTA_FRAMES:
            raise ValueError(f"end_effector delta_frame must be one of {DELTA_FRAMES}, got {self.delta_frame!r}")
        if self.delta_reference not in DELTA_REFERENCES:
            raise ValueError(f"end_effector delta_reference must be one of {DELTA_REFERENCES}, "
                             f"got {self.delta_reference!r}")

    @property
    def dims(self) -> int:
        return 3 if self.rotation == "none" else 6


@dataclass
class GripperSpec:
    """The gripper action: the last action dim. ``closed_value`` / ``open_value``: the action values
    that mean fully closed / open (either may be the larger: LIBERO's -1 = open is
    ``closed_value: 1, open_value: -1``). ``continuous``: the open fraction is
    ``(a - closed_value) / (open_value - closed_value)`` clipped to [0, 1]; ``binary``: fully open
    when that fraction is at least the fraction of ``threshold``, else fully closed."""

    mode: str = "binary"
    closed_value: float = 0.0
    open_value: float = 1.0
    threshold: float = 0.5

    def validate(self) -> None:
        if self.mode not in GRIPPER_MODES:
            raise ValueError(f"gripper mode must be one of {GRIPPER_MODES}, got {self.mode!r}")
        if self.closed_value == self.open_value:
            raise ValueError("gripper closed_value and open_value must differ")
        low, high = sorted((self.closed_value, self.open_value))
        if self.mode == "binary" and not low < self.threshold < high:
            raise ValueError(f"gripper threshold {self.threshold} must lie strictly between "
                             f"{self.closed_value} and {self.open_value}")

    def open_fraction(self, values: np.ndarray) -> np.ndarray:
        """Open fraction in [0, 1] (0 closed, 1 open) of raw gripper action values."""
        span = self.open_value - self.closed_value
        fraction = np.clip((np.asarray(values, dtype=np.float64) - self.closed_value) / span, 0.0, 1.0)
        if self.mode == "binary":
            return (fraction >= (self.threshold - self.closed_value) / span).astype(np.float64)
        return fraction


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
    end_effector: EndEffectorSpec | None = None
    gripper: GripperSpec | None = None
    checkpoint_id: str = ""
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION
    backend: str = DEFAULT_BACKEND
    action_token_scheme: str = "ceed"
    action_vocab_size: int | None = None
    source_dir: str | None = None
    backend_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def block_len(self) -> int:
        """Action tokens per chunk (``chunk_len * action_dims``)."""
        return self.chunk_len * self.action_dims

    @property
    def arm_dims(self) -> int:
        """Action dims before the gripper: one per joint, or the end-effector pose's."""
        if self.action_space.startswith("ee_"):
            return self.end_effector.dims if self.end_effector is not None else 0
        return len(self.joint_names)

    @property
    def proprio_dim(self) -> int:
        return len(self.proprio_names)

    @property
    def action_token_base(self) -> int | None:
        """The id the action tokens count down from (``action_vocab_size``, else ``vocab_size``)."""
        return self.action_vocab_size if self.action_vocab_size is not None else self.vocab_size

    def model_folder(self, checkpoint_folder: str | Path) -> Path:
        """Where the model files are: ``source_dir`` (relative to ``checkpoint_folder``) or the folder."""
        if not self.source_dir:
            return Path(checkpoint_folder)
        return (Path(checkpoint_folder) / self.source_dir).resolve()

    def validate(self) -> None:
        """Raise ValueError on any inconsistency inside the metadata."""
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"checkpoint name {self.name!r} must match {NAME_PATTERN.pattern}")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {self.format_version} (this code reads {FORMAT_VERSION})")
        if self.action_space not in ACTION_SPACES:
            raise ValueError(f"action_space must be one of {ACTION_SPACES}, got {self.action_space!r}")
        if not self.joint_names:
            raise ValueError("joint_names must name the driven joints")
        if self.action_space.startswith("ee_"):
            if self.end_effector is None:
                raise ValueError(f"action_space {self.action_space} needs an end_effector section (frames, rotation)")
            self.end_effector.validate()
        elif self.end_effector is not None:
            raise ValueError(f"end_effector is only for ee_delta / ee_absolute, not {self.action_space}")
        if self.gripper is not None:
            self.gripper.validate()
        expected = self.arm_dims + (1 if self.gripper is not None else 0)
        if self.action_dims != expected:
            what = "len(joint_names)" if not self.action_space.startswith("ee_") else "the end-effector pose dims"
            raise ValueError(f"action_dims ({self.action_dims}) must equal {what} ({self.arm_dims})"
                             f"{' + 1 (gripper)' if self.gripper is not None else ''} = {expected}")
        if self.action_norm.dims != self.action_dims:
            raise ValueError(f"action_norm has {self.action_norm.dims} dims, action_dims is {self.action_dims}")
        if self.chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {self.chunk_len}")
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0 seconds, got {self.dt}")
        if (self.proprio_norm is None) != (not self.proprio_names):
            raise ValueError("proprio_norm must be given exactly when proprio_names is non-empty")
        if self.proprio_norm is not None and self.proprio_norm.dims != len(self.proprio_names):
            raise ValueError(
                f"proprio_norm has {self.proprio_norm.dims} dims, proprio_names has {len(self.proprio_names)}"
            )
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins}")
        if self.vocab_size is not None and self.vocab_size <= self.n_bins:
            raise ValueError(f"vocab_size ({self.vocab_size}) must exceed n_bins ({self.n_bins})")
        if not BACKEND_NAME_PATTERN.match(self.backend):
            raise ValueError(f"backend {self.backend!r} must match {BACKEND_NAME_PATTERN.pattern}")
        if self.action_token_scheme not in ACTION_TOKEN_SCHEMES:
            raise ValueError(
                f"action_token_scheme must be one of {ACTION_TOKEN_SCHEMES}, got {self.action_token_scheme!r}"
            )
        if self.action_vocab_size is not None:
            if self.action_vocab_size < self.n_bins:
                raise ValueError(f"action_vocab_size ({self.action_vocab_size}) must be >= n_bins ({self.n_bins})")
            if self.vocab_size is not None and self.action_vocab_size > self.vocab_size:
                raise ValueError(f"action_vocab_size ({self.action_vocab_size}) exceeds vocab_size ({self.vocab_size})")
        if not isinstance(self.backend_options, dict):
            raise ValueError("backend_options must be a mapping")
        if "{instruction}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{instruction}'")
        self.image.validate()
        self.provenance.validate()

    def action_tokenizer(self) -> ActionTokenizer:
        """The :class:`ActionTokenizer` of this checkpoint (needs ``vocab_size``)."""
        if self.vocab_size is None:
            raise ValueError("vocab_size is not set (it is filled when the checkpoint is saved)")
        return ActionTokenizer(
            self.action_token_base, self.n_bins, self.action_norm, self.chunk_len, self.action_token_scheme
        )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["action_norm"] = self.action_norm.to_dict()
        data["proprio_norm"] = self.proprio_norm.to_dict() if self.proprio_norm is not None else None
        data["image"]["mean"] = list(self.image.mean)
        data["image"]["std"] = list(self.image.std)
        if self.vocab_size is not None:
            base = self.action_token_base
            data["action_tokens"] = {
                "first_id": base - self.n_bins,
                "last_id": base - 1,
                "mapping": ACTION_TOKEN_MAPPINGS[self.action_token_scheme],
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
        data["backend_options"] = dict(data.get("backend_options") or {})
        if data.get("end_effector") is not None:
            data["end_effector"] = EndEffectorSpec(**data["end_effector"])
        if data.get("gripper") is not None:
            data["gripper"] = GripperSpec(**{k: (v if k == "mode" else float(v)) for k, v in data["gripper"].items()})
        metadata = cls(**data)
        if derived is not None and metadata.vocab_size is not None:
            base = metadata.action_token_base
            expected = (base - metadata.n_bins, base - 1)
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


def load_metadata(model_dir: str | Path, name: str) -> CheckpointMetadata:
    """Only the metadata of checkpoint ``name`` (no weights): what the camera node and the arm
    driver need. Raises CheckpointError like :func:`load_checkpoint`."""
    file = resolve_checkpoint_path(model_dir, name) / METADATA_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    return read_metadata_file(file)


def list_checkpoints(model_dir: str | Path) -> list[str]:
    """Names of the folders in ``model_dir`` that hold a metadata file (not validated)."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / METADATA_FILE).is_file() and NAME_PATTERN.match(p.name))


def read_metadata_file(file: Path) -> CheckpointMetadata:
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
