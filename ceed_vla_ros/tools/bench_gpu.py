"""``ceed-vla bench-gpu``: per-chunk latency of AR, Jacobi and early exit k = 1..3 on a GPU, in bf16.

One prepared run (< 5 min on one GPU), printing figures and ratios side by side and writing
``<out>/bench_gpu.json`` and ``bench_gpu.md`` (default ``results/gpu/``):

* ``tiny``: the shipped checkpoint (``--checkpoint``, default ``sim_student``) on simulator
  observations;
* ``openvla7b_llm``: a RANDOM-weight ``LlamaForCausalLM`` shaped like OpenVLA-7B's language model
  (Llama 2 7B: 32 layers, hidden 4096, MLP 11008, 32 heads, vocabulary 32064), built directly on the
  device in the benchmark dtype (no download: shapes only), with an OpenVLA-sized prompt (BOS + 256
  patch embeddings' positions + 20 text tokens = 277 positions, as ids: the vision towers, which
  only run in the prefill, are not part of it) and a LIBERO-sized block: 7 dims x 3 steps = 21
  tokens, argmax over the last 256 ids of the 32000-token text vocabulary. Skipped (and said so)
  where the device has less than ``--min-free-gb`` free.

Per mode: median / p90 ms per chunk over ``--repeats`` timed runs (one warm-up), forward passes,
Jacobi iterations, and the peak GPU memory allocated during the mode. Random weights converge
unlike trained ones (their logits are nearly flat): the 7B rows measure the cost per forward and
per iteration, not CEED's iteration savings, which need the distilled model.

``--device cpu --smoke`` runs the same code on small shapes (the CI test); the GPU figures in the
README come only from a run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ceed_vla_ros.decoding import HFCausalLMAdapter, TokenRange, decode, init_random_prompt_tokens
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument
from ceed_vla_ros.precision import add_precision_arguments, precision_from_args, synchronize

MODES = (("ar", None), ("jacobi", None), ("early_exit", 1), ("early_exit", 2), ("early_exit", 3))
LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32064}
SMOKE_LLM = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 4, "vocab_size": 32064}


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_precision_arguments(parser, default_device="cuda", default_dtype="bfloat16")
    parser.add_argument("--checkpoint", default="sim_student", help="the tiny model's checkpoint")
    add_model_dir_argument(parser)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per mode and prompt (after a warm-up)")
    parser.add_argument("--prompts", type=int, default=4, help="simulator observations for the tiny model")
    parser.add_argument("--prompt-positions", type=int, default=277, help="7B-shaped model: prompt length")
    parser.add_argument("--action-dims", type=int, default=7)
    parser.add_argument("--chunk-len", type=int, default=3)
    parser.add_argument("--min-free-gb", type=float, default=20.0, help="skip the 7B-shaped model below this")
    parser.add_argument("--smoke", action="store_true", help="small shapes, 1 repeat: checks the script runs")
    parser.add_argument("--skip-7b", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/gpu"))


def peak_memory_reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def time_modes(lm, prompts, block_len: int, allowed: TokenRange, repeats: int, device, seed: int) -> list[dict]:
    """Median / p90 ms, forward passes, iterations and peak memory per decoding mode."""
    rows = []
    for mode, k in MODES:
        generator = torch.Generator().manual_seed(seed)
        times, passes, iterations = [], [], []
        peak_memory_reset(device)
        for ids, inputs in prompts:
            for repeat in range(repeats + 1):
                initial = init_random_prompt_tokens(ids.cpu(), block_len, generator)
                synchronize(device)
                start = time.perf_counter()
                result = decode(lm, ids, inputs, mode=mode, block_len=block_len, allowed=allowed,
                                initial_block=initial, early_exit_steps=k)
                synchronize(device)
                if repeat:  # the first run of each prompt is the warm-up
                    times.append((time.perf_counter() - start) * 1000.0)
                    passes.append(result.stats.forward_passes)
                    iterations.append(result.stats.iterations)
        rows.append({"mode": mode if k is None else f"early_exit k={k}", "median_ms": float(np.median(times)),
                     "p90_ms": float(np.percentile(times, 90)), "forward_passes": float(np.mean(passes)),
                     "iterations": float(np.mean(iterations)), "peak_memory_mb": peak_memory_mb(device)})
    ar = rows[0]["median_ms"]
    for row in rows:
        row["speedup_vs_ar"] = ar / row["median_ms"]
    return rows


def tiny_setup(args, precision):
    from ceed_vla_ros.checkpoint import load_checkpoint_arg
    from ceed_vla_ros.tools.bench_precision import observations

    checkpoint = load_checkpoint_arg(model_dir_argument(args.model_dir), args.checkpoint, device=precision.device,
                                     dtype=precision.dtype)
    prompts = []
    for image, proprio, instruction in observations(checkpoint, args.prompts, 9_000_000 + args.seed):
        ids = torch.tensor([checkpoint.prompt_ids(instruction)], device=precision.device)
        prompts.append((ids, checkpoint.model_inputs(image, proprio)))
    allowed = TokenRange(*checkpoint.action_tokenizer.token_range)
    label = f"{checkpoint.metadata.checkpoint_id} ({checkpoint.num_parameters() / 1e6:.2f}M parameters)"
    return checkpoint.block_lm(min_context=checkpoint.metadata.block_len), prompts, checkpoint.metadata.block_len, \
        allowed, label


def llm_7b_setup(args, precision, shape: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
                         attn_implementation="sdpa")
    torch.manual_seed(args.seed)
    with torch.device(precision.device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(precision.dtype)
        try:
            model = LlamaForCausalLM(config).eval()
        finally:
            torch.set_default_dtype(previous)
    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(3, 32000, (1, args.prompt_positions), generator=generator)
    ids[0, 0] = 1  # BOS
    prompts = [(ids.to(precision.device), {})]
    allowed = TokenRange(32000 - 256, 32000)
    params = sum(p.numel() for p in model.parameters())
    label = f"random LlamaForCausalLM {shape['num_hidden_layers']} x {shape['hidden_size']} ({params / 1e9:.2f}B)"
    return HFCausalLMAdapter(model), prompts, args.action_dims * args.chunk_len, allowed, label, model


def free_gb(device) -> float:
    if device.type != "cuda":
        return float("inf")
    free, _ = torch.cuda.mem_get_info(device)
    return free / 2**30


def markdown(sections: list[dict]) -> str:
    lines = []
    for section in sections:
        lines += [f"**{section['name']}**: {section['label']}; block {section['block_len']} tokens, prompt "
                  f"{section['prompt_positions']} positions", "",
                  "| mode | median ms / chunk | p90 ms | speed-up vs AR | forward passes | iterations | peak GPU MB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in section["rows"]:
            memory = "n/a" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            lines.append(f"| {r['mode']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['speedup_vs_ar']:.2f}x | "
                         f"{r['forward_passes']:.2f} | {r['iterations']:.2f} | {memory} |")
        lines.append("")
    return "\n".join(lines)


def cli_main(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    precision = precision_from_args(args, allow_cpu_float16=args.smoke)
    device = precision.device
    repeats = 1 if args.smoke else args.repeats
    if args.smoke:
        args.prompts, args.prompt_positions = 1, 24
    start = time.perf_counter()
    sections = []
    lm, prompts, block_len, allowed, label = tiny_setup(args, precision)
    sections.append({"name": "tiny", "label": label, "block_len": block_len,
                     "prompt_positions": int(prompts[0][0].shape[1]),
                     "rows": time_modes(lm, prompts, block_len, allowed, repeats, device, args.seed)})
    print(markdown(sections[-1:]), flush=True)
    skipped = None
    if args.skip_7b:
        skipped = "--skip-7b"
    elif not args.smoke and free_gb(device) < args.min_free_gb:
        skipped = f"{free_gb(device):.1f} GB free on {device} < --min-free-gb {args.min_free_gb}"
    if skipped:
        print(f"7B-shaped model skipped: {skipped}")
    else:
        lm, prompts, block_len, allowed, label, model = llm_7b_setup(args, precision,
                                                                     SMOKE_LLM if args.smoke else LLAMA2_7B)
        sections.append({"name": "openvla7b_llm" if not args.smoke else "llm_smoke", "label": label,
                         "block_len": block_len, "prompt_positions": int(prompts[0][0].shape[1]),
                         "rows": time_modes(lm, prompts, block_len, allowed, repeats, device, args.seed)})
        print(markdown(sections[-1:]), flush=True)
        del model, lm
    environment = {
        "device": str(device), "dtype": str(precision.dtype), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "repeats": repeats, "seconds": round(time.perf_counter() - start, 1), "skipped_7b": skipped,
        "command": getattr(args, "command_line", "ceed-vla bench-gpu"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gpu.json").write_text(json.dumps({"environment": environment, "sections": sections}, indent=2))
    head = (f"`{environment['command']}` on {environment['gpu']} ({environment['device']}, {environment['dtype']}, "
            f"torch {environment['torch']}), {environment['seconds']} s\n\n")
    (args.out / "bench_gpu.md").write_text(head + markdown(sections))
    print(f"wrote {args.out / 'bench_gpu.json'} and bench_gpu.md ({environment['seconds']} s)")
    return 0
