"""Checkpoints: one folder ``<model_dir>/<name>/`` with everything the policy and the arm driver need.

Every checkpoint folder holds ``ceed_vla.yaml``
(:class:`~ceed_vla_ros.metadata.CheckpointMetadata`, read without torch by
:mod:`ceed_vla_ros.metadata`); its ``backend`` field (default ``ceed_tiny``) names the model backend
(:mod:`ceed_vla_ros.backends`) that checks the folder, loads the model and its tokenizer, and
builds prompts and image inputs. The model files sit in the folder or in the metadata's
``source_dir`` (an imported OpenVLA folder, ``ceed-vla import``). Folder layouts: the backends'
modules (:mod:`ceed_vla_ros.backends.ceed_tiny`, :mod:`ceed_vla_ros.backends.openvla`).

Every problem found while loading raises :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ceed_vla_ros.backends import get_backend
from ceed_vla_ros.backends.base import PICKLE_SUFFIXES, Checkpoint, sha256_file
from ceed_vla_ros.backends.ceed_tiny import REQUIRED_FILES, build_tiny_checkpoint, save_checkpoint
from ceed_vla_ros.metadata import METADATA_FILE, CheckpointError, read_metadata_file, resolve_checkpoint_path

__all__ = [
    "PICKLE_SUFFIXES",
    "REQUIRED_FILES",
    "Checkpoint",
    "build_tiny_checkpoint",
    "load_checkpoint",
    "load_checkpoint_arg",
    "load_checkpoint_path",
    "save_checkpoint",
    "sha256_file",
]


def load_checkpoint(
    model_dir: str | Path, name: str, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Checkpoint:
    """Load checkpoint ``name`` from ``model_dir`` (see :func:`load_checkpoint_path`)."""
    path = resolve_checkpoint_path(model_dir, name)
    return load_checkpoint_path(path, device=device, dtype=dtype)


def load_checkpoint_arg(
    model_dir: str | Path, name_or_path: str, *, device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Checkpoint:
    """A command-line checkpoint argument: a folder path if it contains a path separator (or is
    ``.``/``..``), else a checkpoint name inside ``model_dir``."""
    if os.sep in name_or_path or name_or_path in (".", ".."):
        return load_checkpoint_path(name_or_path, device=device, dtype=dtype)
    return load_checkpoint(model_dir, name_or_path, device=device, dtype=dtype)


def load_checkpoint_path(
    path: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Checkpoint:
    """Load and verify a checkpoint folder; the model is returned in eval mode, on ``device``
    (default CPU) in ``dtype`` (default float32).

    ``ceed_vla.yaml`` is read first (a missing or invalid one is refused); its ``backend`` then
    checks the folder and loads the model (what each backend refuses: its module's docstring;
    every backend refuses pickle-format files and never imports a checkpoint's code).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint folder does not exist")
    if not (path / METADATA_FILE).is_file():
        raise CheckpointError(f"{path / METADATA_FILE}: required checkpoint file is missing")
    metadata = read_metadata_file(path / METADATA_FILE)
    try:
        backend = get_backend(metadata.backend)
    except ValueError as error:
        raise CheckpointError(f"{path / METADATA_FILE}: {error}") from error
    return backend.load(path, metadata, device=device, dtype=dtype)
