"""Model backends: one interface (:class:`~ceed_vla_ros.backends.base.ModelBackend`), one entry per model family.

A checkpoint's ``ceed_vla.yaml`` names its ``backend`` (default ``ceed_tiny``); :func:`get_backend`
returns it. The decoders never see which backend runs: they talk to the backend's
:class:`~ceed_vla_ros.decoding.BlockLM` adapter.

``BACKENDS`` maps a name to ``module:class``; a backend's module is imported on first use.
"""

from __future__ import annotations

import importlib

from ceed_vla_ros.backends.base import Checkpoint, ModelBackend

BACKENDS: dict[str, str] = {
    "ceed_tiny": "ceed_vla_ros.backends.ceed_tiny:CeedTinyBackend",
    "openvla": "ceed_vla_ros.backends.openvla:OpenVlaBackend",
}

_instances: dict[str, ModelBackend] = {}


def get_backend(name: str) -> ModelBackend:
    """The backend called ``name``; ValueError naming the known ones otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"unknown model backend {name!r}; known backends: {', '.join(BACKENDS)}")
    if name not in _instances:
        module_name, _, class_name = BACKENDS[name].partition(":")
        _instances[name] = getattr(importlib.import_module(module_name), class_name)()
    return _instances[name]


__all__ = ["BACKENDS", "Checkpoint", "ModelBackend", "get_backend"]
