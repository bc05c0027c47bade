"""``ceed-vla bench-all`` (``make bench``): every speed figure, measured side by side, in one report.

1. Decoding: forward passes and median/p90 ms per chunk for HF ``generate`` (AR), our AR, Jacobi and
   early exit at k = 1..n, for the teacher and the student, on simulator observations
   (:mod:`ceed_vla_ros.tools.bench_decoding`); ratios against HF generate.
2. Closed loop (:mod:`ceed_vla_ros.tools.evaluation`): success with counts, forward passes per chunk,
   policy Hz for teacher AR / teacher Jacobi / student Jacobi / student early exit at several k,
   same seeds for every setting; plot of success vs speed-up (one point per setting).
2b. Latency-aware closed loop (:mod:`ceed_vla_ros.tools.latency`): the same kind of settings with the
   simulator running on while the policy decodes, under the measured CPU latency and a modelled
   large-model latency (``--latencies``), on the static reach task and the dynamic ``reach_moving``,
   re-planning as soon as the policy is free; success with 95 % intervals vs policy Hz.
3. The ROS pipeline across processes over DDS with the sim arm (:mod:`ceed_vla_ros.tools.pipeline_bench`),
   idle and with every core loaded.
4. Our ratios beside the paper's, labelled as different models and hardware.

Everything goes to ``--out`` (``report.md``, JSON, PNG plots); nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from ceed_vla_ros.checkpoint import load_checkpoint
from ceed_vla_ros.decoding import TokenRange
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument
from ceed_vla_ros.tools.bench_decoding import format_pairs, format_table, run_benchmark, sim_prompts
from ceed_vla_ros.tools.evaluation import DEFAULT_EVAL_SEED, Setting, evaluate, markdown_table, write_report
from ceed_vla_ros.tools.latency import PAPER_OPENVLA_H100, LatencySpec

LATENCY_EVAL_SEED = 5_000_000
"""Seeds of the latency-aware closed loop (no training run used them)."""

PAPER = {  # arXiv 2506.13725, Table "LIBERO-Long": CEED-VLA vs AR (OpenVLA, H100)
    "tokens_per_s_speedup": 4.1,
    "control_hz_speedup": 4.3,
    "iterations_per_chunk": "about 2 per 3-action chunk (21 tokens; AR: 22 forward passes)",
}


def machine_description() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    return f"{os.cpu_count()} cores, {model}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def decoding_section(checkpoint_names: list[str], model_dir: Path, args: argparse.Namespace) -> tuple[str, dict]:
    text, figures = [], {}
    for name in checkpoint_names:
        checkpoint = load_checkpoint(model_dir, name)
        metadata = checkpoint.metadata
        vocab = checkpoint.model.config.text_config.vocab_size
        steps = list(range(1, metadata.block_len + 1)) if args.all_exit_steps else args.early_exit_steps
        rows = run_benchmark(checkpoint.model, sim_prompts(checkpoint, args.observations, args.seed),
                             metadata.block_len, TokenRange(vocab - metadata.n_bins, vocab),
                             repeats=args.repeats, early_exit_steps=steps, seed=args.seed)
        figures[name] = [row.__dict__ for row in rows]
        text.append(f"### {name} ({metadata.checkpoint_id}, {metadata.provenance.role}; block "
                    f"{metadata.chunk_len} x {metadata.action_dims} = {metadata.block_len} tokens)\n\n"
                    f"{format_table(rows)}\n\nSpeed-ups, before -> after (same run):\n\n{format_pairs(rows)}\n")
    return "\n".join(text), figures


def plot_success_vs_speedup(overall: list[dict], reference: str, out: Path) -> None:
    """Success (95 % Wilson bars) vs policy-Hz speed-up; one colour and marker per setting, named in a
    legend below the axes (text labels on the points stacked on each other where points coincide)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(s for s in overall if s["setting"] == reference)["policy_hz"]
    fig, ax = plt.subplots(figsize=(6.5, 5.2))
    colours, markers = plt.get_cmap("tab10"), "osD^vP*Xh"
    for index, s in enumerate(overall):
        speedup = s["policy_hz"] / base if base else float("nan")
        rate = 100 * s["success_rate"]
        error = [[max(0.0, rate - 100 * s.get("wilson_low", s["success_rate"]))],
                 [max(0.0, 100 * s.get("wilson_high", s["success_rate"]) - rate)]]
        ax.errorbar(speedup, rate, yerr=error, fmt=markers[index % len(markers)], color=colours(index % 10),
                    capsize=3, markersize=7, alpha=0.85, label=f"{s['setting']} ({s['successes']}/{s['episodes']})")
    ax.set_xlabel(f"speed-up of policy Hz over {reference}")
    ax.set_ylabel("success rate (%), 95 % Wilson interval")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    fig.savefig(out / "success_vs_speedup.png", dpi=120)
    plt.close(fig)


