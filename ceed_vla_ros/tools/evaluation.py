"""``ceed-vla eval``: closed-loop evaluation of checkpoints x decoding settings in the simulator.

Settings syntax (one or more after ``--settings``)::

    CHECKPOINT:MODE[:EXIT_STEPS][@INIT][+fused][+keep]

* ``CHECKPOINT``: a checkpoint folder name inside ``--model-dir`` (e.g. ``sim_teacher``);
* ``MODE``: ``ar``, ``jacobi`` or ``early_exit`` (``early_exit`` needs ``EXIT_STEPS`` >= 1, the
  Jacobi iteration cap);
* ``@INIT`` (optional, Jacobi / early exit only): initial block, ``random_prompt_tokens`` or
  ``warm_start``; default ``--init``.
* ``+fused`` (Jacobi / early exit): prefill and first iteration in one forward (early exit k costs k
  passes); ``+keep``: keep the final tokens' KV cache between iterations (see ceed_vla_ros.decoding).

Examples: ``sim_teacher:ar sim_teacher:jacobi sim_student:early_exit:2 sim_student:jacobi@warm_start``.

Protocol: for every task in ``--tasks`` episode ``i`` uses seed ``--seed + i`` (the same seeds, hence
the same layouts and named cubes, for every setting; the default seeds lie far from the recorded
training seeds). Each query decodes one action chunk from the current image, joints and
instruction; the first ``--execute-steps`` actions (default: the whole chunk) are executed
open-loop as ``target_i = joints_at_image + a_i`` (action space ``joint_delta``; ``joint_absolute``
uses ``a_i`` directly), then the policy is queried again. An episode ends on success or at the
task horizon.

Reported per setting (and per task):

* success rate with count (``successes/episodes``);
* mean forward passes per chunk (model forwards INCLUDING the prefill: AR = chunk tokens);
* mean Jacobi iterations per chunk (block forwards; for AR the ``n - 1`` single-token steps);
* median decode ms per chunk (wall time of ``decode`` incl. the prefill, excl. image preprocessing);
* policy Hz = ``execute_steps * chunks / total decode seconds``: actions per second the decoder
  alone could sustain (chunks per second of decode time x steps executed per chunk);

Latency-aware (``--latency measured model:58,18 ...``, see :mod:`ceed_vla_ros.tools.latency`): the
simulator keeps running while the policy decodes; every setting runs once per latency on the same
seeds (rows ``SETTING [LATENCY]``), the policy queries every ``execute_steps x dt`` or as soon as
it is free, and the report adds the charged latency per chunk, the chunk steps dropped because
they were past on arrival, chunks refused (all steps past) and the share of time the arm held.
There, policy Hz = ``execute_steps * chunks / total charged latency seconds``.

written to ``--out`` as ``results.md`` (markdown table), ``results.json`` (everything, incl. per
episode outcomes) and two plots: ``success_vs_forward_passes.png`` and ``iterations_hist.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ceed_vla_ros.checkpoint import Checkpoint, load_checkpoint
from ceed_vla_ros.decoding import INIT_STRATEGIES, DecodeSettings
from ceed_vla_ros.metadata import CheckpointError
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument
from ceed_vla_ros.policy import CeedVlaPolicy
from ceed_vla_ros.precision import add_precision_arguments, precision_from_args
from ceed_vla_ros.sim.chunk_targets import ChunkTargets
from ceed_vla_ros.sim.env import ALL_TASKS, TASKS, TabletopArmEnv
from ceed_vla_ros.sim.recorder import default_robot
from ceed_vla_ros.tools.latency import LatencySpec, policy_decider, run_realtime_episode
from ceed_vla_ros.tools.statistics import format_rate, wilson_interval

DEFAULT_EVAL_SEED = 1_000_000
_SETTING = re.compile(
    r"^(?P<ckpt>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<mode>[a-z_]+)(?::(?P<steps>\d+))?(?:@(?P<init>[a-z_]+))?"
    r"(?P<flags>(?:\+[a-z]+)*)$"
)


@dataclass(frozen=True)
class Setting:
    """One evaluated setting: a checkpoint name and its :class:`DecodeSettings`."""

    checkpoint: str
    decode: DecodeSettings
    label: str = ""

    @classmethod
    def parse(cls, text: str, default_init: str = "random_prompt_tokens") -> Setting:
        match = _SETTING.match(text.strip())
        if not match:
            raise ValueError(f"bad setting {text!r}; expected CHECKPOINT:MODE[:EXIT_STEPS][@INIT][+fused][+keep]")
        mode, steps, init = match["mode"], match["steps"], match["init"] or default_init
        flags = [f for f in match["flags"].split("+") if f]
        unknown = set(flags) - {"fused", "keep"}
        if unknown or len(set(flags)) != len(flags):
            raise ValueError(f"{text!r}: flags are +fused and +keep, each at most once")
        if mode == "early_exit" and steps is None:
            raise ValueError(f"{text!r}: early_exit needs EXIT_STEPS >= 1, e.g. {match['ckpt']}:early_exit:2")
        if mode == "ar" and match["init"]:
            raise ValueError(f"{text!r}: AR decoding has no initial block (@INIT)")
        try:
            decode = DecodeSettings(
                mode, int(steps) if steps else None, init, fused_prefill="fused" in flags,
                keep_final_prefix="keep" in flags,
            )
        except ValueError as error:
            raise ValueError(f"{text!r}: {error}") from None
        label = (
            f"{match['ckpt']}:{mode}"
            + (f":{steps}" if steps else "")
            + (f"@{init}" if mode != "ar" and init != "random_prompt_tokens" else "")
            + "".join(f"+{f}" for f in ("fused", "keep") if f in flags)
        )
        return cls(match["ckpt"], decode, label)


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    steps: int
    chunks: int


@dataclass
class SettingTaskResult:
    """All episodes of one setting on one task plus the per-chunk decode statistics."""

    setting: str
    task: str
    episodes: list[EpisodeResult] = field(default_factory=list)
    forward_passes: list[int] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    converged: list[bool] = field(default_factory=list)
    latency: str = "none"
    charged_ms: list[float] = field(default_factory=list)  # latency-aware runs: charged latency per chunk
    steps_dropped: list[int] = field(default_factory=list)  # per chunk: steps already past on arrival
    refused: list[bool] = field(default_factory=list)  # per chunk: refused by the driver
    held_fraction: list[float] = field(default_factory=list)  # per episode: share of ticks holding

    def summary(self, execute_steps: int) -> dict:
        return summarize(
            self.setting,
            self.task,
            self.episodes,
            self.forward_passes,
            self.iterations,
            self.decode_ms,
            self.converged,
            execute_steps,
            [self],
        )


def summarize(setting, task, episodes, forward_passes, iterations, decode_ms, converged, execute_steps,
              records=()) -> dict:
    successes = sum(e.success for e in episodes)
    records = list(records)
    charged = [x for r in records for x in r.charged_ms]
    latency_stats = {}
    if charged:
        dropped = [x for r in records for x in r.steps_dropped]
        refused = [x for r in records for x in r.refused]
        held = [x for r in records for x in r.held_fraction]
        latency_stats = {
            "latency": records[0].latency,
            "median_latency_ms": float(statistics.median(charged)),
            "mean_steps_dropped": float(np.mean(dropped)),
            "refused_fraction": float(np.mean(refused)),
            "held_fraction": float(np.mean(held)),
        }
    total_s = (sum(charged) if charged else sum(decode_ms)) / 1000.0
    low, high = wilson_interval(successes, len(episodes)) if episodes else (0.0, 1.0)
    return {
        "setting": setting,
        "task": task,
        "episodes": len(episodes),
        "successes": successes,
        "success_rate": successes / len(episodes) if episodes else 0.0,
        "chunks": len(forward_passes),
        "mean_forward_passes": float(np.mean(forward_passes)) if forward_passes else 0.0,
        "mean_iterations": float(np.mean(iterations)) if iterations else 0.0,
        "converged_fraction": float(np.mean(converged)) if converged else 0.0,
        "median_decode_ms": float(statistics.median(decode_ms)) if decode_ms else 0.0,
        "refused_chunks": int(sum(x for r in records for x in r.refused)),  # by the driver's IK / latency
        "policy_hz": execute_steps * len(decode_ms) / total_s if total_s > 0 else 0.0,
        "wilson_low": low,
        "wilson_high": high,
        **latency_stats,
    }


def run_episode(
    env: TabletopArmEnv,
    policy: CeedVlaPolicy,
    setting: Setting,
    seed: int,
    execute_steps: int,
    record: SettingTaskResult,
) -> EpisodeResult:
    """One closed-loop episode; appends the per-chunk stats to ``record``."""
    obs = env.reset(seed=seed)
    policy.reset()
    to_targets = ChunkTargets(policy.metadata, env)
    done, success, steps, chunks = False, False, 0, 0
    while not done:
        out = policy.predict(
            obs["image"],
            obs["joint_positions"],
            obs["instruction"],
            setting.decode,
            steps_executed=execute_steps,
        )
        chunks += 1
        record.forward_passes.append(out.stats.forward_passes)
        record.iterations.append(out.stats.iterations)
        record.decode_ms.append(out.stats.wall_time_ms)
        record.converged.append(out.stats.converged)
        targets, _ = to_targets(out.actions[:execute_steps], obs["joint_positions"])
        record.refused.append(targets is None)
        if targets is None:  # the IK refused the chunk: the arm holds, as the driver holds it
            targets = np.repeat(env.joint_target[None], execute_steps, axis=0)
        for target in targets:
            obs, success, done, _ = env.step(target)
            steps += 1
            if done:
                break
    return EpisodeResult(env.task, seed, bool(success), steps, chunks)


def run_latency_episode(
    env: TabletopArmEnv,
    policy: CeedVlaPolicy,
    setting: Setting,
    seed: int,
    execute_steps: int,
    record: SettingTaskResult,
    latency: LatencySpec,
) -> EpisodeResult:
    """One latency-aware episode (:func:`~ceed_vla_ros.tools.latency.run_realtime_episode`)."""
    policy.reset()
    metadata = policy.metadata
    episode = run_realtime_episode(
        env,
        policy_decider(policy, setting.decode, execute_steps),
        latency,
        seed=seed,
        action_space=metadata.action_space,
        step_dt=metadata.dt,
        query_period_s=execute_steps * metadata.dt,
    )
    for decision, chunk in zip(episode.decisions, episode.chunks):
        stats = decision.payload
        record.forward_passes.append(stats.forward_passes)
        record.iterations.append(stats.iterations)
        record.decode_ms.append(stats.wall_time_ms)
        record.converged.append(stats.converged)
        record.charged_ms.append(chunk.latency_ms)
        record.steps_dropped.append(chunk.steps - chunk.steps_kept)
        record.refused.append(not chunk.accepted)
    record.held_fraction.append(episode.held_fraction)
    steps = int(round(episode.sim_seconds / env.dt))
    return EpisodeResult(env.task, seed, episode.success, steps, len(episode.chunks))


def evaluate(
    settings: list[Setting],
    model_dir: str | Path,
    tasks: list[str],
    episodes: int,
    seed: int = DEFAULT_EVAL_SEED,
    execute_steps: int | None = None,
    progress: bool = True,
    checkpoints: dict[str, Checkpoint] | None = None,
    latencies: list[LatencySpec] | None = None,
) -> tuple[list[SettingTaskResult], int]:
    """Run every setting on every task (same seeds); returns the results and the execute steps used.

    ``latencies``: run every setting under each (latency-aware loop unless ``none``); rows are then
    labelled ``SETTING [LATENCY]``. Default: ``[none]`` with the plain setting labels."""
    latencies = list(latencies or [LatencySpec()])
    labelled = latencies != [LatencySpec()]
    from tqdm import tqdm

    checkpoints = dict(checkpoints or {})
    for s in settings:
        if s.checkpoint not in checkpoints:
            checkpoints[s.checkpoint] = load_checkpoint(model_dir, s.checkpoint)
    chunk_lens = {c.metadata.chunk_len for c in checkpoints.values()}
    steps = execute_steps if execute_steps is not None else min(chunk_lens)
    if steps < 1 or steps > min(chunk_lens):
        raise ValueError(f"--execute-steps must be in 1..{min(chunk_lens)} (chunk length), got {steps}")
    sizes = {c.metadata.image.height for c in checkpoints.values()}
    if len(sizes) != 1:
        raise ValueError(f"checkpoints use different image sizes {sizes}")
    image_size = sizes.pop()
    results: list[SettingTaskResult] = []
    total = len(settings) * len(tasks) * episodes * len(latencies)
    bar = tqdm(total=total, unit="ep", disable=not progress, desc="eval")
    for task in tasks:
        with TabletopArmEnv(task=task, image_size=image_size, robot=default_robot(task)) as env:
            for latency in latencies:
                for setting in settings:
                    policy = CeedVlaPolicy(checkpoints[setting.checkpoint], setting.decode, seed=seed)
                    label = f"{setting.label} [{latency.label}]" if labelled else setting.label
                    record = SettingTaskResult(label, task, latency=latency.label)
                    for i in range(episodes):
                        if latency.realtime:
                            result = run_latency_episode(env, policy, setting, seed + i, steps, record, latency)
                        else:
                            result = run_episode(env, policy, setting, seed + i, steps, record)
                        record.episodes.append(result)
                        bar.update(1)
                        ok = sum(e.success for e in record.episodes)
                        bar.set_postfix(setting=label, task=task, success=f"{ok}/{len(record.episodes)}")
                    results.append(record)
    bar.close()
    return results, steps


def overall(results: list[SettingTaskResult], setting: str, execute_steps: int) -> dict:
    rows = [r for r in results if r.setting == setting]
    return summarize(
        setting,
        "all",
        [e for r in rows for e in r.episodes],
        [x for r in rows for x in r.forward_passes],
        [x for r in rows for x in r.iterations],
        [x for r in rows for x in r.decode_ms],
        [x for r in rows for x in r.converged],
        execute_steps,
        rows,
    )


def markdown_table(summaries: list[dict]) -> str:
    latency = any("latency" in s for s in summaries)
    head = ("| setting | task | success (95 % CI) | mean fwd passes / chunk | mean Jacobi iters / chunk | converged "
            "| median decode ms | policy Hz |")
    if latency:
        head += " median charged latency ms | steps dropped / chunk | chunks refused | time held |"
    lines = [head, "|" + "---|" * (12 if latency else 8)]
    for s in summaries:
        line = (
            f"| {s['setting']} | {s['task']} | {format_rate(s['successes'], s['episodes'])} | "
            f"{s['mean_forward_passes']:.2f} | {s['mean_iterations']:.2f} | {s['converged_fraction']:.0%} | "
            f"{s['median_decode_ms']:.1f} | {s['policy_hz']:.1f} |"
        )
        if latency:
            if "latency" in s:
                line += (f" {s['median_latency_ms']:.1f} | {s['mean_steps_dropped']:.2f} | "
                         f"{s['refused_fraction']:.0%} | {s['held_fraction']:.0%} |")
            else:
                line += " paused | | | |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_report(results: list[SettingTaskResult], execute_steps: int, out: Path, meta: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    labels = list(dict.fromkeys(r.setting for r in results))
    summaries = [r.summary(execute_steps) for r in results]
    totals = [overall(results, label, execute_steps) for label in labels]
    report = {
        **meta,
        "execute_steps": execute_steps,
        "policy_hz_definition": "execute_steps * chunks / total decode seconds",
        "per_task": summaries,
        "overall": totals,
        "episode_results": {f"{r.setting}|{r.task}": [asdict(e) for e in r.episodes] for r in results},
        "iterations": {f"{r.setting}|{r.task}": r.iterations for r in results},
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    md = f"# Closed-loop evaluation\n\n`{meta.get('command', '')}`\n\n"
    last_seed = meta.get("seed", 0) + meta.get("episodes", 1) - 1
    md += f"Episodes per task and setting: {meta.get('episodes')} (seeds {meta.get('seed')}..{last_seed}), "
    md += f"execute {execute_steps} step(s) per chunk, policy Hz = execute_steps x chunks / decode seconds.\n\n"
    md += markdown_table(summaries + (totals if len({r.task for r in results}) > 1 else []))
    (out / "results.md").write_text(md)

    fig, ax = plt.subplots(figsize=(6, 4))
    for task in dict.fromkeys(r.task for r in results):
        rows = [s for s in summaries if s["task"] == task]
        ax.scatter([s["mean_forward_passes"] for s in rows], [100 * s["success_rate"] for s in rows], label=task)
        for s in rows:
            ax.annotate(s["setting"], (s["mean_forward_passes"], 100 * s["success_rate"]), fontsize=7)
    ax.set_xlabel("mean forward passes per chunk")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-5, 105)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "success_vs_forward_passes.png", dpi=120)
    plt.close(fig)

    if any("latency" in s for s in summaries):
        plot_success_vs_hz(summaries, out / "success_vs_policy_hz.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in labels:
        iters = [x for r in results if r.setting == label for x in r.iterations]
        if iters:
            ax.hist(iters, bins=np.arange(0, max(iters) + 2) - 0.5, alpha=0.5, label=label)
    ax.set_xlabel("Jacobi iterations per chunk (AR: tokens - 1)")
    ax.set_ylabel("chunks")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "iterations_hist.png", dpi=120)
    plt.close(fig)
    return report


def plot_success_vs_hz(summaries: list[dict], path: Path) -> None:
    """Success (95 % Wilson bars) vs policy Hz, one panel per task; colour = setting, marker = latency.

    Only latency-aware rows: paused ones (``none``) have no charged latency (their decode-time Hz
    would sit on the same axis meaning something else); rows with zero charged latency
    (``fixed:0``) have no finite rate. No text labels on the points (they overlap): the legends
    name colours and markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [s for s in summaries if "latency" in s]
    tasks = list(dict.fromkeys(s["task"] for s in summaries))
    settings = list(dict.fromkeys(s["setting"].split(" [")[0] for s in summaries))
    latencies = list(dict.fromkeys(s["latency"] for s in summaries))
    colours = plt.get_cmap("tab10")
    markers = "osD^vP*X"
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.6), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        for s in (s for s in summaries if s["task"] == task):
            setting_index = settings.index(s["setting"].split(" [")[0])
            marker = markers[latencies.index(s["latency"]) % len(markers)]
            rate = 100 * s["success_rate"]
            if s["policy_hz"] <= 0:
                continue  # zero charged latency: no finite rate to place
            error = [[max(0.0, rate - 100 * s["wilson_low"])], [max(0.0, 100 * s["wilson_high"] - rate)]]
            ax.errorbar(s["policy_hz"], rate, yerr=error, fmt=marker, color=colours(setting_index % 10),
                        capsize=3, markersize=6, alpha=0.85)
        ax.set_xscale("log")
        ax.set_xlabel("policy Hz (actions/s the decoder sustains at the charged latency)")
        ax.set_title(task)
        ax.grid(alpha=0.3, which="both")
        ax.set_ylim(-5, 105)
    axes[0][0].set_ylabel("success rate (%), 95 % Wilson interval")
    setting_handles = [plt.Line2D([], [], color=colours(i % 10), marker="o", linestyle="")
                       for i in range(len(settings))]
    latency_handles = [plt.Line2D([], [], color="grey", marker=markers[i % len(markers)], linestyle="")
                       for i in range(len(latencies))]
    fig.legend(setting_handles, settings, loc="lower left", fontsize=7, title="setting", ncol=2,
               bbox_to_anchor=(0.0, 0.0))
    fig.legend(latency_handles, latencies, loc="lower right", fontsize=7, title="latency", bbox_to_anchor=(1.0, 0.0))
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", nargs="+", required=True, help="CHECKPOINT:MODE[:EXIT_STEPS][@INIT] ...")
    add_model_dir_argument(parser)
    parser.add_argument("--tasks", nargs="+", choices=ALL_TASKS, default=list(TASKS), help="default: the static tasks")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task and setting")
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="seed of episode 0 (episode i: seed + i)")
    parser.add_argument(
        "--execute-steps", type=int, default=None, help="chunk actions executed per query (default: all)"
    )
    parser.add_argument(
        "--latency",
        nargs="+",
        default=["none"],
        help="none (the simulator pauses while the policy decodes), measured (the world keeps moving for the "
        "decode's wall time), model:PREFILL_MS,PER_PASS_MS (charged per forward pass; the paper's OpenVLA-7B on "
        "an H100: model:58,18), fixed:MS; several: every setting under each, same seeds",
    )
    parser.add_argument("--init", choices=INIT_STRATEGIES, default="random_prompt_tokens", help="default Jacobi init")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default results/eval-<time>)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_precision_arguments(parser)
    parser.add_argument("--no-progress", action="store_true")


