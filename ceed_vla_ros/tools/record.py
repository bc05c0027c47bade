"""``ceed-vla record``: scripted-expert demonstrations to HDF5 (see :mod:`ceed_vla_ros.sim.recorder`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ceed_vla_ros.sim.env import ALL_TASKS
from ceed_vla_ros.sim.recorder import record_dataset


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ceed-vla record``."""
    parser.add_argument("--task", choices=ALL_TASKS, default="reach", help="task to demonstrate")
    parser.add_argument("--robot", choices=("arm", "gripper_arm"), default=None,
                        help="simulated robot (default: gripper_arm for pick, else arm)")
    parser.add_argument("--episodes", type=int, required=True, help="episodes to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument("--image-size", type=int, default=64, help="square image size (px)")
    parser.add_argument("--horizon", type=int, default=None, help="steps per episode")
    parser.add_argument(
        "--only-successful", action="store_true", help="drop failed attempts, try more seeds"
    )
    parser.add_argument(
        "--compression", choices=("lzf", "gzip", "none"), default="lzf", help="image compression"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--action-noise",
        type=float,
        default=0.0,
        help="DART: std (rad, per joint) of Gaussian noise added to the EXECUTED expert target; "
        "the stored labels stay the expert's clean action for each visited state",
    )
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of the action noise")


def cli_main(args: argparse.Namespace) -> int:
    """Run ``ceed-vla record``; print a summary; return 1 if fewer episodes than asked."""
    if args.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    if args.action_noise < 0:
        raise SystemExit("--action-noise must be >= 0")
    try:
        summary = record_dataset(
            args.task,
            args.episodes,
            args.out,
            seed=args.seed,
            image_size=args.image_size,
            horizon=args.horizon,
            only_successful=args.only_successful,
            compression=None if args.compression == "none" else args.compression,
            overwrite=args.overwrite,
            action_noise=args.action_noise,
            noise_seed=args.noise_seed,
            robot=args.robot,
        )
    except ValueError as error:
        print(f"error: {error}")
        return 1
    except FileExistsError as error:
        print(f"error: {error}")
        return 1
    print(
        f"wrote {summary.episodes} {args.task} episodes "
        f"{f'(action noise {args.action_noise} rad) ' if args.action_noise > 0 else ''}to {summary.path} "
        f"({summary.file_bytes / 1e6:.1f} MB) in {summary.seconds:.1f} s: "
        f"expert success {summary.successes}/{summary.attempts} ({summary.success_rate:.1%}), "
        f"{summary.steps} steps ({summary.steps / max(summary.seconds, 1e-9):.0f} steps/s)"
    )
    return 0 if summary.episodes == args.episodes else 1
