"""``ceed-vla import llava|openvla SOURCE_DIR --name NAME``: our metadata for a model folder, no weights copied.

Writes ``<model-dir>/<NAME>/ceed_vla.yaml`` whose ``source_dir`` points at ``SOURCE_DIR`` (the
weights stay where they are); ``ceed-vla info NAME`` then shows it and the policy loads it by name.
A bad folder (missing shard, an index that disagrees with the shards, wrong key names, a pickle
beside the safetensors, ``auto_map``, an unknown ``--unnorm-key``) gets one error naming the file.

``llava``: a LLaVA folder as transformers' conversion script writes it (see
:mod:`ceed_vla_ros.backends.llava`); the action / proprio statistics come from ``--stats`` (kept
outside the checkpoint, as LLaVA-VLA does). ``openvla``: :mod:`ceed_vla_ros.backends.openvla`.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ceed_vla_ros.metadata import CheckpointError
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument

IMPORTERS = {
    "llava": "ceed_vla_ros.backends.llava:import_llava",
    "openvla": "ceed_vla_ros.backends.openvla:import_openvla",
}


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=sorted(IMPORTERS), help="model family (the checkpoint's backend)")
    parser.add_argument("source", type=Path, help="the model folder (config.json, safetensors, tokenizer)")
    parser.add_argument("--name", required=True, help="checkpoint name (folder in --model-dir)")
    add_model_dir_argument(parser, "where the checkpoint's metadata folder is written")
    parser.add_argument("--unnorm-key", default=None, help="dataset whose statistics unnormalise the actions")
    llava = parser.add_argument_group("llava")
    llava.add_argument("--stats", type=Path, help="statistics file (YAML/JSON: action and proprio q01/q99 or mean/std)")
    llava.add_argument("--joint-names", nargs="+", help="one name per action dimension, in order")
    llava.add_argument("--proprio-names", nargs="*", default=[], help="proprio inputs written as prompt tokens")
    llava.add_argument("--chunk-len", type=int, default=5, help="actions per chunk (LLaVA-VLA: 5)")
    llava.add_argument("--dt", type=float, default=0.1, help="seconds between chunk steps")
    llava.add_argument("--action-space", default="joint_absolute", choices=("joint_absolute", "joint_delta"))
    llava.add_argument("--prompt-template", default=None,
                       help="with <image>, {instruction} and {proprio} (default: vicuna_v1, see backends/llava.py)")


def cli_main(args: argparse.Namespace) -> int:
    module_name, _, function = IMPORTERS[args.kind].partition(":")
    try:
        importer = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        print(f"error: importing {args.kind} folders is not available here ({error})")
        return 1
    model_dir = model_dir_argument(args.model_dir)
    command = getattr(args, "command_line", "ceed-vla import")
    try:
        if args.kind == "llava":
            if args.stats is None or not args.joint_names:
                print("error: llava needs --stats and --joint-names (LLaVA-VLA keeps its statistics outside)")
                return 2
            options = {"prompt_template": args.prompt_template} if args.prompt_template else {}
            metadata = importer(args.source, model_dir, args.name, stats_file=args.stats, joint_names=args.joint_names,
                                proprio_names=args.proprio_names, chunk_len=args.chunk_len, dt=args.dt,
                                action_space=args.action_space, unnorm_key=args.unnorm_key, command=command,
                                **options)
        else:
            metadata = importer(args.source, model_dir, args.name, unnorm_key=args.unnorm_key)
    except CheckpointError as error:
        print(f"error: {error}")
        return 1
    print(f"wrote {model_dir / args.name / 'ceed_vla.yaml'} ({metadata.checkpoint_id}, backend {metadata.backend}, "
          f"weights in {args.source})")
    return 0
