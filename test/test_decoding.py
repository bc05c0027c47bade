"""AR / Jacobi / early-exit decoding against HF generate and an uncached reference implementation."""

import os

import numpy as np
import pytest
import torch
from transformers import LlamaConfig

from ceed_vla_ros.action_tokenizer import NormStats
from ceed_vla_ros.checkpoint import build_tiny_checkpoint
from ceed_vla_ros.decoding import (
    DecodeSettings,
    HFCausalLMAdapter,
    TokenRange,
    decode,
    decode_from_prefix,
    init_random_prompt_tokens,
    init_warm_start,
    jacobi_trajectories_batched,
)
from ceed_vla_ros.metadata import CheckpointMetadata
from ceed_vla_ros.model import CeedVlaConfig, CeedVlaForActionPrediction
from ceed_vla_ros.policy import CeedVlaPolicy, preprocess_images
from ceed_vla_ros.tools import cli

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
VOCAB = 96
ACTIONS = TokenRange(32, VOCAB)


def make_case(seed: int, hidden: int = 32, prompt_words: int = 6):
    """A random tiny model, prompt ids and prompt inputs, all from ``seed``."""
    torch.manual_seed(seed)
    text = LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )
    config = CeedVlaConfig(
        text_config=text, image_size=16, vision_channels=[8], vision_strides=[2], num_keypoints=4,
        vision_mlp_hidden=16, num_image_tokens=2, proprio_dim=2, image_token_id=4, proprio_token_id=5,
    )
    model = CeedVlaForActionPrediction(config).eval()
    words = torch.randint(6, 32, (prompt_words,)).tolist()
    ids = torch.tensor([model.prefix_token_ids() + words])
    inputs = {"pixel_values": torch.randn(1, 3, 16, 16), "proprio": torch.randn(1, 2)}
    return model, ids, inputs


def argmax(logits: torch.Tensor, allowed: TokenRange | None) -> torch.Tensor:
    if allowed is None:
        return logits.argmax(-1)
    return logits[..., allowed.start : allowed.stop].argmax(-1) + allowed.start


@torch.no_grad()
def reference_jacobi(model, ids, inputs, initial_block, allowed, max_iterations):
    """Jacobi by full recomputation of [prompt + block] every iteration: no KV cache at all.

    Returns every iterate until the block stops changing (exact fixed point) or the cap.
    """
    prompt_len = ids.shape[1]
    first = argmax(model(input_ids=ids, **inputs).logits[0, -1], allowed)
    block = initial_block.clone()
    block[0] = first
    trajectory = [block]
    for _ in range(max_iterations):
        logits = model(input_ids=torch.cat((ids, block[None]), dim=1), **inputs).logits[0]
        new_block = torch.cat((block[:1], argmax(logits[prompt_len - 1 + 1 : prompt_len - 1 + block.numel()], allowed)))
        if torch.equal(new_block, block):
            break
        block = new_block
        trajectory.append(block)
    return trajectory


def hf_greedy(model, ids, inputs, n, allowed):
    suppress = None if allowed is None else [i for i in range(VOCAB) if not allowed.start <= i < allowed.stop]
    out = model.generate(ids, **inputs, max_new_tokens=n, do_sample=False, suppress_tokens=suppress)
    return out[0, ids.shape[1] :]


CASES = [(seed, n, allowed) for seed in range(8) for n, allowed in ((1, None), (7, ACTIONS), (12, None), (35, ACTIONS))]


