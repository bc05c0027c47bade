"""Where the package's installed files are: share/ceed_vla_ros (config, launch, shipped models)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "ceed_vla_ros"
MODEL_DIR_ENV = "CEED_VLA_MODEL_DIR"


def share_directory() -> Path:
    """``share/ceed_vla_ros`` of this install: from the ament index on a ROS 2 computer, else the
    environment's prefix (the pip install puts it at ``<sys.prefix>/share/ceed_vla_ros``)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # a ROS-free environment
        pass
    else:
        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, LookupError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    path = Path(sys.prefix) / "share" / PACKAGE
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: is ceed_vla_ros installed (make install / colcon build)?")
    return path


def default_model_dir() -> Path:
    """The shared model directory: ``$CEED_VLA_MODEL_DIR`` if set, else the shipped ``models/``."""
    configured = os.environ.get(MODEL_DIR_ENV)
    if configured:
        return Path(configured)
    return share_directory() / "models"


def resolve_model_dir(value: str) -> Path:
    """A ``model_dir`` parameter: empty means :func:`default_model_dir`; ``~`` is expanded."""
    return Path(value).expanduser() if value else default_model_dir()


def add_model_dir_argument(parser, help: str = "folder of named checkpoints") -> None:
    """``--model-dir`` of every ``ceed-vla`` subcommand: one default, :func:`default_model_dir`."""
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"{help} (default: ${MODEL_DIR_ENV}, else the shipped models/)")


def model_dir_argument(value: Path | str | None) -> Path:
    """The folder an ``--model-dir`` argument names (None: :func:`default_model_dir`)."""
    return Path(value).expanduser() if value else default_model_dir()

