"""``ceed-vla import openvla SOURCE_DIR --name NAME``: make a published model folder a checkpoint.

Checks the folder (config.json fields, every shard against the index and against the parameter
names and shapes the config implies, the tokenizer, the statistics, no pickles; nothing from the
folder is imported) and writes ``<model-dir>/NAME/ceed_vla.yaml`` pointing at it
(``source_dir``), without copying the weights (``--copy`` copies the folder's files instead,
its ``.py`` remote code left out). ``ceed-vla info NAME`` then shows it; the policy node loads it
as ``checkpoint:=NAME``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ceed_vla_ros.metadata import ACTION_SPACES, CheckpointError
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument

KINDS = ("openvla",)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="model family of SOURCE_DIR")
    parser.add_argument(
        "source", type=Path, help="the model folder as published (e.g. a download of openvla/openvla-7b)"
    )
    parser.add_argument("--name", required=True, help="checkpoint name (folder created in --model-dir)")
    add_model_dir_argument(parser, "where the checkpoint folder is written")
    parser.add_argument(
        "--unnorm-key",
        default=None,
        help="dataset whose action statistics un-normalise the actions (needed when there are several)",
    )
    parser.add_argument(
        "--chunk-len",
        type=int,
        default=1,
        help="actions per decoded chunk: 1 for openvla-7b, e.g. 3 for chunked fine-tunes",
    )
    parser.add_argument(
        "--action-space",
        required=True,
        choices=ACTION_SPACES,
        help="what the action dimensions mean for the arm driver",
    )
    parser.add_argument("--dt", type=float, required=True, help="seconds between the actions of a chunk")
    parser.add_argument(
        "--joint-names",
        nargs="+",
        default=None,
        help="names of the action dimensions (default for 7: x y z roll pitch yaw gripper)",
    )
    parser.add_argument("--copy", action="store_true", help="copy the model files instead of referencing SOURCE_DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint of that name")


def cli_main(args: argparse.Namespace) -> int:
    from ceed_vla_ros.backends.openvla import import_openvla

    model_dir = model_dir_argument(args.model_dir)
    try:
        metadata = import_openvla(
            args.source,
            model_dir,
            args.name,
            action_space=args.action_space,
            dt=args.dt,
            unnorm_key=args.unnorm_key,
            chunk_len=args.chunk_len,
            joint_names=args.joint_names,
            copy=args.copy,
            overwrite=args.overwrite,
        )
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}")
        return 1
    print(
        f"imported {args.source} as {metadata.checkpoint_id} into {Path(model_dir) / args.name} "
        f"({metadata.chunk_len}x{metadata.action_dims} actions, unnorm_key {metadata.backend_options['unnorm_key']})"
    )
    return 0