@pytest.mark.parametrize("seed,n,allowed", CASES)
def test_jacobi_equals_ar_equals_hf_generate(seed, n, allowed):
    model, ids, inputs = make_case(seed, hidden=32 if seed % 2 else 64, prompt_words=3 + seed)
    lm = HFCausalLMAdapter(model)
    generator = torch.Generator().manual_seed(seed)
    ar = decode(lm, ids, inputs, mode="ar", block_len=n, allowed=allowed)
    jacobi = decode(lm, ids, inputs, mode="jacobi", block_len=n, allowed=allowed, generator=generator)
    expected = hf_greedy(model, ids, inputs, n, allowed)
    assert torch.equal(ar.tokens, expected)
    assert torch.equal(jacobi.tokens, expected)
    assert jacobi.stats.converged
    assert jacobi.stats.iterations <= max(n - 1, 0)
    assert jacobi.stats.forward_passes == jacobi.stats.iterations + 1
    assert ar.stats.forward_passes == n
    assert sum(jacobi.stats.tokens_fixed_per_iteration) == n - 1
    if allowed is not None:
        assert bool(((jacobi.tokens >= allowed.start) & (jacobi.tokens < allowed.stop)).all())


@pytest.mark.parametrize("seed", range(6))
def test_jacobi_trajectory_matches_uncached_reference(seed):
    """Every iterate equals full recomputation without a cache (catches a missing cache crop)."""
    model, ids, inputs = make_case(seed)
    n = 10
    initial = init_random_prompt_tokens(ids, n, torch.Generator().manual_seed(seed))
    allowed = ACTIONS if seed % 2 else None
    result = decode(HFCausalLMAdapter(model), ids, inputs, mode="jacobi", block_len=n, allowed=allowed,
                    initial_block=initial, record_trajectory=True)
    reference = reference_jacobi(model, ids, inputs, initial, allowed, max_iterations=n)
    ours = result.trajectory
    # Ours skips the iteration that only confirms the fixed point; otherwise the iterates are identical.
    assert len(ours) in (len(reference), len(reference) - 1) or len(reference) == 1
    for ours_block, reference_block in zip(ours, reference):
        assert torch.equal(ours_block, reference_block)
    assert torch.equal(result.tokens, reference[-1])


@pytest.mark.parametrize("allowed", [None, ACTIONS])
def test_batched_jacobi_trajectories_equal_batch1_decoding(allowed):
    """Left-padded prompts of different lengths, one batched run: every sample's trajectory is the
    batch-1 Jacobi trajectory (same stopping rule; finished samples leave the batch)."""
    model, _, _ = make_case(0)
    n, pad = 8, 0
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.tensor([model.prefix_token_ids() + torch.randint(6, 32, (k,), generator=generator).tolist()])
               for k in (3, 6, 5)]
    width = max(p.shape[1] for p in prompts)
    ids = torch.stack([torch.cat((torch.full((width - p.shape[1],), pad), p[0])) for p in prompts])
    mask = torch.stack(
        [
            torch.cat((torch.zeros(width - p.shape[1], dtype=torch.long), torch.ones(p.shape[1], dtype=torch.long)))
            for p in prompts
        ]
    )
    inputs = {
        "pixel_values": torch.randn(3, 3, 16, 16, generator=generator),
        "proprio": torch.randn(3, 2, generator=generator),
    }
    initial = torch.stack([init_random_prompt_tokens(p, n, generator) for p in prompts])
    batched = jacobi_trajectories_batched(model, ids, mask, inputs, initial, allowed=allowed)
    assert batched.converged.all()
    for i, prompt_ids in enumerate(prompts):
        single = decode(
            HFCausalLMAdapter(model),
            prompt_ids,
            {k: v[i : i + 1] for k, v in inputs.items()},
            mode="jacobi",
            block_len=n,
            allowed=allowed,
            initial_block=initial[i],
            record_trajectory=True,
        )
        assert torch.equal(batched.states[i], torch.stack(single.trajectory)), f"sample {i}"


class AdapterWithoutCrop(HFCausalLMAdapter):
    """The reference-code pitfall: stale block keys/values left in the cache."""

    def crop_cache(self, cache, length):
        pass


