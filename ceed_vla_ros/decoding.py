"""Greedy AR, Jacobi and early-exit Jacobi decoding of one action-token block, model-agnostic.

The decoders only talk to a :class:`BlockLM` (prefill a prompt into a KV cache, run a block of
tokens on top of the cache, crop the cache back). :class:`HFCausalLMAdapter` implements it for any
transformers causal LM whose forward takes ``input_ids``, extra prompt inputs (``pixel_values``,
``proprio``, ...), ``cache`` and ``use_cache`` -- our :class:`~ceed_vla_ros.model.CeedVlaForActionPrediction`,
a LLaVA-style VLA or a plain Llama alike.

Modes (all greedy, batch size 1):

* ``ar``: prefill, then one forward per token with the KV cache. Equals HF ``generate`` greedy.
* ``jacobi``: prefill once; position 0 = greedy token after the prompt; positions 1..n-1 = an
  initial guess; each iteration runs the whole block in ONE forward on top of the cached prefix,
  takes the argmax at every position and shifts it by one (position i predicts i+1), position 0
  fixed; the cache is cropped back to the prefix after every iteration. It stops at a fixed point
  or after ``max_iterations``.
* ``early_exit``: ``jacobi`` capped at ``early_exit_steps`` iterations; returns the current block,
  converged or not (exactly the k-th Jacobi iterate, or the fixed point if reached earlier).

Two speed-ups, off by default (``DecodeSettings.fused_prefill`` / ``keep_final_prefix``):

* ``fused_prefill`` (Jacobi / early exit): the prompt AND a guessed block (position 0 guessed too)
  run in ONE forward. Its logits give the greedy first token (from the prompt's last position) and
  a first Jacobi update of positions 1..n-1 (from the guessed block), so early exit at ``k`` costs
  ``k`` forward passes instead of ``k + 1``; at ``k = 1``, one pass per chunk. The first update is
  made from a guessed position 0, so it is worse than the unfused first iteration unless the guess
  was right (``warm_start`` helps); the fused pass is counted as iteration 1, and the converged
  output is still the greedy AR output (the first token is exact after the fused pass, and the
  usual Jacobi iterations follow).
* ``keep_final_prefix``: after an iteration the cache entries of the block tokens whose input was
  already the final token (the common prefix of the block fed in and the block that came out)
  stay in the cache, and only the rest of the block is run again. The outputs are those of plain
  Jacobi (same iterates, same iteration count), up to the fp32 rounding noted below.

Convergence test: after an iteration, let ``s`` be the length of the common prefix of the new and
the previous block. The first ``s + 1`` tokens are then final (each is the greedy continuation of
an unchanged, final prefix), so when ``s + 1 >= n`` the block is the fixed point and the one extra
iteration that would merely confirm it is skipped. After iteration t at least t + 1 tokens are
final, so Jacobi needs at most n - 1 iterations (n forward passes including the prefill; AR also
needs n).

Allowed-token range: with ``allowed=TokenRange(start, stop)`` every argmax (including the first
token from the prefill) is taken over ids ``[start, stop)`` only, e.g. the action tokens. The
Jacobi fixed point is then the greedy AR output under the same restriction, so Jacobi == AR still
holds when both use the same range (HF ``generate`` matches with ``suppress_tokens`` = all ids
outside the range).

Numerics: a block forward and a token-by-token forward compute the same logits through
differently-shaped matmuls, which in fp32 can differ in the last bits. The Jacobi fixed point
equals AR token-for-token unless two logits at some position are tied to within that rounding
(~1e-6 relative), where the argmax may pick the other token. ``torch.argmax`` breaks exact ties by
the lowest id in both paths.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicSlidingWindowLayer

from ceed_vla_ros.model import cache_keyword

DecodeMode = Literal["ar", "jacobi", "early_exit"]
DECODE_MODES: tuple[str, ...] = ("ar", "jacobi", "early_exit")
INIT_STRATEGIES: tuple[str, ...] = ("random_prompt_tokens", "warm_start")


@dataclass(frozen=True)
class DecodeSettings:
    """How to decode a chunk: the one choice shared by the policy, the evaluation and the policy node.

    ``mode``: ``ar``, ``jacobi`` or ``early_exit``; ``early_exit_steps``: the iteration cap, given
    exactly in ``early_exit`` mode (>= 1); ``init``: the initial Jacobi block,
    ``random_prompt_tokens`` or ``warm_start`` (ignored by ``ar``); ``fused_prefill`` and
    ``keep_final_prefix``: the speed-ups of the module docstring (Jacobi / early exit only).
    """

    mode: DecodeMode = "jacobi"
    early_exit_steps: int | None = None
    init: str = "random_prompt_tokens"
    fused_prefill: bool = False
    keep_final_prefix: bool = False

    def __post_init__(self) -> None:
        if self.mode == "ar" and (self.fused_prefill or self.keep_final_prefix):
            raise ValueError("fused_prefill and keep_final_prefix are Jacobi / early-exit options, not AR ones")
        if self.mode not in DECODE_MODES:
            raise ValueError(f"unknown decoding mode {self.mode!r}; choose from {', '.join(DECODE_MODES)}")
        if self.init not in INIT_STRATEGIES:
            raise ValueError(f"unknown init {self.init!r}; choose from {', '.join(INIT_STRATEGIES)}")
        if self.mode == "early_exit" and (self.early_exit_steps is None or self.early_exit_steps < 1):
            raise ValueError(f"early_exit needs early_exit_steps >= 1, got {self.early_exit_steps}")
        if self.mode != "early_exit" and self.early_exit_steps is not None:
            raise ValueError(f"only early_exit takes early_exit_steps (mode {self.mode!r})")

    @classmethod
    def from_parameters(cls, mode: str, early_exit_steps: int, init: str, fused_prefill: bool = False,
                        keep_final_prefix: bool = False) -> DecodeSettings:
        """From node parameters, which always hold every option: ``early_exit_steps`` is used only by
        early_exit, ``fused_prefill`` / ``keep_final_prefix`` only by jacobi and early_exit (AR ignores them)."""
        jacobi = mode != "ar"
        return cls(mode, early_exit_steps if mode == "early_exit" else None, init,
                   fused_prefill=bool(fused_prefill) and jacobi, keep_final_prefix=bool(keep_final_prefix) and jacobi)


class BlockLM(Protocol):
    """What the decoders need from a model. Batch size 1; ``cache`` is opaque to the decoders."""

    def prefill(self, input_ids: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> tuple[Any, torch.Tensor]:
        """Run the prompt (1, L) (+ extra inputs) into a new cache; return (cache, logits (V,) of the last position)."""

    def forward_block(self, block_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        """Run block ids (1, n) on top of the cache (which grows by n); return logits (n, V)."""

    def cache_length(self, cache: Any) -> int:
        """Number of positions held by the cache."""

    def crop_cache(self, cache: Any, length: int) -> None:
        """Drop every cached position from ``length`` on."""

    # Optional (``fused_prefill``):
    # def prefill_with_block(self, input_ids, inputs, block_ids) -> tuple[cache, logits (n + 1, V)]:
    #     the prompt and the block (1, n) in one forward; logits of the prompt's last position and of
    #     every block position; the cache holds prompt + block.


class HFCausalLMAdapter:
    """:class:`BlockLM` over a transformers causal LM using a ``DynamicCache``.

    The prompt inputs (e.g. ``pixel_values``, ``proprio``) are passed to the model's forward on the
    prefill only, the way LLaVA-style models expect them.
    """

    def __init__(self, model: torch.nn.Module, min_context: int = 0) -> None:
        """``min_context``: the shortest prompt + block the caller will decode (checked now)."""
        self.model = model
        self._cache_config = model.config.get_text_config()
        self._cache_keyword = cache_keyword(model)
        self.sliding_window = cache_sliding_window(self._cache_config)
        self._takes_prompt_length = "prompt_length" in inspect.signature(model.forward).parameters
        if min_context:
            self.check_context(min_context)

    def check_context(self, length: int) -> None:
        """Refuse a prompt + block of ``length`` positions that a sliding-window cache cannot crop."""
        if self.sliding_window is not None and length >= self.sliding_window:
            raise ValueError(
                f"this model uses sliding-window attention (window {self.sliding_window}) and a prompt + "
                f"block of {length} tokens does not fit in it: Jacobi and AR decoding crop the KV cache "
                f"back to the prompt, which a full sliding-window cache cannot undo. Use a model whose "
                f"config has sliding_window null or larger than the longest prompt + block.")

    def prefill(self, input_ids: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> tuple[DynamicCache, torch.Tensor]:
        cache = DynamicCache(config=self._cache_config)
        kwargs = {self._cache_keyword: cache, "use_cache": True, "logits_to_keep": 1}
        out = self.model(input_ids=input_ids, **inputs, **kwargs)
        return cache, out.logits[0, -1]

    def prefill_with_block(
        self, input_ids: torch.Tensor, inputs: Mapping[str, torch.Tensor], block_ids: torch.Tensor
    ) -> tuple[DynamicCache, torch.Tensor]:
        """Prompt + block in one forward: (cache of both, logits (n + 1, V) from the prompt's last position on).

        Models whose prompt encoding reads the whole ``input_ids`` (ours with
        ``vision_prompt_conditioning``) are told where the prompt ends (``prompt_length``)."""
        cache = DynamicCache(config=self._cache_config)
        n = block_ids.shape[1]
        kwargs = {self._cache_keyword: cache, "use_cache": True, "logits_to_keep": n + 1}
        if self._takes_prompt_length:
            kwargs["prompt_length"] = input_ids.shape[1]
        out = self.model(input_ids=torch.cat((input_ids, block_ids.to(input_ids.device)), dim=1), **inputs, **kwargs)
        return cache, out.logits[0]

    def forward_block(self, block_ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        return self.model(input_ids=block_ids, **{self._cache_keyword: cache}, use_cache=True).logits[0]

    def cache_length(self, cache: DynamicCache) -> int:
        return cache.get_seq_length()

    def crop_cache(self, cache: DynamicCache, length: int) -> None:
        # transformers 5: crop takes the (negative) number of positions to remove.
        cache.crop(length - cache.get_seq_length())


def cache_sliding_window(text_config: Any) -> int | None:
    """The smallest sliding window of the cache transformers builds for this config (None: none)."""
    cache = DynamicCache(config=text_config)
    windows = [layer.sliding_window for layer in cache.layers if isinstance(layer, DynamicSlidingWindowLayer)]
    return min(windows) if windows else None


@dataclass(frozen=True)
class TokenRange:
    """Half-open id range ``[start, stop)`` the argmax is restricted to."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"invalid token range [{self.start}, {self.stop})")


@dataclass
class DecodeStats:
    """What one decode call did.

    Attributes:
        mode: ``ar``, ``jacobi`` or ``early_exit``.
        block_len: tokens decoded (n).
        forward_passes: model forwards INCLUDING the prefill (AR: n; Jacobi: 1 + iterations).
        iterations: Jacobi iterations (block forwards); for ``ar`` the n - 1 single-token steps.
        converged: the block is the exact greedy fixed point (always true for ``ar``).
        tokens_fixed_per_iteration: per iteration, how many more leading tokens became final
            (the first token is final after the prefill; the entries sum to n - 1 on convergence).
        wall_time_ms: wall time of the call including the prefill.
        early_exit_steps: the iteration cap in ``early_exit`` mode, else None.
        pinned_tokens: leading tokens pinned to the previous chunk (prefix pinning), not decoded.
        fused_prefill: the prefill and the first iteration ran as one forward (then
            ``forward_passes == iterations``).
        tokens_run: block tokens fed to the model over all iterations (``keep_final_prefix`` lowers it).
    """

    mode: str
    block_len: int
    forward_passes: int
    iterations: int
    converged: bool
    tokens_fixed_per_iteration: list[int] = field(default_factory=list)
    wall_time_ms: float = 0.0
    early_exit_steps: int | None = None
    pinned_tokens: int = 0
    fused_prefill: bool = False
    tokens_run: int = 0


@dataclass
class DecodeResult:
    """Decoded block (n,) int64 on CPU, stats, and (if requested) the Jacobi trajectory.

    ``trajectory`` = [Y^0 (initial block, position 0 already set), Y^1, ..., Y^last], each (n,).
    """

    tokens: torch.Tensor
    stats: DecodeStats
    trajectory: list[torch.Tensor] | None = None


def _argmax(logits: torch.Tensor, allowed: TokenRange | None) -> torch.Tensor:
    if allowed is None:
        return logits.argmax(dim=-1)
    return logits[..., allowed.start : allowed.stop].argmax(dim=-1) + allowed.start


def init_random_prompt_tokens(
    input_ids: torch.Tensor, block_len: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Initial block drawn uniformly from the prompt's own token ids (the CEED-VLA / CLLM choice)."""
    prompt = input_ids.reshape(-1)
    index = torch.randint(0, prompt.numel(), (block_len,), generator=generator)
    return prompt[index].clone()


def init_warm_start(
    previous_tokens: torch.Tensor,
    steps_executed: int,
    action_dims: int,
    fill: Literal["repeat_last", "random"] = "repeat_last",
    allowed: TokenRange | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Initial block from the previous chunk, shifted by the chunk steps already executed.

    The previous block's actions from step ``steps_executed`` on move to the front; the freed tail
    is filled by repeating the last action (``repeat_last``) or with random ids from ``allowed``
    (``random``; requires ``allowed``).
    """
    previous = previous_tokens.reshape(-1)
    block_len = previous.numel()
    if block_len % action_dims:
        raise ValueError(f"block of {block_len} tokens is not a whole number of {action_dims}-dim actions")
    if steps_executed < 0:
        raise ValueError(f"steps_executed must be >= 0, got {steps_executed}")
    shift = min(steps_executed * action_dims, block_len)
    kept = previous[shift:]
    missing = block_len - kept.numel()
    if missing == 0:
        return kept.clone()
    if fill == "repeat_last":
        last_action = previous[block_len - action_dims :]
        tail = last_action.repeat(missing // action_dims)
    elif fill == "random":
        if allowed is None:
            raise ValueError("fill='random' needs the allowed token range")
        tail = torch.randint(allowed.start, allowed.stop, (missing,), generator=generator, dtype=previous.dtype)
    else:
        raise ValueError(f"unknown fill {fill!r}; choose repeat_last or random")
    return torch.cat((kept, tail))


@torch.inference_mode()
def decode(
    lm: BlockLM,
    input_ids: torch.Tensor,
    inputs: Mapping[str, torch.Tensor] | None = None,
    *,
    mode: DecodeMode = "jacobi",
    block_len: int,
    allowed: TokenRange | None = None,
    initial_block: torch.Tensor | None = None,
    max_iterations: int | None = None,
    early_exit_steps: int | None = None,
    generator: torch.Generator | None = None,
    record_trajectory: bool = False,
    pinned_prefix: torch.Tensor | None = None,
    fused_prefill: bool = False,
    keep_final_prefix: bool = False,
) -> DecodeResult:
    """Prefill ``input_ids`` (1, L) with ``inputs`` and decode one block; see :func:`decode_from_prefix`.

    ``fused_prefill`` (Jacobi / early exit): prefill and first iteration in one forward (module
    docstring); ``initial_block`` position 0 is then a guess too. ``keep_final_prefix``: keep the
    final tokens' cache entries between iterations."""
    if fused_prefill:
        if mode == "ar":
            raise ValueError("fused_prefill needs mode jacobi or early_exit")
        if pinned_prefix is not None and pinned_prefix.numel():
            raise ValueError("fused_prefill with a pinned_prefix is not supported: pin with the plain prefill")
        return _decode_fused(
            lm, input_ids, inputs or {}, mode=mode, block_len=block_len, allowed=allowed,
            initial_block=initial_block, max_iterations=max_iterations, early_exit_steps=early_exit_steps,
            generator=generator, record_trajectory=record_trajectory, keep_final_prefix=keep_final_prefix,
        )
    start = time.perf_counter()
    cache, last_logits = lm.prefill(input_ids, inputs or {})
    check_context = getattr(lm, "check_context", None)  # adapters with a bounded cache refuse here
    if check_context is not None:
        check_context(lm.cache_length(cache) + block_len)
    result = decode_from_prefix(
        lm,
        cache,
        last_logits,
        mode=mode,
        block_len=block_len,
        allowed=allowed,
        initial_block=initial_block,
        prompt_ids=input_ids,
        max_iterations=max_iterations,
        early_exit_steps=early_exit_steps,
        generator=generator,
        record_trajectory=record_trajectory,
        pinned_prefix=pinned_prefix,
        keep_final_prefix=keep_final_prefix,
    )
    result.stats.forward_passes += 1
    result.stats.wall_time_ms = (time.perf_counter() - start) * 1000.0
    return result


def _iteration_cap(mode: str, block_len: int, max_iterations: int | None, early_exit_steps: int | None) -> int:
    if mode not in DECODE_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(DECODE_MODES)}")
    if mode == "early_exit":
        if early_exit_steps is None or early_exit_steps < 1:
            raise ValueError("early_exit mode needs early_exit_steps >= 1")
        return early_exit_steps
    return block_len if max_iterations is None else max_iterations


def _decode_fused(
    lm: BlockLM,
    input_ids: torch.Tensor,
    inputs: Mapping[str, torch.Tensor],
    *,
    mode: DecodeMode,
    block_len: int,
    allowed: TokenRange | None,
    initial_block: torch.Tensor | None,
    max_iterations: int | None,
    early_exit_steps: int | None,
    generator: torch.Generator | None,
    record_trajectory: bool,
    keep_final_prefix: bool,
) -> DecodeResult:
    """Prompt + guessed block in one forward (iteration 1), then ordinary Jacobi iterations."""
    if block_len < 1:
        raise ValueError(f"block_len must be >= 1, got {block_len}")
    cap = _iteration_cap(mode, block_len, max_iterations, early_exit_steps)
    prefill_with_block = getattr(lm, "prefill_with_block", None)
    if prefill_with_block is None:
        raise ValueError(f"{type(lm).__name__} has no prefill_with_block: fused_prefill is not available")
    start = time.perf_counter()
    if initial_block is None:
        initial_block = init_random_prompt_tokens(input_ids, block_len, generator)
    if initial_block.numel() != block_len:
        raise ValueError(f"initial_block has {initial_block.numel()} tokens, expected {block_len}")
    guess = initial_block.reshape(-1).to(device=input_ids.device, dtype=input_ids.dtype).clone()
    check_context = getattr(lm, "check_context", None)
    if check_context is not None:
        check_context(input_ids.shape[1] + block_len)
    cache, logits = prefill_with_block(input_ids, inputs, guess.reshape(1, -1))
    prefix_len = lm.cache_length(cache) - block_len
    block = _argmax(logits[:-1], allowed)  # position 0 from the prompt, i from the guessed i - 1
    changed = (block != guess).nonzero()
    common = int(changed[0, 0]) if changed.numel() else block_len
    final_len = min(block_len, common + 1)
    kept = min(common, block_len - 1) if keep_final_prefix else 0
    lm.crop_cache(cache, prefix_len + kept)
    trajectory = [guess.cpu(), block.cpu()] if record_trajectory else None
    result = _decode_jacobi(
        lm, cache, block, cap, allowed, record_trajectory, keep_final_prefix=keep_final_prefix,
        prefix_len=prefix_len, final_len=final_len, kept=kept, iterations=1, fixed=[final_len], trajectory=trajectory,
        tokens_run=block_len,
    )
    result.stats.mode = mode
    result.stats.early_exit_steps = early_exit_steps if mode == "early_exit" else None
    result.stats.fused_prefill = True
    result.stats.wall_time_ms = (time.perf_counter() - start) * 1000.0
    return result


@torch.inference_mode()
def decode_from_prefix(
    lm: BlockLM,
    cache: Any,
    last_logits: torch.Tensor,
    *,
    mode: DecodeMode = "jacobi",
    block_len: int,
    allowed: TokenRange | None = None,
    initial_block: torch.Tensor | None = None,
    prompt_ids: torch.Tensor | None = None,
    max_iterations: int | None = None,
    early_exit_steps: int | None = None,
    generator: torch.Generator | None = None,
    record_trajectory: bool = False,
    pinned_prefix: torch.Tensor | None = None,
    keep_final_prefix: bool = False,
) -> DecodeResult:
    """Decode one block on top of an already prefilled cache; the cache is left at the prefix length.

    Args:
        lm: the model behind the :class:`BlockLM` protocol.
        cache, last_logits: what ``lm.prefill`` returned (the cache may be reused for more calls).
        mode: ``ar``, ``jacobi`` or ``early_exit``.
        block_len: tokens to decode (n >= 1).
        allowed: restrict every argmax to this id range (e.g. the action tokens).
        initial_block: Jacobi initial guess (n ids; position 0 is overwritten). If None, ids drawn
            from ``prompt_ids`` with ``generator`` (``random_prompt_tokens``).
        prompt_ids: the prompt ids, needed only for the default initial block.
        max_iterations: Jacobi cap (default and maximum useful value: n).
        early_exit_steps: iteration cap of ``early_exit`` mode (required there, >= 1).
        generator: random source of the default initial block.
        record_trajectory: keep every Jacobi iterate in ``DecodeResult.trajectory``.
        pinned_prefix: prefix pinning (real-time-chunking style, Jacobi / early exit only): these
            p < n ids are the block's first p tokens, fixed (e.g. the previous chunk's tokens of the
            steps that will already be executing when decoding finishes); only the other n - p are
            decoded, conditioned on them, and the block counts as final up to p from the start.
        keep_final_prefix: keep the cache entries of final block tokens between iterations and run
            only the rest of the block (same outputs; see the module docstring).

    Returns:
        :class:`DecodeResult`; ``stats.forward_passes`` and ``wall_time_ms`` exclude the prefill
        here (``decode`` adds it).
    """
    if mode not in DECODE_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(DECODE_MODES)}")
    if block_len < 1:
        raise ValueError(f"block_len must be >= 1, got {block_len}")
    start = time.perf_counter()
    first = _argmax(last_logits, allowed).reshape(1)
    pinned = 0 if pinned_prefix is None else int(pinned_prefix.numel())
    if pinned and mode == "ar":
        raise ValueError("prefix pinning needs Jacobi or early-exit decoding, not ar")
    if pinned >= block_len:
        raise ValueError(f"pinned_prefix has {pinned} tokens; at most block_len - 1 = {block_len - 1}")
    if mode == "ar":
        result = _decode_ar(lm, cache, first, block_len, allowed)
    else:
        if mode == "early_exit":
            if early_exit_steps is None or early_exit_steps < 1:
                raise ValueError("early_exit mode needs early_exit_steps >= 1")
            cap = early_exit_steps
        else:
            cap = block_len if max_iterations is None else max_iterations
        if initial_block is None:
            if prompt_ids is None:
                raise ValueError("give initial_block or prompt_ids for the random_prompt_tokens initialisation")
            initial_block = init_random_prompt_tokens(prompt_ids, block_len, generator)
        if initial_block.numel() != block_len:
            raise ValueError(f"initial_block has {initial_block.numel()} tokens, expected {block_len}")
        block = initial_block.reshape(-1).to(device=first.device, dtype=first.dtype).clone()
        block[0] = first[0]
        if pinned:
            block[:pinned] = pinned_prefix.reshape(-1).to(device=block.device, dtype=block.dtype)
        result = _decode_jacobi(lm, cache, block, cap, allowed, record_trajectory,
                                keep_final_prefix=keep_final_prefix, final_len=max(1, pinned), pinned=pinned)
        result.stats.mode = mode
        result.stats.pinned_tokens = pinned
        result.stats.early_exit_steps = early_exit_steps if mode == "early_exit" else None
    result.stats.wall_time_ms = (time.perf_counter() - start) * 1000.0
    return result


def _decode_ar(
    lm: BlockLM, cache: Any, first: torch.Tensor, block_len: int, allowed: TokenRange | None
) -> DecodeResult:
    prefix_len = lm.cache_length(cache)
    tokens = [first]
    for _ in range(block_len - 1):
        logits = lm.forward_block(tokens[-1].reshape(1, 1), cache)
        tokens.append(_argmax(logits[-1], allowed).reshape(1))
    lm.crop_cache(cache, prefix_len)
    stats = DecodeStats(
        mode="ar",
        block_len=block_len,
        forward_passes=block_len - 1,
        iterations=block_len - 1,
        converged=True,
        tokens_fixed_per_iteration=[1] * (block_len - 1),
    )
    return DecodeResult(tokens=torch.cat(tokens).cpu(), stats=stats)


def _decode_jacobi(
    lm: BlockLM,
    cache: Any,
    block: torch.Tensor,
    max_iterations: int,
    allowed: TokenRange | None,
    record_trajectory: bool,
    *,
    keep_final_prefix: bool = False,
    prefix_len: int | None = None,
    final_len: int = 1,
    kept: int = 0,
    iterations: int = 0,
    fixed: list[int] | None = None,
    trajectory: list[torch.Tensor] | None = None,
    tokens_run: int = 0,
    pinned: int = 0,
) -> DecodeResult:
    """Jacobi iterations on ``block`` over a cache holding the prefix (+ ``kept`` final block tokens).

    ``final_len`` leading tokens are final (1 after a prefill: position 0 came from it); the keyword
    arguments let the fused prefill hand over its state after iteration 1. The cache is left at
    ``prefix_len``."""
    n = block.numel()
    if prefix_len is None:
        prefix_len = lm.cache_length(cache) - kept
    if trajectory is None and record_trajectory:
        trajectory = [block.cpu()]
    fixed = [] if fixed is None else fixed
    while final_len < n and iterations < max_iterations:
        # Run positions kept..n-1 (their cache entries are rebuilt); row j predicts position kept + j + 1.
        # The first `keep` positions are not re-predicted: the one after the kept entries (final),
        # and a pinned prefix (fixed as given).
        logits = lm.forward_block(block[kept:].reshape(1, n - kept), cache)
        tokens_run += n - kept
        keep = max(kept + 1, pinned)
        new_block = torch.cat((block[:keep], _argmax(logits[keep - kept - 1 : -1], allowed)))
        iterations += 1
        changed = (new_block != block).nonzero()
        common = int(changed[0, 0]) if changed.numel() else n
        new_final_len = min(n, max(common + 1, final_len + 1))
        fixed.append(new_final_len - final_len)
        final_len = new_final_len
        # Entries of positions < common were computed from tokens that are now final: keep them.
        kept = min(common, n - 1) if keep_final_prefix else 0
        lm.crop_cache(cache, prefix_len + kept)
        block = new_block
        if trajectory is not None:
            trajectory.append(block.cpu())
    if lm.cache_length(cache) != prefix_len:
        lm.crop_cache(cache, prefix_len)
    stats = DecodeStats(
        mode="jacobi",
        block_len=n,
        forward_passes=iterations,
        iterations=iterations,
        converged=final_len >= n,
        tokens_fixed_per_iteration=fixed,
        tokens_run=tokens_run,
    )
    return DecodeResult(tokens=block.cpu(), stats=stats, trajectory=trajectory)


@dataclass
class BatchedTrajectories:
    """Per-sample Jacobi trajectories: ``states[i]`` is (T_i, n) = Y^0 .. Y^last of sample i."""

    states: list[torch.Tensor]
    converged: torch.Tensor  # (B,) bool
    forward_passes: int  # block forwards run for the whole batch (excluding the prefill)


@torch.inference_mode()
def jacobi_trajectories_batched(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    inputs: Mapping[str, torch.Tensor],
    initial_blocks: torch.Tensor,
    *,
    allowed: TokenRange | None = None,
    max_iterations: int | None = None,
) -> BatchedTrajectories:
    """Jacobi-decode a BATCH of prompts and record every iterate of every sample.

    For every sample the trajectory equals the batch-1 ``decode(..., mode="jacobi",
    record_trajectory=True)`` trajectory from the same initial block (test/training/test_trajectories.py).

    Stopping rule (the same as :func:`_decode_jacobi`, see the module docstring): after each
    iteration the length ``s`` of the common prefix of the new and the previous block is measured;
    ``final = min(n, max(s + 1, final + 1))`` leading tokens are then final (``final = 1`` after the
    prefill); a sample stops when ``final >= n`` (or after ``max_iterations``) and leaves the batch:
    its rows are dropped from the KV cache and the attention mask.

    Args:
        model: a transformers causal LM taking ``input_ids``, ``attention_mask``, ``cache``,
            ``use_cache`` and the prompt inputs (``pixel_values``, ``proprio``) on the prefill.
        input_ids: (B, L) LEFT-padded prompts; ``attention_mask`` (B, L) is 0 on the padding.
        inputs: extra prefill inputs, batched (B, ...).
        initial_blocks: (B, n) initial guesses (position 0 is overwritten by the greedy first token).
        allowed: argmax id range (e.g. the action tokens), as in :func:`decode`.
        max_iterations: Jacobi cap (default n).

    The batch is prefilled once into a ``DynamicCache``; each iteration runs every still-active
    block in one forward on top of the cache and crops the cache back to the prompt.
    """
    batch, n = initial_blocks.shape
    cap = n if max_iterations is None else max_iterations
    cache = DynamicCache(config=model.config.get_text_config())
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, **inputs, cache=cache, use_cache=True, logits_to_keep=1
    )
    first = _argmax(out.logits[:, -1], allowed)
    blocks = initial_blocks.to(first.dtype).clone()
    blocks[:, 0] = first
    prefix_len = cache.get_seq_length()
    states: list[list[torch.Tensor]] = [[blocks[i].clone()] for i in range(batch)]
    final_len = torch.ones(batch, dtype=torch.long)
    active = torch.arange(batch)
    if n <= 1:
        active = active[:0]
    mask = attention_mask
    iterations = 0
    forwards = 0
    while active.numel() and iterations < cap:
        block = blocks[active]
        step_mask = torch.cat((mask, mask.new_ones(active.numel(), n)), dim=1)
        logits = model(input_ids=block, attention_mask=step_mask, cache=cache, use_cache=True).logits
        cache.crop(prefix_len - cache.get_seq_length())
        forwards += 1
        iterations += 1
        new_block = torch.cat((block[:, :1], _argmax(logits[:, :-1], allowed)), dim=1)
        changed = new_block != block
        common = torch.where(changed.any(dim=1), changed.int().argmax(dim=1), torch.full_like(active, n))
        new_final = torch.clamp(torch.maximum(common + 1, final_len[active] + 1), max=n)
        final_len[active] = new_final
        blocks[active] = new_block
        for row, sample in enumerate(active.tolist()):
            states[sample].append(new_block[row].clone())
        keep = new_final < n
        if not bool(keep.all()):
            keep_rows = keep.nonzero().reshape(-1)
            cache.batch_select_indices(keep_rows)
            mask = mask[keep_rows]
            active = active[keep_rows]
    return BatchedTrajectories(
        states=[torch.stack(s).cpu() for s in states],
        converged=final_len >= n,
        forward_passes=forwards,
    )
