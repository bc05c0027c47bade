"""``ceed-vla bench``: HF generate vs our AR, Jacobi and early-exit decoding, side by side.

Default: a randomly initialised tiny model, one block of 7 dims x chunk 5 = 35 action tokens,
batch 1 on this CPU. On a random (untrained, undistilled) model Jacobi typically needs about n
iterations to converge, so it is slower than AR here; only a consistency-distilled model converges
in a few iterations. The table reports that as measured.

Also timed, same prompts and initial blocks (round robin): the kept-prefix cache (``Jacobi, kept
prefix``: only the non-final part of the block runs again) and the fused prefill (``early exit
k=K, fused``: prompt + guessed block in one forward, so k passes instead of k + 1), each printed
next to the method it speeds up (:func:`format_pairs`), with "tokens == before" (same output).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from ceed_vla_ros.action_tokenizer import NormStats
from ceed_vla_ros.checkpoint import load_checkpoint_arg
from ceed_vla_ros.decoding import HFCausalLMAdapter, TokenRange, decode
from ceed_vla_ros.metadata import CheckpointError, CheckpointMetadata
from ceed_vla_ros.model import CeedVlaForActionPrediction, build_tokenizer, encode_prompt, make_model_config, new_model
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument
from ceed_vla_ros.policy import preprocess_images


@dataclass
class BenchRow:
    """Timing of one decoding method over the repeats."""

    method: str
    forward_passes: float
    iterations: float
    converged: float
    median_ms: float
    p90_ms: float
    matches_ar: float


Prompt = tuple[torch.Tensor, Mapping[str, torch.Tensor]]  # (input_ids (1, L), extra model inputs)


def run_benchmark(
    model: CeedVlaForActionPrediction,
    prompts: list[Prompt],
    block_len: int,
    allowed: TokenRange,
    *,
    repeats: int,
    early_exit_steps: list[int],
    seed: int,
    speedups: bool = True,
) -> list[BenchRow]:
    """Time HF generate, AR, Jacobi and early exit at each k; rows in that order; then (``speedups``)
    Jacobi with the kept-prefix cache, fused + kept, and fused early exit at each k.

    Repeat ``r`` decodes ``prompts[r % len(prompts)]`` with every method (round robin)."""
    lm = HFCausalLMAdapter(model)
    suppress = [i for i in range(model.config.text_config.vocab_size) if not allowed.start <= i < allowed.stop]
    generator = torch.Generator()

    def hf_generate(input_ids, inputs) -> tuple[torch.Tensor, int, int, bool]:
        with torch.inference_mode():
            out = model.generate(
                input_ids,
                **inputs,
                max_new_tokens=block_len,
                do_sample=False,
                suppress_tokens=suppress,
                eos_token_id=None,
            )
        return out[0, input_ids.shape[1] :].cpu(), block_len, block_len - 1, True

    def ours(mode: str, k: int | None = None, fused: bool = False, keep: bool = False
             ) -> Callable[..., tuple[torch.Tensor, int, int, bool]]:
        def run(input_ids, inputs) -> tuple[torch.Tensor, int, int, bool]:
            result = decode(
                lm, input_ids, inputs, mode=mode, block_len=block_len, allowed=allowed,
                early_exit_steps=k, generator=generator, fused_prefill=fused, keep_final_prefix=keep,
            )
            return result.tokens, result.stats.forward_passes, result.stats.iterations, result.stats.converged
        return run

    references = [ours("ar")(ids, extra)[0] for ids, extra in prompts]
    methods: list[tuple[str, Callable]] = [("HF generate (greedy)", hf_generate), ("ours: AR", ours("ar"))]
    methods.append(("ours: Jacobi", ours("jacobi")))
    methods += [(f"ours: early exit k={k}", ours("early_exit", k)) for k in early_exit_steps]
    if speedups:
        methods.append(("ours: Jacobi, kept prefix", ours("jacobi", keep=True)))
        methods.append(("ours: Jacobi, fused + kept prefix", ours("jacobi", fused=True, keep=True)))
        methods += [(f"ours: early exit k={k}, fused", ours("early_exit", k, fused=True)) for k in early_exit_steps]
    # Round robin (every repeat runs every method once) so load changes on a shared CPU hit all alike.
    samples: dict[str, list[tuple[float, torch.Tensor, int, int, bool]]] = {name: [] for name, _ in methods}
    for _, run in methods:
        run(*prompts[0])  # warm-up
    for repeat in range(repeats):
        prompt = prompts[repeat % len(prompts)]
        for name, run in methods:
            generator.manual_seed(seed + repeat)
            start = time.perf_counter()
            tokens, passes, iterations, converged = run(*prompt)
            matches = torch.equal(tokens, references[repeat % len(prompts)])
            samples[name].append(((time.perf_counter() - start) * 1000.0, matches, passes, iterations, converged))
    rows = []
    for name, _ in methods:
        times, matches, passes, iterations, converged = zip(*samples[name])
        rows.append(
            BenchRow(
                method=name,
                forward_passes=float(np.mean(passes)),
                iterations=float(np.mean(iterations)),
                converged=float(np.mean(converged)),
                median_ms=float(np.median(times)),
                p90_ms=float(np.percentile(times, 90)),
                matches_ar=float(np.mean(matches)),
            )
        )
    return rows


def format_table(rows: list[BenchRow]) -> str:
    """Markdown table; speed-up is HF generate's median divided by the row's median."""
    base = rows[0].median_ms
    lines = [
        "| method | forward passes | iterations | converged | median ms | p90 ms | speed-up vs HF generate "
        "| tokens == AR |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.method} | {row.forward_passes:.1f} | {row.iterations:.1f} | {row.converged:.0%} | "
            f"{row.median_ms:.1f} | {row.p90_ms:.1f} | {base / row.median_ms:.2f}x | {row.matches_ar:.0%} |"
        )
    return "\n".join(lines)


SPEEDUP_PAIRS = (
    ("ours: Jacobi", "ours: Jacobi, kept prefix"),
    ("ours: Jacobi", "ours: Jacobi, fused + kept prefix"),
)


def format_pairs(rows: list[BenchRow]) -> str:
    """Before / after of each speed-up, same run: passes, median ms, ratio, and whether the outputs agree
    with AR (kept prefix and converged fused Jacobi must: 100 %; fused early exit need not)."""
    by = {row.method: row for row in rows}
    pairs = [p for p in SPEEDUP_PAIRS if p[0] in by and p[1] in by]
    pairs += [(name.removesuffix(", fused"), name) for name in by if name.endswith(", fused")
              and name.removesuffix(", fused") in by]
    lines = [
        "| before | after | forward passes before -> after | median ms before -> after | speed-up "
        "| tokens == AR before -> after |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for before, after in pairs:
        b, a = by[before], by[after]
        lines.append(
            f"| {before.removeprefix('ours: ')} | {after.removeprefix('ours: ')} | {b.forward_passes:.1f} -> "
            f"{a.forward_passes:.1f} | {b.median_ms:.2f} -> {a.median_ms:.2f} | {b.median_ms / a.median_ms:.2f}x | "
            f"{b.matches_ar:.0%} -> {a.matches_ar:.0%} |"
        )
    return "\n".join(lines)


def _random_setup(args: argparse.Namespace):
    dims = args.action_dims
    metadata = CheckpointMetadata(
        name="bench-random",
        action_space="joint_delta",
        joint_names=[f"joint{i}" for i in range(dims)],
        action_dims=dims,
        chunk_len=args.chunk_len,
        dt=0.1,
        action_norm=NormStats((-1.0,) * dims, (1.0,) * dims, (True,) * dims),
        proprio_names=[f"joint{i}" for i in range(dims)],
        proprio_norm=NormStats((-1.0,) * dims, (1.0,) * dims, (True,) * dims),
    )
    instruction = "pick up the red cube and place it in the bowl"
    tokenizer = build_tokenizer([instruction], metadata.n_bins, metadata.prompt_template)
    config = make_model_config(tokenizer, metadata, hidden_size=args.hidden, num_layers=args.layers)
    model = new_model(config, args.seed)
    metadata = dataclasses.replace(metadata, vocab_size=len(tokenizer))
    ids = torch.tensor([encode_prompt(tokenizer, metadata, config, instruction)])
    return model, metadata, ids, f"random model, hidden {args.hidden}, {args.layers} layers"


def sim_prompts(checkpoint, count: int, seed: int) -> list[Prompt]:
    """Prompts from the simulator: ``count`` observations (image, joints, instruction) along scripted
    expert episodes of both tasks, at varied steps, as the policy sees them in closed loop."""
    from ceed_vla_ros.sim.env import TASKS, TabletopArmEnv
    from ceed_vla_ros.sim.expert import make_expert

    metadata = checkpoint.metadata
    rng = np.random.default_rng(seed)
    prompts = []
    for index in range(count):
        with TabletopArmEnv(task=TASKS[index % len(TASKS)], image_size=metadata.image.height) as env:
            obs = env.reset(seed=seed + index)
            expert = make_expert(env)
            for _ in range(int(rng.integers(0, 8))):
                result = env.step(expert.act(obs, env.privileged()))
                obs = result.obs
                if result.done:
                    break
            inputs = {"pixel_values": preprocess_images(obs["image"], metadata.image)}
            if metadata.proprio_norm is not None:
                proprio = metadata.proprio_norm.normalize(obs["joint_positions"], clip=False)
                inputs["proprio"] = torch.as_tensor(proprio, dtype=torch.float32).reshape(1, -1)
            prompts.append((torch.tensor([checkpoint.prompt_ids(obs["instruction"])]), inputs))
    return prompts


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="benchmark this checkpoint (path containing '/' or a name) instead")
    add_model_dir_argument(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per method (after one warm-up)")
    parser.add_argument(
        "--observations",
        type=int,
        default=10,
        help="checkpoint: simulator observations to decode (round robin over the repeats)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random model, image and Jacobi init")
    parser.add_argument("--action-dims", type=int, default=7, help="random model: action dims (default 7)")
    parser.add_argument("--chunk-len", type=int, default=5, help="random model: actions per chunk (default 5)")
    parser.add_argument("--hidden", type=int, default=128, help="random model: hidden size")
    parser.add_argument("--layers", type=int, default=4, help="random model: decoder layers")
    parser.add_argument("--early-exit-steps", type=int, nargs="+", default=[1, 2, 4, 8], help="early-exit caps to time")
    parser.add_argument("--no-speedups", action="store_true",
                        help="skip the kept-prefix and fused-prefill rows (and their before/after table)")


def cli_main(args: argparse.Namespace) -> int:
    """Print the benchmark table (markdown)."""
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.checkpoint:
        try:
            checkpoint = load_checkpoint_arg(model_dir_argument(args.model_dir), args.checkpoint)
        except CheckpointError as error:
            print(f"error: {error}")
            return 1
        model, metadata = checkpoint.model, checkpoint.metadata
        prompts = sim_prompts(checkpoint, args.observations, args.seed)
        label = f"checkpoint {metadata.checkpoint_id}, {len(prompts)} simulator observations"
    else:
        model, metadata, ids, label = _random_setup(args)
        rng = np.random.default_rng(args.seed)
        image = rng.integers(0, 256, (metadata.image.height, metadata.image.width, 3), dtype=np.uint8)
        inputs = {
            "pixel_values": preprocess_images(image, metadata.image),
            "proprio": torch.as_tensor(rng.uniform(-1, 1, (1, metadata.proprio_dim)), dtype=torch.float32),
        }
        prompts = [(ids, inputs)]
    vocab_size = model.config.text_config.vocab_size
    allowed = TokenRange(vocab_size - metadata.n_bins, vocab_size)
    rows = run_benchmark(
        model,
        prompts,
        metadata.block_len,
        allowed,
        repeats=args.repeats,
        early_exit_steps=args.early_exit_steps,
        seed=args.seed,
        speedups=not args.no_speedups,
    )
    ids = prompts[0][0]
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{label}, {params / 1e6:.2f}M parameters; block {metadata.action_dims} dims x chunk {metadata.chunk_len} = "
        f"{metadata.block_len} tokens; prompt {ids.shape[1]} positions; {args.threads} thread(s); "
        f"{args.repeats} repeats; torch {torch.__version__}; {platform.processor() or platform.machine()}"
    )
    print("forward passes include the prefill; argmax restricted to the action tokens in every method.\n")
    print(format_table(rows))
    if not args.no_speedups:
        print("\nSpeed-ups, before -> after (same run, prompts and initial blocks):\n")
        print(format_pairs(rows))
    return 0