def test_reference_comparison_detects_a_missing_crop():
    mismatches = 0
    for seed in range(4):
        model, ids, inputs = make_case(seed)
        initial = init_random_prompt_tokens(ids, 10, torch.Generator().manual_seed(seed))
        broken = decode(
            AdapterWithoutCrop(model),
            ids,
            inputs,
            mode="jacobi",
            block_len=10,
            initial_block=initial,
            record_trajectory=True,
        )
        reference = reference_jacobi(model, ids, inputs, initial, None, max_iterations=10)
        mismatches += any(not torch.equal(a, b) for a, b in zip(broken.trajectory, reference))
        mismatches += not torch.equal(broken.tokens, reference[-1])
    assert mismatches > 0


@pytest.mark.parametrize("seed", range(4))
def test_early_exit_returns_the_kth_jacobi_iterate(seed):
    model, ids, inputs = make_case(seed)
    lm = HFCausalLMAdapter(model)
    n = 9
    initial = init_random_prompt_tokens(ids, n, torch.Generator().manual_seed(seed))
    full = decode(lm, ids, inputs, mode="jacobi", block_len=n, initial_block=initial, record_trajectory=True)
    trajectory = full.trajectory
    for k in range(1, n + 2):
        result = decode(lm, ids, inputs, mode="early_exit", block_len=n, initial_block=initial, early_exit_steps=k)
        expected = trajectory[min(k, len(trajectory) - 1)]
        assert torch.equal(result.tokens, expected), k
        assert result.stats.iterations == min(k, full.stats.iterations)
        assert result.stats.early_exit_steps == k
        assert result.stats.converged == (k >= full.stats.iterations)


def test_max_iterations_caps_jacobi_without_convergence():
    model, ids, inputs = make_case(1)
    result = decode(
        HFCausalLMAdapter(model),
        ids,
        inputs,
        mode="jacobi",
        block_len=20,
        max_iterations=2,
        initial_block=torch.full((20,), 7),
    )
    assert result.stats.iterations == 2 and not result.stats.converged


def test_decoding_twice_from_the_same_prefix_is_identical():
    model, ids, inputs = make_case(5)
    lm = HFCausalLMAdapter(model)
    cache, last_logits = lm.prefill(ids, inputs)
    prefix_len = lm.cache_length(cache)
    initial = init_random_prompt_tokens(ids, 12, torch.Generator().manual_seed(0))
    results = []
    for mode in ("jacobi", "ar", "jacobi", "early_exit", "ar"):
        results.append(
            decode_from_prefix(
                lm, cache, last_logits, mode=mode, block_len=12, initial_block=initial, early_exit_steps=3
            )
        )
        assert lm.cache_length(cache) == prefix_len
    assert torch.equal(results[0].tokens, results[2].tokens)
    assert torch.equal(results[0].tokens, results[1].tokens)
    assert torch.equal(results[1].tokens, results[4].tokens)
    again = decode(lm, ids, inputs, mode="jacobi", block_len=12, initial_block=initial)
    assert torch.equal(again.tokens, results[0].tokens)


def test_warm_start_initial_block():
    previous = torch.arange(100, 112)  # 4 actions x 3 dims
    assert init_warm_start(previous, 1, 3).tolist() == list(range(103, 112)) + [109, 110, 111]
    assert init_warm_start(previous, 0, 3).tolist() == list(range(100, 112))
    assert init_warm_start(previous, 9, 3).tolist() == [109, 110, 111] * 4
    random_tail = init_warm_start(previous, 2, 3, "random", ACTIONS, torch.Generator().manual_seed(0))
    assert random_tail[:6].tolist() == list(range(106, 112))
    assert bool(((random_tail[6:] >= ACTIONS.start) & (random_tail[6:] < ACTIONS.stop)).all())
    with pytest.raises(ValueError, match="whole number"):
        init_warm_start(previous, 1, 5)


