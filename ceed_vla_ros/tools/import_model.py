"""``ceed-vla import openvla|llava SOURCE_DIR --name NAME``: make a published model folder a checkpoint.

``llava``: a LLaVA folder as transformers' conversion script writes it (see
:mod:`ceed_vla_ros.backends.llava`); its action / proprio statistics come from ``--stats`` (kept
outside the checkpoint, as LLaVA-VLA does) and ``--proprio-names`` are written into the prompt
as tokens. ``openvla``: :mod:`ceed_vla_ros.backends.openvla`.

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

from ceed_vla_ros.metadata import (
    ACTION_SPACES,
    DELTA_FRAMES,
    DELTA_REFERENCES,
    EE_ROTATIONS,
    GRIPPER_MODES,
    CheckpointError,
    EndEffectorSpec,
    GripperSpec,
)
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument

KINDS = ("llava", "openvla")


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
        default=None,
        help="actions per decoded chunk: 1 for openvla-7b (the openvla default), e.g. 3 for chunked fine-tunes; "
        "5 for LLaVA-VLA (the llava default)",
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
        help="joint spaces: names of the action dimensions (default for 7: x y z roll pitch yaw gripper); "
        "ee_delta / ee_absolute: the arm joints the driver commands (required)",
    )
    ee = parser.add_argument_group("end-effector actions (ee_delta / ee_absolute; see metadata.EndEffectorSpec)")
    ee.add_argument("--base-frame", default=None, help="URDF link the poses are in (default base_link)")
    ee.add_argument("--tip-frame", default=None, help="URDF link whose pose the actions move (default tool_tip)")
    ee.add_argument("--rotation", choices=EE_ROTATIONS, default=None, help="rotation dims (default rpy)")
    ee.add_argument("--delta-frame", choices=DELTA_FRAMES, default=None,
                    help="frame ee_delta steps are applied in (default base)")
    ee.add_argument("--delta-reference", choices=DELTA_REFERENCES, default=None,
                    help="each step relative to the pose at the image (image_pose, the default) or to the "
                    "previous step's target (previous_step: per-step deltas, as Bridge / LIBERO recorded them)")
    grip = parser.add_argument_group("gripper (the last action dim; default with ee_* and one dim more than the pose)")
    grip.add_argument("--gripper", choices=GRIPPER_MODES, default=None,
                      help="binary (threshold) or continuous (default binary); with joint spaces it makes the "
                      "last action dim a gripper")
    grip.add_argument("--gripper-closed", type=float, default=None, help="action value meaning closed (default 0)")
    grip.add_argument("--gripper-open", type=float, default=None,
                      help="action value meaning open (default 1; LIBERO-style -1 = open: "
                      "--gripper-closed 1 --gripper-open -1)")
    grip.add_argument("--gripper-threshold", type=float, default=None,
                      help="binary: open at or past this (default 0.5, or midway between the two values)")
    parser.add_argument("--copy", action="store_true", help="copy the model files instead of referencing SOURCE_DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint of that name")
    llava = parser.add_argument_group("llava")
    llava.add_argument("--stats", type=Path, help="statistics file (YAML/JSON: action and proprio q01/q99 or mean/std)")
    llava.add_argument("--proprio-names", nargs="*", default=[], help="proprio inputs written as prompt tokens")
    llava.add_argument("--prompt-template", default=None,
                       help="with <image>, {instruction} and {proprio} (default: vicuna_v1, see backends/llava.py)")


def action_layout_from_args(args: argparse.Namespace) -> tuple[EndEffectorSpec | None, GripperSpec | None]:
    """The end-effector and gripper sections the options ask for (None: the defaults decide)."""
    ee_values = {"base_frame": args.base_frame, "tip_frame": args.tip_frame, "rotation": args.rotation,
                 "delta_frame": args.delta_frame, "delta_reference": args.delta_reference}
    ee_given = {k: v for k, v in ee_values.items() if v is not None}
    end_effector = EndEffectorSpec(**ee_given) if args.action_space.startswith("ee_") or ee_given else None
    grip_values = {"mode": args.gripper, "closed_value": args.gripper_closed,
                   "open_value": args.gripper_open, "threshold": args.gripper_threshold}
    grip_given = {k: v for k, v in grip_values.items() if v is not None}
    if grip_given and "threshold" not in grip_given and {"closed_value", "open_value"} <= set(grip_given):
        grip_given["threshold"] = (grip_given["closed_value"] + grip_given["open_value"]) / 2
    return end_effector, (GripperSpec(**grip_given) if grip_given else None)


def cli_main(args: argparse.Namespace) -> int:
    try:
        args.end_effector, args.gripper_spec = action_layout_from_args(args)
    except (TypeError, ValueError) as error:
        print(f"error: {error}")
        return 2
    if args.kind == "llava":
        return import_llava_main(args)
    from ceed_vla_ros.backends.openvla import import_openvla

    model_dir = model_dir_argument(args.model_dir)
    args.chunk_len = 1 if args.chunk_len is None else args.chunk_len
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
            end_effector=args.end_effector,
            gripper=args.gripper_spec,
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


def import_llava_main(args: argparse.Namespace) -> int:
    from ceed_vla_ros.backends.llava import import_llava

    if args.stats is None or not args.joint_names:
        print("error: llava needs --stats and --joint-names (LLaVA-VLA keeps its statistics outside the checkpoint)")
        return 2
    model_dir = model_dir_argument(args.model_dir)
    options = {"prompt_template": args.prompt_template} if args.prompt_template else {}
    try:
        metadata = import_llava(
            args.source, model_dir, args.name, stats_file=args.stats, joint_names=args.joint_names,
            proprio_names=args.proprio_names, chunk_len=5 if args.chunk_len is None else args.chunk_len, dt=args.dt,
            action_space=args.action_space, unnorm_key=args.unnorm_key,
            end_effector=args.end_effector, gripper=args.gripper_spec,
            command=getattr(args, "command_line", "ceed-vla import"), **options,
        )
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}")
        return 1
    print(f"imported {args.source} as {metadata.checkpoint_id} into {Path(model_dir) / args.name} "
          f"({metadata.chunk_len}x{metadata.action_dims} actions, weights not copied)")
    return 0
