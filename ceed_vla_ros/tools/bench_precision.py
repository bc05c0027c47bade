"""``ceed-vla bench-precision``: how bfloat16 (or float16) changes the decoded chunks vs float32.

For each checkpoint, the same simulator observations (held-out seeds: no training or evaluation
run used them) are decoded by a float32 and a lower-precision copy of the model with the same
initial Jacobi block, in each decoding mode; the table puts side by side, per mode: tokens equal,
action rows (chunk steps, all dims) equal, whole chunks equal, the mean |action difference| in
normalised units and in bins, and how often Jacobi's fixed point equals AR within each precision.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ceed_vla_ros.decoding import TokenRange, decode, init_random_prompt_tokens
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument

HELDOUT_SEED = 7_000_000


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", nargs="+", default=["sim_teacher", "sim_student"])
    add_model_dir_argument(parser)
    parser.add_argument("--observations", type=int, default=100, help="simulator observations per checkpoint")
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED, help="seed of observation 0 (held out)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--early-exit-steps", type=int, nargs="+", default=[2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--float32-head", action="store_true",
                        help="also compare a low-precision model whose output head runs in float32")
    parser.add_argument("--out", type=Path, default=None, help="write precision.json / precision.md here")


def observations(checkpoint, count: int, seed: int):
    """(prompt ids, inputs) of ``count`` observations along scripted-expert episodes (both tasks)."""
    from ceed_vla_ros.sim.env import TASKS, TabletopArmEnv
    from ceed_vla_ros.sim.expert import make_expert

    metadata = checkpoint.metadata
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        with TabletopArmEnv(task=TASKS[index % len(TASKS)], image_size=metadata.image.height) as env:
            obs = env.reset(seed=seed + index)
            expert = make_expert(env)
            for _ in range(int(rng.integers(0, 12))):
                result = env.step(expert.act(obs, env.privileged()))
                obs = result.obs
                if result.done:
                    break
        proprio = None
        if metadata.proprio_norm is not None:
            proprio = torch.as_tensor(metadata.proprio_norm.normalize(obs["joint_positions"], clip=False),
                                      dtype=torch.float32).reshape(1, -1)
        out.append((obs["image"], proprio, obs["instruction"]))
    return out


def compare(name: str, model_dir: Path, args) -> list[dict]:
    from ceed_vla_ros.checkpoint import load_checkpoint
    from ceed_vla_ros.precision import float32_output_head, resolve_precision

    low = resolve_precision(args.device, args.dtype)
    full = load_checkpoint(model_dir, name, device=low.device, dtype=torch.float32)
    reduced = load_checkpoint(model_dir, name, device=low.device, dtype=low.dtype)
    if getattr(args, "float32_head", False):
        float32_output_head(reduced.model)
    metadata = full.metadata
    tokenizer = full.action_tokenizer
    allowed = TokenRange(*tokenizer.token_range)
    n = metadata.block_len
    modes = [("ar", None), ("jacobi", None)] + [("early_exit", k) for k in args.early_exit_steps]
    stats = {label: {"tokens": [], "rows": [], "chunks": [], "l1": [], "bins": []} for label in
             [m if k is None else f"{m}:{k}" for m, k in modes]}
    jacobi_is_ar = {"float32": [], args.dtype: []}
    generator = torch.Generator().manual_seed(args.seed)
    for image, proprio, instruction in observations(full, args.observations, args.seed):
        ids = torch.tensor([full.prompt_ids(instruction)], device=low.device)
        initial = init_random_prompt_tokens(ids.cpu(), n, generator)
        decoded = {}
        for precision, checkpoint in (("float32", full), (args.dtype, reduced)):
            inputs = checkpoint.model_inputs(image, proprio)
            lm = checkpoint.block_lm(min_context=n)
            for mode, k in modes:
                result = decode(lm, ids, inputs, mode=mode, block_len=n, allowed=allowed,
                                initial_block=initial.clone(), early_exit_steps=k)
                decoded[(precision, mode if k is None else f"{mode}:{k}")] = result.tokens.numpy()
            jacobi_is_ar[precision].append(bool((decoded[(precision, "jacobi")] == decoded[(precision, "ar")]).all()))
        for label, record in stats.items():
            a, b = decoded[("float32", label)], decoded[(args.dtype, label)]
            record["tokens"].append(float((a == b).mean()))
            record["rows"].append(float((a.reshape(-1, metadata.action_dims) == b.reshape(-1, metadata.action_dims))
                                        .all(axis=1).mean()))
            record["chunks"].append(bool((a == b).all()))
            na, nb = tokenizer.normalized_actions(a), tokenizer.normalized_actions(b)
            record["l1"].append(float(np.abs(na - nb).mean()))
            record["bins"].append(float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean()))
    rows = []
    for label, record in stats.items():
        rows.append({
            "checkpoint": metadata.checkpoint_id, "mode": label, "observations": args.observations,
            "tokens_equal": float(np.mean(record["tokens"])), "rows_equal": float(np.mean(record["rows"])),
            "chunks_equal": int(np.sum(record["chunks"])), "mean_abs_action_diff": float(np.mean(record["l1"])),
            "mean_abs_bin_diff": float(np.mean(record["bins"])),
            "jacobi_equals_ar_fp32": int(np.sum(jacobi_is_ar["float32"])),
            f"jacobi_equals_ar_{args.dtype}": int(np.sum(jacobi_is_ar[args.dtype])),
        })
    return rows


def markdown(rows: list[dict], dtype: str) -> str:
    lines = [
        f"| checkpoint | mode | tokens equal | action rows equal | chunks equal | mean abs action diff (normalised) "
        f"| mean abs bin diff | Jacobi == AR fp32 | Jacobi == AR {dtype} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        count = r["observations"]
        lines.append(
            f"| {r['checkpoint']} | {r['mode']} | {r['tokens_equal']:.1%} | {r['rows_equal']:.1%} | "
            f"{r['chunks_equal']}/{count} | {r['mean_abs_action_diff']:.4f} | {r['mean_abs_bin_diff']:.2f} | "
            f"{r['jacobi_equals_ar_fp32']}/{count} | {r[f'jacobi_equals_ar_{dtype}']}/{count} |"
        )
    return "\n".join(lines) + "\n"


def cli_main(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model_dir = model_dir_argument(args.model_dir)
    start = time.perf_counter()
    rows = [row for name in args.checkpoints for row in compare(name, model_dir, args)]
    table = markdown(rows, args.dtype)
    head = " (output head in float32)" if args.float32_head else ""
    header = (f"float32 vs {args.dtype}{head} on {args.device}, {args.observations} simulator observations per "
              f"checkpoint (seeds {args.seed}..{args.seed + args.observations - 1}, held out), same initial "
              f"Jacobi block in both precisions; {time.perf_counter() - start:.0f} s\n\n")
    print(header + table, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "precision.json").write_text(json.dumps(
            {"command": getattr(args, "command_line", "ceed-vla bench-precision"), "rows": rows}, indent=2))
        (args.out / "precision.md").write_text(header + table)
    return 0