def test_random_prompt_init_is_seedable_and_drawn_from_the_prompt():
    ids = torch.tensor([[4, 4, 9, 17, 23]])
    a = init_random_prompt_tokens(ids, 30, torch.Generator().manual_seed(3))
    b = init_random_prompt_tokens(ids, 30, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert set(a.tolist()) <= {4, 9, 17, 23}


def test_warm_start_converges_to_the_same_block():
    model, ids, inputs = make_case(2)
    lm = HFCausalLMAdapter(model)
    first = decode(lm, ids, inputs, mode="jacobi", block_len=12, allowed=ACTIONS, generator=torch.Generator())
    warm = decode(
        lm, ids, inputs, mode="jacobi", block_len=12, allowed=ACTIONS, initial_block=init_warm_start(first.tokens, 0, 3)
    )
    assert torch.equal(warm.tokens, first.tokens)
    assert warm.stats.iterations <= 1  # already the fixed point: one forward proves it


def test_bad_arguments():
    model, ids, inputs = make_case(0)
    lm = HFCausalLMAdapter(model)
    with pytest.raises(ValueError, match="unknown mode"):
        decode(lm, ids, inputs, mode="beam", block_len=4)
    with pytest.raises(ValueError, match="early_exit_steps"):
        decode(lm, ids, inputs, mode="early_exit", block_len=4)
    with pytest.raises(ValueError, match="initial_block has"):
        decode(lm, ids, inputs, mode="jacobi", block_len=4, initial_block=torch.zeros(3, dtype=torch.long))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    metadata = CheckpointMetadata(
        name="tiny",
        action_space="joint_delta",
        joint_names=["a", "b", "c"],
        action_dims=3,
        chunk_len=4,
        dt=0.1,
        action_norm=NormStats((-0.1,) * 3, (0.1,) * 3, (True, True, False)),
        proprio_names=["a", "b", "c"],
        proprio_norm=NormStats((-2.0,) * 3, (2.0,) * 3, (True,) * 3),
    )
    path = tmp_path_factory.mktemp("models") / "tiny"
    return build_tiny_checkpoint(
        path,
        metadata,
        seed=0,
        instructions=["reach the red cube"],
        hidden_size=32,
        vision_channels=(8, 16),
        vision_strides=(2, 2),
        num_keypoints=8,
    )


def test_policy_predicts_a_chunk_in_every_mode(tiny_checkpoint):
    policy = CeedVlaPolicy(tiny_checkpoint, DecodeSettings("jacobi"), seed=0)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    joints = np.array([0.1, -0.3, 1.0])
    ar = policy.predict(image, joints, "reach the red cube", DecodeSettings("ar"))
    jacobi = policy.predict(image, joints, "reach the red cube")
    early = policy.predict(image, joints, "reach the red cube", DecodeSettings("early_exit", 2))
    warm = policy.predict(image, joints, "reach the red cube", DecodeSettings(init="warm_start"), steps_executed=1)
    assert ar.actions.shape == (4, 3) and ar.tokens.shape == (12,)
    assert torch.equal(ar.tokens, jacobi.tokens) and torch.equal(ar.tokens, warm.tokens)
    assert early.stats.iterations <= 2 and early.stats.early_exit_steps == 2
    assert np.all(np.abs(ar.actions[:, :2]) <= 0.1 + 1e-9) and np.all(np.abs(ar.actions[:, 2]) <= 1.0)
    assert np.allclose(policy.action_tokenizer.decode(ar.tokens.numpy()), ar.actions)


def test_preprocess_images_resize_crop_and_channel_order(tiny_checkpoint):
    spec = tiny_checkpoint.metadata.image
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[..., 0] = 255
    pixels = preprocess_images(image, spec)
    assert pixels.shape == (1, 3, spec.height, spec.width)
    assert torch.allclose(pixels[0, 0], torch.ones(())) and torch.allclose(pixels[0, 1], -torch.ones(()))
    bgr = preprocess_images(
        image, type(spec)(height=spec.height, width=spec.width, channel_order="bgr", crop="center_square")
    )
    assert torch.allclose(bgr[0, 2], torch.ones(()))
    with pytest.raises(ValueError, match="uint8"):
        preprocess_images(image.astype(np.float32), spec)


def test_bench_smoke(capsys):
    rc = cli.main(
        [
            "bench",
            "--repeats",
            "1",
            "--hidden",
            "32",
            "--layers",
            "1",
            "--chunk-len",
            "2",
            "--action-dims",
            "3",
            "--early-exit-steps",
            "1",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    table = [line for line in out.split("Speed-ups")[0].splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == [
        "HF generate (greedy)",
        "ours: AR",
        "ours: Jacobi",
        "ours: early exit k=1",
        "ours: early exit k=2",
        "ours: Jacobi, kept prefix",
        "ours: Jacobi, fused + kept prefix",
        "ours: early exit k=1, fused",
        "ours: early exit k=2, fused",
    ]
    agree = [line for line in table[1:] if line.split("|")[-2].strip() == "100%"]
    assert len(agree) >= 5  # generate, AR, Jacobi and both kept-prefix Jacobi rows agree with AR
    passes = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in table[1:]}
    assert passes["ours: early exit k=1, fused"] == 1.0 and passes["ours: early exit k=1"] == 2.0
    pairs = [line for line in out.split("Speed-ups")[1].splitlines() if line.startswith("| ")]
    assert [line.split("|")[2].strip() for line in pairs[1:]] == [
        "Jacobi, kept prefix", "Jacobi, fused + kept prefix", "early exit k=1, fused", "early exit k=2, fused"]


def mistral(window: int | None):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=window,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return MistralForCausalLM(config).eval()


@pytest.mark.parametrize("mode", ["ar", "jacobi", "early_exit"])
def test_sliding_window_shorter_than_prompt_and_block_is_refused_clearly(mode):
    ids = torch.randint(6, VOCAB, (1, 12))
    lm = HFCausalLMAdapter(mistral(window=8))
    with pytest.raises(ValueError, match=r"sliding-window attention \(window 8\).*19 tokens"):
        decode(lm, ids, mode=mode, block_len=7, allowed=ACTIONS, early_exit_steps=2)
    with pytest.raises(ValueError, match="sliding-window"):
        HFCausalLMAdapter(mistral(window=8), min_context=8)  # refused at load time too


def test_sliding_window_that_holds_prompt_and_block_decodes_exactly():
    ids = torch.randint(6, VOCAB, (1, 12))
    lm = HFCausalLMAdapter(mistral(window=64))
    assert lm.sliding_window == 64 and HFCausalLMAdapter(mistral(window=None)).sliding_window is None
    ar = decode(lm, ids, mode="ar", block_len=7, allowed=ACTIONS)
    jacobi = decode(lm, ids, mode="jacobi", block_len=7, allowed=ACTIONS)
    assert torch.equal(ar.tokens, jacobi.tokens)


def test_decode_settings_are_validated_once():
    assert DecodeSettings.from_parameters("jacobi", 3, "warm_start") == DecodeSettings("jacobi", None, "warm_start")
    assert DecodeSettings.from_parameters("early_exit", 3, "random_prompt_tokens").early_exit_steps == 3
    for bad in (
        dict(mode="beam"),
        dict(mode="early_exit"),
        dict(mode="early_exit", early_exit_steps=0),
        dict(mode="ar", early_exit_steps=2),
        dict(init="zeros"),
    ):
        with pytest.raises(ValueError):
            DecodeSettings(**bad)


@pytest.mark.parametrize("pinned", [1, 4, 9])
def test_prefix_pinning_decodes_the_rest_conditioned_on_the_pinned_tokens(pinned):
    model, ids, inputs = make_case(4)
    lm = HFCausalLMAdapter(model)
    n = 12
    prefix = torch.randint(ACTIONS.start, ACTIONS.stop, (pinned,), generator=torch.Generator().manual_seed(pinned))
    result = decode(lm, ids, inputs, mode="jacobi", block_len=n, allowed=ACTIONS, generator=torch.Generator(),
                    pinned_prefix=prefix)
    # the fixed point is the greedy continuation of prompt + pinned prefix (AR with the prefix as given)
    expected = hf_greedy(model, torch.cat((ids, prefix[None]), dim=1), inputs, n - pinned, ACTIONS)
    assert torch.equal(result.tokens[:pinned], prefix)
    assert torch.equal(result.tokens[pinned:], expected)
    assert result.stats.converged and result.stats.pinned_tokens == pinned
    assert result.stats.iterations <= n - pinned
    early = decode(lm, ids, inputs, mode="early_exit", early_exit_steps=1, block_len=n, allowed=ACTIONS,
                   generator=torch.Generator(), pinned_prefix=prefix)
    assert torch.equal(early.tokens[:pinned], prefix) and early.stats.iterations == 1
    with pytest.raises(ValueError, match="Jacobi"):
        decode(lm, ids, inputs, mode="ar", block_len=n, allowed=ACTIONS, pinned_prefix=prefix)
    with pytest.raises(ValueError, match="at most"):
        decode(lm, ids, inputs, mode="jacobi", block_len=n, allowed=ACTIONS, generator=torch.Generator(),
               pinned_prefix=torch.full((n,), ACTIONS.start))


def test_policy_pins_the_previous_chunks_steps_re_expressed_for_joint_deltas(tiny_checkpoint):
    policy = CeedVlaPolicy(tiny_checkpoint, DecodeSettings("jacobi"), seed=0)
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    first_joints, joints = np.array([0.1, -0.3, 1.0]), np.array([0.12, -0.31, 1.0])
    first = policy.predict(image, first_joints, "reach the red cube")
    pinned = policy.predict(image, joints, "reach the red cube", steps_executed=1, pin_steps=2)
    assert pinned.stats.pinned_tokens == 6
    # the pinned steps command the same absolute targets as the previous chunk's steps 1 and 2 (up to a bin)
    bin_width = 0.2 / policy.metadata.n_bins
    targets_before = first_joints + first.actions[1:3]
    targets_now = joints + pinned.actions[:2]
    assert np.all(np.abs(targets_now[:, :2] - targets_before[:, :2]) <= bin_width + 1e-9)
    unpinned = policy.predict(image, joints, "reach the red cube", DecodeSettings("ar"), steps_executed=1, pin_steps=2)
    assert unpinned.stats.pinned_tokens == 0  # AR decodes every token
    policy.reset()
    assert policy.predict(image, joints, "reach the red cube", pin_steps=2).stats.pinned_tokens == 0  # no previous


# ---------------------------------------------------------------------------------------------------------------
# Fused prefill (prompt + guessed block in one forward) and the kept-prefix cache.


def make_conditioned_case(seed: int):
    """As make_case, with instruction-conditioned image tokens (the prompt encoding reads the whole prompt)."""
    model, ids, inputs = make_case(seed)
    config = model.config
    config.vision_prompt_conditioning = True
    torch.manual_seed(seed)
    return CeedVlaForActionPrediction(config).eval(), ids, inputs


class ForwardCounter:
    """Counts the model's forward calls with a forward hook on the real model."""

    def __init__(self, model) -> None:
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


@torch.no_grad()
def reference_fused(model, ids, inputs, guess, allowed, iterations):
    """Uncached reference: iterate 1 = argmax of one forward over [prompt + guess] (position 0 included),
    then plain Jacobi iterations by full recomputation."""
    prompt_len, n = ids.shape[1], guess.numel()
    block = guess.clone()
    trajectory = [block]
    for iteration in range(iterations):
        # prompt_length: the prompt encoding (instruction-conditioned image tokens) sees the prompt only
        logits = model(input_ids=torch.cat((ids, block[None]), dim=1), **inputs, prompt_length=prompt_len).logits[0]
        predicted = argmax(logits[prompt_len - 1 : prompt_len - 1 + n], allowed)
        block = predicted if iteration == 0 else torch.cat((block[:1], predicted[1:]))
        trajectory.append(block)
    return trajectory


@pytest.mark.parametrize("conditioned", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_fused_early_exit_k1_is_one_forward_pass(seed, conditioned):
    model, ids, inputs = (make_conditioned_case if conditioned else make_case)(seed)
    lm = HFCausalLMAdapter(model)
    n = 8
    guess = init_random_prompt_tokens(ids, n, torch.Generator().manual_seed(seed))
    counter = ForwardCounter(model)
    fused = decode(lm, ids, inputs, mode="early_exit", early_exit_steps=1, block_len=n, allowed=ACTIONS,
                   initial_block=guess, fused_prefill=True)
    assert counter.calls == 1 and fused.stats.forward_passes == 1 and fused.stats.iterations == 1
    assert fused.stats.fused_prefill
    unfused = decode(lm, ids, inputs, mode="early_exit", early_exit_steps=1, block_len=n, allowed=ACTIONS,
                     initial_block=guess)
    assert counter.calls == 3 and unfused.stats.forward_passes == 2  # today's k = 1: prefill + 1 iteration
    reference = reference_fused(model, ids, inputs, guess, ACTIONS, iterations=1)
    assert torch.equal(fused.tokens, reference[1])
    # The first token is exact (from the prompt alone) in both; the rest came from a guessed position 0.
    assert fused.tokens[0] == unfused.tokens[0]


FUSED_CASES = [(s, n, a) for s in range(4) for n, a in ((1, ACTIONS), (7, None), (16, ACTIONS))]


@pytest.mark.parametrize("conditioned", [False, True])
@pytest.mark.parametrize("seed,n,allowed", FUSED_CASES)
def test_fused_jacobi_still_converges_to_ar(seed, n, allowed, conditioned):
    model, ids, inputs = (make_conditioned_case if conditioned else make_case)(seed)
    lm = HFCausalLMAdapter(model)
    ar = decode(lm, ids, inputs, mode="ar", block_len=n, allowed=allowed)
    for keep in (False, True):
        fused = decode(lm, ids, inputs, mode="jacobi", block_len=n, allowed=allowed, fused_prefill=True,
                       keep_final_prefix=keep, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(fused.tokens, ar.tokens) and fused.stats.converged
        assert fused.stats.forward_passes == fused.stats.iterations <= n


@pytest.mark.parametrize("seed", range(3))
def test_fused_iterates_match_the_uncached_reference(seed):
    model, ids, inputs = make_conditioned_case(seed)
    lm = HFCausalLMAdapter(model)
    n = 9
    guess = init_random_prompt_tokens(ids, n, torch.Generator().manual_seed(seed))
    full = decode(lm, ids, inputs, mode="jacobi", block_len=n, initial_block=guess, fused_prefill=True,
                  record_trajectory=True)
    reference = reference_fused(model, ids, inputs, guess, None, iterations=len(full.trajectory) - 1)
    for ours, expected in zip(full.trajectory, reference):
        assert torch.equal(ours, expected)
    for k in range(1, full.stats.iterations + 1):
        early = decode(lm, ids, inputs, mode="early_exit", early_exit_steps=k, block_len=n, initial_block=guess,
                       fused_prefill=True)
        assert torch.equal(early.tokens, full.trajectory[k]) and early.stats.forward_passes == k


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("seed,allowed", [(s, a) for s in range(6) for a in (None, ACTIONS)])
def test_kept_prefix_cache_gives_identical_outputs(seed, allowed, fused):
    model, ids, inputs = make_case(seed, hidden=32 if seed % 2 else 64)
    lm = HFCausalLMAdapter(model)
    n = 16
    guess = init_random_prompt_tokens(ids, n, torch.Generator().manual_seed(seed))
    common = dict(block_len=n, allowed=allowed, initial_block=guess, fused_prefill=fused, record_trajectory=True)
    plain = decode(lm, ids, inputs, mode="jacobi", **common)
    kept = decode(lm, ids, inputs, mode="jacobi", keep_final_prefix=True, **common)
    assert len(plain.trajectory) == len(kept.trajectory)
    for a, b in zip(plain.trajectory, kept.trajectory):
        assert torch.equal(a, b)
    assert plain.stats.iterations == kept.stats.iterations
    assert plain.stats.tokens_fixed_per_iteration == kept.stats.tokens_fixed_per_iteration
    assert kept.stats.tokens_run <= plain.stats.tokens_run == n * plain.stats.iterations
    if plain.stats.iterations > 1:
        assert kept.stats.tokens_run < plain.stats.tokens_run  # it did skip the final prefix
    for k in (1, 2, 3):
        a = decode(lm, ids, inputs, mode="early_exit", early_exit_steps=k, **common)
        b = decode(lm, ids, inputs, mode="early_exit", early_exit_steps=k, keep_final_prefix=True, **common)
        assert torch.equal(a.tokens, b.tokens)


def test_kept_prefix_leaves_the_cache_at_the_prefix():
    model, ids, inputs = make_case(2)
    lm = HFCausalLMAdapter(model)
    cache, last_logits = lm.prefill(ids, inputs)
    prefix_len = lm.cache_length(cache)
    first = decode_from_prefix(lm, cache, last_logits, mode="jacobi", block_len=12, prompt_ids=ids,
                               keep_final_prefix=True, generator=torch.Generator().manual_seed(0))
    assert lm.cache_length(cache) == prefix_len
    again = decode_from_prefix(lm, cache, last_logits, mode="ar", block_len=12)
    assert torch.equal(first.tokens, again.tokens)


def test_speedup_options_are_jacobi_only_and_reach_the_policy(tiny_checkpoint):
    with pytest.raises(ValueError, match="not AR"):
        DecodeSettings("ar", fused_prefill=True)
    model, ids, inputs = make_case(0)
    with pytest.raises(ValueError, match="fused_prefill needs"):
        decode(HFCausalLMAdapter(model), ids, inputs, mode="ar", block_len=4, fused_prefill=True)
    policy = CeedVlaPolicy(tiny_checkpoint, DecodeSettings("jacobi"), seed=0)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    joints = np.array([0.1, -0.3, 1.0])
    ar = policy.predict(image, joints, "reach the red cube", DecodeSettings("ar"))
    one = policy.predict(image, joints, "reach the red cube", DecodeSettings("early_exit", 1, fused_prefill=True))
    assert one.stats.forward_passes == 1 and one.stats.fused_prefill
    for settings in (DecodeSettings("jacobi", fused_prefill=True, keep_final_prefix=True),
                     DecodeSettings("jacobi", init="warm_start", fused_prefill=True),
                     DecodeSettings("jacobi", keep_final_prefix=True)):
        assert torch.equal(policy.predict(image, joints, "reach the red cube", settings).tokens, ar.tokens)


@pytest.mark.parametrize("pinned", [1, 4])
def test_prefix_pinning_with_the_kept_prefix_cache_gives_the_same_iterates(pinned):
    model, ids, inputs = make_case(5)
    lm = HFCausalLMAdapter(model)
    n = 12
    prefix = torch.randint(ACTIONS.start, ACTIONS.stop, (pinned,), generator=torch.Generator().manual_seed(pinned))
    plain, kept = (
        decode(lm, ids, inputs, mode="jacobi", block_len=n, allowed=ACTIONS, generator=torch.Generator().manual_seed(3),
               pinned_prefix=prefix, record_trajectory=True, keep_final_prefix=keep)
        for keep in (False, True)
    )
    assert torch.equal(kept.tokens[:pinned], prefix)
    assert len(plain.trajectory) == len(kept.trajectory)
    assert all(torch.equal(a, b) for a, b in zip(plain.trajectory, kept.trajectory))
    assert kept.stats.tokens_run < plain.stats.tokens_run
    with pytest.raises(ValueError, match="pinned_prefix"):
        decode(lm, ids, inputs, mode="jacobi", block_len=n, allowed=ACTIONS, generator=torch.Generator(),
               pinned_prefix=prefix, fused_prefill=True)