def comparison_table(decoding: dict, overall: list[dict], teacher: str, student_setting: str, student: str) -> str:
    def median_ms(name: str, method: str) -> float:
        return next(r["median_ms"] for r in decoding[name] if r["method"] == method)

    by = {s["setting"]: s for s in overall}
    k = student_setting.rsplit(":", 1)[1]
    token_speedup = median_ms(teacher, "ours: AR") / median_ms(student, f"ours: early exit k={k}")
    hz_speedup = by[student_setting]["policy_hz"] / by[f"{teacher}:ar"]["policy_hz"]
    ar_passes = by[f"{teacher}:ar"]["mean_forward_passes"]
    return "\n".join([
        "| | ours (sim arm, tiny VLA, this CPU) | paper (LIBERO-Long, OpenVLA 7B, H100) |",
        "|---|---:|---:|",
        f"| tokens/s speed-up, {student_setting} vs teacher AR (decode time) | {token_speedup:.1f}x | "
        f"{PAPER['tokens_per_s_speedup']}x |",
        f"| control (policy) Hz speed-up, closed loop | {hz_speedup:.1f}x | {PAPER['control_hz_speedup']}x |",
        f"| forward passes per chunk: AR -> {student_setting} | {ar_passes:.1f} -> "
        f"{by[student_setting]['mean_forward_passes']:.2f} | 22 -> about 3 |",
        f"| success: teacher AR -> {student_setting} | {by[f'{teacher}:ar']['success_rate']:.0%} -> "
        f"{by[student_setting]['success_rate']:.0%} | 53.2 % (AR, no chunk) -> 62.2 % |",
    ]) + "\n\nDifferent models, tasks and hardware: the ratios, not the absolute figures, are comparable.\n"


TEACHER_REACH_TARGET = 0.80
"""Issue target: the teacher with AR decoding succeeds in at least 80 % of reach episodes."""
MIN_PASS_RATIO = 4.0
"""Issue target: early exit needs at least 4x fewer forward passes per chunk than AR ..."""
MAX_SUCCESS_DROP = 0.05
"""... with success at most 5 points below the teacher's AR success."""


