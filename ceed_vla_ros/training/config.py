"""Configurations of the training commands, validated once and saved beside each run.

:class:`TeacherConfig` is ``ceed-vla train`` (:mod:`ceed_vla_ros.training.train_teacher`),
:class:`DistillConfig` is ``ceed-vla distill`` (:mod:`ceed_vla_ros.training.train_student`).
Both are frozen dataclasses: the command-line parsers take their defaults from here,
``from_args`` builds one from the parsed arguments, ``__post_init__`` checks every value (a bad
one raises ``ValueError`` naming the option) and :meth:`save` writes ``<run-dir>/config.yaml``
(like LeRobot's train config), which :meth:`load` reads back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "config.yaml"
DEFAULT_L1_THRESHOLD = 0.1
"""``--l1-threshold`` of distillation: 5 % of the normalised action range (see train_student)."""

_PATH_FIELDS = ("model_dir", "run_dir", "init_checkpoint", "trajectories")
_PATH_TUPLE_FIELDS = ("data",)
_INT_TUPLE_FIELDS = ("vision_channels", "vision_strides")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


class _RunConfig:
    """What both configurations share: conversion from argparse, checks, YAML round trip."""

    @classmethod
    def from_args(cls, args, **overrides: Any):
        """The configuration of a parsed command line (``--no-progress`` -> ``progress=False``;
        unknown attributes are ignored)."""
        values = dict(vars(args))
        if "no_progress" in values:
            values["progress"] = not values.pop("no_progress")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**values, **overrides}.items() if k in names})

    def _normalise(self) -> None:
        from ceed_vla_ros.paths import model_dir_argument

        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        for name in _PATH_FIELDS:
            if hasattr(self, name) and getattr(self, name) is not None:
                set_(name, Path(getattr(self, name)))
        for name in _PATH_TUPLE_FIELDS:
            if hasattr(self, name):
                value = getattr(self, name)
                set_(name, tuple(Path(p) for p in ([value] if isinstance(value, (str, Path)) else value)))
        for name in _INT_TUPLE_FIELDS:
            if hasattr(self, name):
                set_(name, tuple(int(v) for v in getattr(self, name)))
        set_("model_dir", model_dir_argument(self.model_dir))
        if hasattr(self, "lerobot_map"):
            from ceed_vla_ros.datasets import FeatureMapping

            set_("lerobot_map", tuple(str(v) for v in self.lerobot_map or ()))
            try:
                FeatureMapping.parse(self.lerobot_map)
            except ValueError as error:
                raise ValueError(f"--lerobot-map: {error}") from None

    def _check(self, condition: bool, name: str, requirement: str) -> None:
        if not condition:
            raise ValueError(f"{_option(name)} {requirement}, got {getattr(self, name)!r}")

    def _check_common(self) -> None:
        if not self.data:
            raise ValueError("--data: give at least one demonstration file")
        for name in ("steps", "warmup", "weight_decay"):
            self._check(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("batch_size", "save_every", "log_every", "threads"):
            self._check(getattr(self, name) >= 1, name, "must be >= 1")
        self._check(self.lr > 0, "lr", "must be > 0")
        self._check(self.time_limit_min is None or self.time_limit_min > 0, "time_limit_min", "must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able values (paths as strings, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            out[f.name] = value
        return out

    def save(self, run_dir: Path) -> Path:
        """Write ``<run_dir>/config.yaml``; return its path."""
        path = Path(run_dir) / CONFIG_FILE
        path.write_text(yaml.safe_dump({"config": type(self).__name__, **self.to_dict()}, sort_keys=False))
        return path

    @classmethod
    def load(cls, path: Path):
        """Read a file written by :meth:`save` (a run folder or the file itself)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        values = yaml.safe_load(path.read_text())
        kind = values.pop("config", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"{path} holds a {kind}, not a {cls.__name__}")
        return cls(**values)


