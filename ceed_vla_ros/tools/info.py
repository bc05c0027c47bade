"""``ceed-vla info``: a checkpoint's metadata, parameter count and size on disk."""

from __future__ import annotations

import argparse

from transformers.utils import logging as hf_logging

from ceed_vla_ros.checkpoint import load_checkpoint_arg
from ceed_vla_ros.metadata import CheckpointError
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint folder path (containing '/') or a name inside --model-dir")
    add_model_dir_argument(parser, "folder holding named checkpoints")


def cli_main(args: argparse.Namespace) -> int:
    """``ceed-vla info``: metadata, parameter count and size on disk of a checkpoint."""
    hf_logging.disable_progress_bar()
    try:
        checkpoint = load_checkpoint_arg(model_dir_argument(args.model_dir), args.checkpoint)
    except CheckpointError as error:
        print(f"error: {error}")
        return 1
    print(f"# checkpoint {checkpoint.metadata.checkpoint_id} at {checkpoint.path}")
    print(f"# parameters: {checkpoint.num_parameters():,}")
    print(f"# size on disk: {checkpoint.size_on_disk() / 1e6:.2f} MB")
    print(checkpoint.metadata.to_yaml(), end="")
    return 0