def targets_section(per_task: list[dict], teacher: str, student: str) -> str:
    """The training issue's targets, each with its measured figures and a plain met / NOT met."""
    rows = {(r["setting"], r["task"]): r for r in per_task}
    tasks = sorted({r["task"] for r in per_task})
    lines = ["| target | measured | verdict |", "|---|---|:---:|"]
    reach = rows.get((f"{teacher}:ar", "reach"))
    if reach is None:
        lines.append(f"| {teacher} AR reach success >= {TEACHER_REACH_TARGET:.0%} | not measured (no reach task) | - |")
    else:
        met = reach["success_rate"] >= TEACHER_REACH_TARGET
        lines.append(f"| {teacher} AR reach success >= {TEACHER_REACH_TARGET:.0%} | {reach['success_rate']:.0%} "
                     f"({reach['successes']}/{reach['episodes']}) | {'met' if met else '**NOT met**'} |")
    for setting in sorted({r["setting"] for r in per_task if r["setting"].startswith(f"{student}:early_exit:")}):
        ratios, drops = [], []
        for task in tasks:
            ar, ours = rows.get((f"{teacher}:ar", task)), rows.get((setting, task))
            if ar is None or ours is None:
                continue
            ratios.append(ar["mean_forward_passes"] / ours["mean_forward_passes"])
            drops.append((task, ar["success_rate"] - ours["success_rate"]))
        if not ratios:
            continue
        met = min(ratios) >= MIN_PASS_RATIO and all(drop <= MAX_SUCCESS_DROP + 1e-9 for _, drop in drops)
        change = ", ".join(f"{task} {round(-100 * drop) + 0:+d} pts" for task, drop in drops)  # + 0: no "-0"
        lines.append(f"| {setting}: >= {MIN_PASS_RATIO:.0f}x fewer forward passes than {teacher} AR, success at most "
                     f"{100 * MAX_SUCCESS_DROP:.0f} pts below | {min(ratios):.2f}x; {change} | "
                     f"{'met' if met else '**NOT met**'} |")
    return "\n".join(lines) + "\n"


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default="sim_teacher")
    parser.add_argument("--student", default="sim_student")
    add_model_dir_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--episodes", type=int, default=50, help="closed-loop episodes per task and setting")
    parser.add_argument("--tasks", nargs="+", default=["reach", "push"])
    parser.add_argument("--early-exit-steps", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--all-exit-steps", action="store_true", help="decoding: time early exit at every k = 1..n")
    parser.add_argument("--headline-exit-steps", type=int, default=2,
                        help="k of the student setting compared to the paper")
    parser.add_argument("--repeats", type=int, default=30, help="decoding: timed chunks per method")
    parser.add_argument("--observations", type=int, default=10, help="decoding: simulator observations")
    parser.add_argument("--pipeline-seconds", type=float, default=60.0, help="ROS pipeline: seconds per condition")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--latency-episodes", type=int, default=30,
                        help="latency-aware closed loop: episodes per task, setting and latency (0: skip it)")
    parser.add_argument("--latency-tasks", nargs="+", default=["reach", "reach_moving"])
    parser.add_argument("--latencies", nargs="+", default=["none", "measured", PAPER_OPENVLA_H100],
                        help="latency-aware closed loop: latencies (see ceed-vla eval --latency)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)


def cli_main(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model_dir = model_dir_argument(args.model_dir)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    command = getattr(args, "command_line", "ceed-vla bench-all")
    print("1/3 decoding speed ...", flush=True)
    decoding_md, decoding = decoding_section([args.teacher, args.student], model_dir, args)

    print("2/3 closed loop ...", flush=True)
    labels = [f"{args.teacher}:ar", f"{args.teacher}:jacobi", f"{args.student}:jacobi"] + [
        f"{args.student}:early_exit:{k}" for k in args.early_exit_steps
    ]
    results, steps = evaluate(
        [Setting.parse(label) for label in labels], model_dir, args.tasks, args.episodes, DEFAULT_EVAL_SEED, None, True
    )
    closed = write_report(
        results,
        steps,
        out / "closed_loop",
        {
            "command": command,
            "episodes": args.episodes,
            "seed": DEFAULT_EVAL_SEED,
            "tasks": args.tasks,
            "threads": args.threads,
        },
    )
    plot_success_vs_speedup(closed["overall"], f"{args.teacher}:ar", out)
    headline = f"{args.student}:early_exit:{args.headline_exit_steps}"
    comparison = comparison_table(decoding, closed["overall"], args.teacher, headline, args.student)
    targets = targets_section(closed["per_task"], args.teacher, args.student)

    latency_md = "(skipped)"
    if args.latency_episodes > 0:
        print("2b/3 latency-aware closed loop ...", flush=True)
        latency_labels = [f"{args.teacher}:ar", f"{args.teacher}:jacobi"] + [
            f"{args.student}:early_exit:{k}" for k in args.early_exit_steps if k <= 3
        ] + [f"{args.student}:early_exit:1+fused"]
        latencies = [LatencySpec.parse(text) for text in args.latencies]
        late_results, late_steps = evaluate(
            [Setting.parse(label) for label in latency_labels], model_dir, args.latency_tasks, args.latency_episodes,
            LATENCY_EVAL_SEED, 1, True, latencies=latencies,
        )
        late = write_report(late_results, late_steps, out / "latency", {
            "command": command, "episodes": args.latency_episodes, "seed": LATENCY_EVAL_SEED,
            "tasks": args.latency_tasks, "threads": args.threads, "latencies": args.latencies,
            "load_average_end": list(os.getloadavg()),
        })
        latency_md = (
            f"{args.latency_episodes} episodes per task, setting and latency, seeds {LATENCY_EVAL_SEED}.."
            f"{LATENCY_EVAL_SEED + args.latency_episodes - 1}; the policy re-plans as soon as it is free (at most "
            f"every step); `{PAPER_OPENVLA_H100}` = OpenVLA-7B on an H100 from the paper's figures "
            f"(58 ms prefill, 18 ms per further pass); `measured` = this CPU now (load average "
            f"{os.getloadavg()[0]:.1f}).\n\n{markdown_table(late['per_task'])}\n"
            "![success vs policy Hz](latency/success_vs_policy_hz.png)\n"
        )

    pipeline_md = "(skipped)"
    if not args.skip_pipeline:
        print("3/3 ROS pipeline ...", flush=True)
        from ceed_vla_ros.tools.pipeline_bench import (
            measure_idle_and_loaded,
            pipeline_table,
            run_suite,
            sim_suite_settings,
        )

        values, control_rate = sim_suite_settings(
            [
                f"model_dir:={model_dir}",
                f"checkpoint:={args.student}",
                "decoding_mode:=early_exit",
                f"early_exit_steps:={args.headline_exit_steps}",
            ]
        )

        runs, log = run_suite(
            values,
            lambda suite, probe: measure_idle_and_loaded(
                suite, probe, args.pipeline_seconds, os.cpu_count() or 2, 8.0, 2_000_000, control_rate
            ),
        )
        (out / "pipeline.json").write_text(json.dumps(runs, indent=2))
        (out / "pipeline_nodes.log").write_text(log)
        pipeline_md = pipeline_table(runs)

    (out / "decoding.json").write_text(json.dumps(decoding, indent=2))
    k = args.headline_exit_steps
    report = f"""# ceed_vla_ros benchmark

Machine: {machine_description()}. Command: `{command}` ({time.perf_counter() - started:.0f} s).
Closed loop: {args.episodes} episodes per task and setting, tasks {", ".join(args.tasks)}, seeds
{DEFAULT_EVAL_SEED}..{DEFAULT_EVAL_SEED + args.episodes - 1}, {steps} action(s) executed per chunk.
Decoding: {args.repeats} timed chunks per method over {args.observations} simulator observations (seed {args.seed}).

## Targets (training issue), measured in this run's closed loop

{targets}
## How we compare

{comparison}
## Closed loop

{markdown_table(closed["per_task"] + closed["overall"])}
![success vs speed-up](success_vs_speedup.png)
![success vs forward passes](closed_loop/success_vs_forward_passes.png)
![iterations](closed_loop/iterations_hist.png)

## Latency-aware closed loop (the world keeps moving while the policy decodes)

{latency_md}
## Decoding

Forward passes include the prefill; every argmax is restricted to the action tokens.

{decoding_md}
## ROS pipeline (sim arm, {args.student} early exit k={k}, {args.pipeline_seconds:.0f} s per column)

image->/actions = receive time of the chunk minus the stamp of its camera frame; transport+preprocess
= that minus decode time; /actions->command = first driver command after a chunk; the command period
error is measured at the receiver (DDS delivery jitter included).

{pipeline_md}
"""
    (out / "report.md").write_text(report)
    print(report)
    print(f"report in {out / 'report.md'}")
    return 0
