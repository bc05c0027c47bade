"""Device / dtype parsing (ceed_vla_ros.precision) and bf16 decoding on the CPU."""

from __future__ import annotations

import pytest
import torch

from ceed_vla_ros.precision import (
    PrecisionError,
    check_device_name,
    check_dtype_name,
    parse_device,
    parse_dtype,
    resolve_precision,
)


@pytest.mark.parametrize(("name", "expected"), [("auto", "auto"), ("CPU", "cpu"), (" cuda ", "cuda"),
                                                ("cuda:01", "cuda:1")])
def test_device_names(name, expected):
    assert check_device_name(name) == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "mps", "", "cuda:-1"])
def test_bad_device_names_are_refused(name):
    with pytest.raises(PrecisionError, match="expected auto, cpu, cuda or cuda:N"):
        check_device_name(name)


@pytest.mark.parametrize(("name", "expected"), [("bf16", "bfloat16"), ("FP32", "float32"), ("half", "float16"),
                                                ("bfloat16", "bfloat16"), ("auto", "auto")])
def test_dtype_names(name, expected):
    assert check_dtype_name(name) == expected


def test_bad_dtype_is_refused():
    with pytest.raises(PrecisionError, match="int8"):
        check_dtype_name("int8")


def test_cpu_and_auto_resolve_here():
    assert parse_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    assert parse_device("auto") == expected
    assert parse_dtype("auto", "cpu") == torch.float32
    assert parse_dtype("bf16", "cpu") == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_refused_clearly(name):
    with pytest.raises(PrecisionError) as info:
        parse_device(name)
    message = str(info.value)
    assert repr(name) in message and "use device cpu" in message
    assert ("CPU-only build" in message) == (torch.version.cuda is None)


def test_cuda_index_beyond_the_gpus_is_refused():
    with pytest.raises(PrecisionError, match="cuda:99"):
        parse_device("cuda:99")


def test_float16_on_cpu_is_refused_unless_allowed():
    with pytest.raises(PrecisionError, match="float16 on the CPU"):
        resolve_precision("cpu", "float16")
    assert resolve_precision("cpu", "fp16", allow_cpu_float16=True).dtype == torch.float16


def test_checkpoint_loads_in_bfloat16_and_decodes(tiny_model_dir):
    """A checkpoint loaded in bf16 has bf16 weights, and AR and Jacobi both return action tokens;
    the Jacobi fixed point equals AR except after a near-tie (see bench-precision and the notes)."""
    from ceed_vla_ros.checkpoint import load_checkpoint_path
    from ceed_vla_ros.decoding import DecodeSettings
    from ceed_vla_ros.policy import CeedVlaPolicy

    checkpoint = load_checkpoint_path(tiny_model_dir / "tiny_sim", dtype=torch.bfloat16)
    assert {p.dtype for p in checkpoint.model.parameters()} == {torch.bfloat16}
    policy = CeedVlaPolicy(checkpoint, seed=0)
    image = torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)).numpy()
    joints = [0.0] * checkpoint.metadata.proprio_dim or None
    first, last = policy.action_tokenizer.token_range
    outputs = {mode: policy.predict(image, joints, "reach the red cube", DecodeSettings(mode))
               for mode in ("ar", "jacobi")}
    for out in outputs.values():
        assert out.tokens.numel() == checkpoint.metadata.block_len
        assert bool(((out.tokens >= first) & (out.tokens < last)).all())
        assert out.actions.shape == (checkpoint.metadata.chunk_len, checkpoint.metadata.action_dims)
    assert outputs["jacobi"].stats.converged


def test_float32_head_keeps_the_trunk_in_bf16_and_gives_float32_logits(tiny_model_dir):
    from ceed_vla_ros.checkpoint import load_checkpoint_path
    from ceed_vla_ros.precision import float32_output_head

    checkpoint = load_checkpoint_path(tiny_model_dir / "tiny_sim", dtype=torch.bfloat16)
    model = checkpoint.model
    assert float32_output_head(model)
    assert model.get_output_embeddings().weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    image = torch.zeros((64, 64, 3), dtype=torch.uint8).numpy()
    ids = torch.tensor([checkpoint.prompt_ids("reach the red cube")])
    inputs = checkpoint.model_inputs(image, torch.zeros(1, checkpoint.metadata.proprio_dim))
    with torch.no_grad():
        logits = model(input_ids=ids, **inputs).logits
    assert logits.dtype == torch.float32
    # finer than bf16: the logits are not all on bf16's grid
    assert bool((logits != logits.to(torch.bfloat16).float()).any())
    fp32 = load_checkpoint_path(tiny_model_dir / "tiny_sim")
    assert not float32_output_head(fp32.model)  # float32 models are left alone