@dataclass(frozen=True)
class TeacherConfig(_RunConfig):
    """``ceed-vla train``: every option of the command (see its ``--help``)."""

    data: tuple[Path, ...]
    name: str = "sim_teacher"
    model_dir: Path | None = None  # None: $CEED_VLA_MODEL_DIR, else the shipped models/
    run_dir: Path = Path("runs/teacher")
    resume: bool = False
    steps: int = 6000
    time_limit_min: float | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200
    chunk_len: int = 4
    n_bins: int = 256
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    image_tokens: int = 4
    keypoints: int = 32
    vision_channels: tuple[int, ...] = (32, 32, 64, 64)
    vision_prompt_conditioning: bool = False
    vision_strides: tuple[int, ...] = (2, 1, 2, 1)
    aux_weight: float = 1.0
    target_aux_weight: float = 1.0
    shift: int = 2
    proprio_noise: float = 0.0
    init_checkpoint: Path | None = None
    init_norm: bool = False
    init_partial: bool = False
    first_action_weight: float = 1.0
    freeze_vision: bool = False
    oversample_first_steps: int = 0
    oversample_factor: int = 4
    max_episodes: int | None = None
    val_episodes: int = 20
    seed: int = 0
    save_every: int = 500
    log_every: int = 50
    threads: int = 2
    progress: bool = True
    command: str = ""  # the command line, for the checkpoint's provenance
    lerobot_map: tuple[str, ...] = ()  # FeatureMapping of LeRobot --data (KEY=VALUE items)

    def __post_init__(self) -> None:
        self._normalise()
        self._check_common()
        self._check(self.chunk_len >= 1, "chunk_len", "must be >= 1")
        self._check(self.n_bins >= 2, "n_bins", "must be >= 2")
        for name in ("hidden", "layers", "heads", "image_tokens", "keypoints", "oversample_factor"):
            self._check(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("shift", "proprio_noise", "first_action_weight", "oversample_first_steps", "val_episodes",
                     "aux_weight", "target_aux_weight"):
            self._check(getattr(self, name) >= 0, name, "must be >= 0")
        self._check(self.max_episodes is None or self.max_episodes >= 1, "max_episodes", "must be >= 1")
        if not self.vision_channels or len(self.vision_channels) != len(self.vision_strides):
            raise ValueError(f"--vision-channels {list(self.vision_channels)} and --vision-strides "
                             f"{list(self.vision_strides)} need the same, non-zero number of values")
        if (self.init_norm or self.freeze_vision or self.init_partial) and self.init_checkpoint is None:
            raise ValueError("--init-norm, --init-partial and --freeze-vision need --init-checkpoint")
        if self.init_norm and self.init_partial:
            raise ValueError("--init-norm keeps the init checkpoint's action statistics: not with --init-partial "
                             "(another action layout)")


@dataclass(frozen=True)
class DistillConfig(_RunConfig):
    """``ceed-vla distill``: every option of the command (see its ``--help``)."""

    teacher: str
    trajectories: Path
    data: tuple[Path, ...]
    out_name: str = "sim_student"
    model_dir: Path | None = None  # None: $CEED_VLA_MODEL_DIR, else the shipped models/
    run_dir: Path = Path("runs/student")
    resume: bool = False
    ar_weight: float = 1.0
    l1_threshold: float = DEFAULT_L1_THRESHOLD
    freeze_vision: bool = False
    steps: int = 2000
    time_limit_min: float | None = None
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 50
    seed: int = 0
    val_samples: int = 256
    eval_every: int = 500
    save_every: int = 250
    log_every: int = 25
    threads: int = 2
    progress: bool = True
    command: str = ""  # the command line, for the checkpoint's provenance
    lerobot_map: tuple[str, ...] = ()  # FeatureMapping of LeRobot --data (KEY=VALUE items)
    device: str = "auto"  # auto | cpu | cuda[:N]: where accelerate trains (cpu forces the CPU)
    mixed_precision: str = "no"  # accelerate's: no | bf16 | fp16 (master weights stay float32)
    lora_rank: int = 0  # 0: full fine-tuning; >= 1: LoRA adapters through peft (training/lora.py)
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = ""  # empty: the language model's attention and MLP projections
    lora_save: str = "merged"  # merged | adapter

    def __post_init__(self) -> None:
        self._normalise()
        self._check_common()
        for name in ("ar_weight", "l1_threshold", "val_samples", "eval_every", "lora_rank"):
            self._check(getattr(self, name) >= 0, name, "must be >= 0")
        self._check(self.mixed_precision in ("no", "bf16", "fp16"), "mixed_precision", "must be no, bf16 or fp16")
        self._check(self.lora_save in ("merged", "adapter"), "lora_save", "must be merged or adapter")
        self._check(self.lora_alpha > 0, "lora_alpha", "must be > 0")
        self._check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        from ceed_vla_ros.precision import PrecisionError, check_device_name

        try:
            check_device_name(self.device)
        except PrecisionError as error:
            raise ValueError(f"--device: {error}") from None

    def lora_settings(self):
        """The :class:`~ceed_vla_ros.training.lora.LoraSettings` of ``--lora-*`` (None without ``--lora-rank``)."""
        if not self.lora_rank:
            return None
        from ceed_vla_ros.training.lora import DEFAULT_TARGETS, LoraSettings

        return LoraSettings(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets or DEFAULT_TARGETS,
                            self.lora_save)
