"""``ceed-vla <subcommand>``: one entry point for every offline tool of the package.

Each subcommand's module exposes ``add_cli_arguments(parser)`` and ``cli_main(args) -> int``
(see :data:`COMMANDS`); the parsed arguments carry ``command_line``, the command as typed.
Modules are imported lazily so that ``ceed-vla --help`` stays fast and a broken optional
dependency only affects its own subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

# name -> (module[:prefix], one-line help). The module provides add_cli_arguments(parser) and
# cli_main(args), or add_<prefix>_arguments / <prefix>_main when a prefix is given.
COMMANDS: dict[str, tuple[str, str]] = {
    "bench-pipeline": (
        "ceed_vla_ros.tools.pipeline_bench",
        "Measure the ROS pipeline's latency, rates and CPU with the sim arm.",
    ),
    "bench-all": (
        "ceed_vla_ros.tools.bench_report",
        "Decoding speed, closed-loop success and ROS pipeline in one report.",
    ),
    "bench": ("ceed_vla_ros.tools.bench_decoding", "Benchmark HF generate vs AR / Jacobi / early-exit decoding."),
    "bench-gpu": (
        "ceed_vla_ros.tools.bench_gpu",
        "AR / Jacobi / early exit k=1..3 latency and GPU memory in bf16: tiny model and a random 7B-shaped LLM.",
    ),
    "bench-precision": (
        "ceed_vla_ros.tools.bench_precision",
        "How bfloat16 / float16 changes decoded action chunks vs float32 on held-out observations.",
    ),
    "bench-link": (
        "ceed_vla_ros.tools.link_bench",
        "The sim suite behind a lossy / delayed policy -> driver link: refusals, holds, success.",
    ),
    "bench-kinematics": (
        "ceed_vla_ros.tools.robot_bench:kinematics",
        "Cost and success of the arm driver's IK solves (pinocchio DLS) vs the control period.",
    ),
    "bench-transitions": (
        "ceed_vla_ros.tools.robot_bench:transitions",
        "Chunk transitions (replace, warm start, temporal ensemble, prefix pinning): jerk, boundary steps, success.",
    ),
    "bench-recorder": (
        "ceed_vla_ros.tools.recorder_bench",
        "The episode recorder's cost at its rate: frames written / dropped, CPU, write time per frame.",
    ),
    "bench-shutdown": (
        "ceed_vla_ros.tools.shutdown_bench",
        "Seconds each node of a bring-up takes to exit after Ctrl-C.",
    ),
    "collect-trajectories": (
        "ceed_vla_ros.training.trajectories",
        "Collect a teacher's Jacobi trajectories over demonstrations (distillation data).",
    ),
    "distill": (
        "ceed_vla_ros.training.train_student",
        "Consistency-distil a student from a teacher's Jacobi trajectories.",
    ),
    "demo": (
        "ceed_vla_ros.tools.demo",
        "Run a simulated robot's suite (arm, gripper_arm) for a few episodes with live progress; --video: "
        "a captioned mp4 / gif.",
    ),
    "episode": (
        "ceed_vla_ros.tools.episode",
        "Start, stop (save) or discard an episode of a running episode recorder.",
    ),
    "eval": (
        "ceed_vla_ros.tools.evaluation",
        "Closed-loop evaluation of checkpoints x decoding settings in the simulator.",
    ),
    "export-lerobot": (
        "ceed_vla_ros.datasets.export",
        "Turn simulator HDF5 recordings into a LeRobot v3.0 dataset (lossless by default).",
    ),
    "import-bag": (
        "ceed_vla_ros.datasets.rosbag",
        "Convert a rosbag2 recording (mcap, sqlite3) of camera, joint-state and command topics into LeRobot v3.0.",
    ),
    "import": (
        "ceed_vla_ros.tools.import_model",
        "Make a published model folder (OpenVLA, LLaVA) a checkpoint in the model directory, weights not copied.",
    ),
    "info": ("ceed_vla_ros.tools.info", "Show a checkpoint's metadata, parameter count and size on disk."),
    "inspect-lerobot": (
        "ceed_vla_ros.datasets.export:inspect",
        "Show (and with --check, read through) a LeRobot v3.0 / v2.1 dataset.",
    ),
    "launch": (
        "ceed_vla_ros.tools.launcher",
        "Start a bring-up (sim_arm, sim_gripper_arm, real_arm, record, record_sim) without ros2 launch.",
    ),
    "record": ("ceed_vla_ros.tools.record", "Record scripted-expert demonstrations to HDF5."),
    "soak": (
        "ceed_vla_ros.tools.pipeline_bench:soak",
        "Run the sim suite for minutes: memory, latency and errors at start vs end.",
    ),
    "train": ("ceed_vla_ros.training.train_teacher", "Train the teacher action-token policy from demonstrations."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ceed-vla",
        description="CEED-VLA tools: checkpoints, decoding benchmarks, simulation, training, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        # Arguments are added lazily in main() for the chosen subcommand only.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help") and not argv[0].startswith("-"):
            parser.error(f"unknown subcommand {argv[0]!r}; choose from: {', '.join(COMMANDS)}")
        parser.parse_args(argv or ["--help"])
        return 0
    name = argv[0]
    module_name, _, prefix = COMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    add_arguments = getattr(module, f"add_{prefix}_arguments" if prefix else "add_cli_arguments")
    run = getattr(module, f"{prefix}_main" if prefix else "cli_main")
    sub_parser = argparse.ArgumentParser(prog=f"ceed-vla {name}", description=COMMANDS[name][1])
    add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    args.command_line = "ceed-vla " + shlex.join(argv)  # what was run, for reports and provenance
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