def cli_main(args: argparse.Namespace) -> int:

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    try:
        settings = [Setting.parse(s, args.init) for s in args.settings]
        latencies = [LatencySpec.parse(text) for text in args.latency]
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    out = args.out or Path("results") / time.strftime("eval-%Y%m%d-%H%M%S")
    load_start = list(os.getloadavg())
    start = time.perf_counter()
    precision = precision_from_args(args)
    try:
        model_dir = model_dir_argument(args.model_dir)
        checkpoints = {
            name: load_checkpoint(model_dir, name, device=precision.device, dtype=precision.dtype)
            for name in dict.fromkeys(s.checkpoint for s in settings)
        }
        results, steps = evaluate(
            settings,
            model_dir_argument(args.model_dir),
            args.tasks,
            args.episodes,
            args.seed,
            args.execute_steps,
            not args.no_progress,
            checkpoints,
            latencies=latencies,
        )
    except (ValueError, CheckpointError) as error:
        print(f"error: {error}")
        return 2
    meta = {
        "command": getattr(args, "command_line", "ceed-vla eval"),
        "episodes": args.episodes,
        "seed": args.seed,
        "tasks": args.tasks,
        "threads": args.threads,
        "latencies": [latency.label for latency in latencies],
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "precision": precision.label,
        "seconds": round(time.perf_counter() - start, 1),
    }
    report = write_report(results, steps, out, meta)
    print(markdown_table(report["per_task"] + report["overall"]), end="")
    print(f"results in {out}")
    return 0
