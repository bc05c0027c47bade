"""The native OpenVLA backend on tiny random folders written in the published layout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from ceed_vla_ros.action_tokenizer import ActionTokenizer, NormStats
from ceed_vla_ros.backends.openvla import (
    EMPTY_TOKEN_ID,
    INDEX_FILE,
    build_tiny_openvla_folder,
    expected_parameter_shapes,
    import_openvla,
)
from ceed_vla_ros.backends.openvla_model import OpenVlaConfig, OpenVlaForActionPrediction, count_parameters_from_config
from ceed_vla_ros.checkpoint import load_checkpoint
from ceed_vla_ros.decoding import TokenRange, decode
from ceed_vla_ros.metadata import CheckpointError, load_metadata
from ceed_vla_ros.policy import CeedVlaPolicy

INSTRUCTION = "pick up the red block"
IMPORT = dict(action_space="joint_delta", dt=0.2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_openvla_folder(tmp_path_factory.mktemp("openvla") / "tiny-openvla", seed=0,
                                     instructions=[INSTRUCTION])


@pytest.fixture(scope="module")
def checkpoint(folder, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("models")
    import_openvla(folder, model_dir, "tiny_ovla", **IMPORT)
    return load_checkpoint(model_dir, "tiny_ovla")


def broken_copy(folder, tmp_path, name="broken"):
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def test_the_published_layout_loads_without_running_its_remote_code(folder, checkpoint):
    assert json.loads((folder / "config.json").read_text())["auto_map"]  # remote code is declared ...
    assert not list(folder.glob("REMOTE_CODE_RAN_*"))  # ... and never ran
    assert isinstance(checkpoint.model, OpenVlaForActionPrediction)
    weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
    assert len(set(weight_map.values())) == 2
    assert set(weight_map) == set(checkpoint.model.state_dict())
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in weight_map  # timm gamma, OpenVLA's name
    assert "vision_backbone.fused_featurizer.attn_pool.latent" in weight_map
    assert "projector.fc3.weight" in weight_map
    metadata = checkpoint.metadata
    assert metadata.source_dir == str(folder.resolve())
    assert (metadata.vocab_size, metadata.action_vocab_size, metadata.action_tokenizer().token_range) == (
        32064, 32000, (31744, 32000))


def test_7b_config_implies_the_published_parameter_layout():
    config = OpenVlaConfig(
        text_config=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, pad_token_id=32000),
        timm_model_ids=["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        timm_override_act_layers=[None, None], image_sizes=[224, 224])
    shapes = expected_parameter_shapes(config)
    assert shapes["vision_backbone.featurizer.pos_embed"] == (1, 256, 1024)
    assert shapes["vision_backbone.featurizer.reg_token"] == (1, 4, 1024)
    assert shapes["vision_backbone.featurizer.patch_embed.proj.weight"] == (1024, 3, 14, 14)
    assert shapes["vision_backbone.featurizer.blocks.23.ls2.scale_factor"] == (1024,)
    assert shapes["vision_backbone.fused_featurizer.pos_embed"] == (1, 256, 1152)
    assert shapes["vision_backbone.fused_featurizer.blocks.26.mlp.fc1.weight"] == (4304, 1152)
    assert "vision_backbone.fused_featurizer.cls_token" not in shapes
    assert shapes["projector.fc1.weight"] == (8704, 2176)
    assert shapes["projector.fc2.weight"] == (4096, 8704)
    assert shapes["projector.fc3.weight"] == (4096, 4096)
    assert shapes["language_model.model.embed_tokens.weight"] == (32064, 4096)
    assert shapes["language_model.lm_head.weight"] == (32064, 4096)
    # the module tree and the independent per-layer formula agree on the total
    assert sum(int(np.prod(s)) for s in shapes.values()) == count_parameters_from_config(config)
    assert config.num_patches == 256 and config.action_vocab_size == 32000


def test_prompt_is_openvlas_and_the_tokenizer_round_trips(checkpoint):
    ids = checkpoint.prompt_ids("Pick up the red block")
    tokenizer = checkpoint.tokenizer
    assert ids[0] == tokenizer.bos_token_id == 1
    assert ids[-1] == EMPTY_TOKEN_ID
    assert tokenizer.decode(ids[1:-1]) == "In: What action should the robot take to pick up the red block?\nOut:"
    assert ids[:-1] == tokenizer("In: What action should the robot take to pick up the red block?\nOut:")["input_ids"]
    assert tokenizer.pad_token_id == 32000


def test_action_tokens_and_unnormalisation_follow_openvlas_formulas(checkpoint):
    metadata = checkpoint.metadata
    tokenizer = metadata.action_tokenizer()
    rng = np.random.default_rng(0)
    ids = rng.integers(31744, 32000, size=7)
    # OpenVLA predict_action: bins = linspace(-1, 1, 256), centres of the 255 intervals
    bins = np.linspace(-1, 1, 256)
    centres = (bins[:-1] + bins[1:]) / 2
    normalized = centres[np.clip(32000 - ids - 1, 0, 254)]
    q01, q99 = np.array(metadata.action_norm.q01), np.array(metadata.action_norm.q99)
    mask = np.array(metadata.action_norm.mask)
    expected = np.where(mask, 0.5 * (normalized + 1) * (q99 - q01) + q01, normalized)
    np.testing.assert_allclose(tokenizer.decode(ids), expected.reshape(1, 7))
    # encode: 32000 - digitize(clip(a)), and encode -> decode lands within one bin
    actions = rng.uniform(-1.5, 1.5, size=(1, 7))
    a = metadata.action_norm.normalize(actions)
    np.testing.assert_array_equal(tokenizer.encode(actions), 32000 - np.digitize(a, bins).reshape(-1))
    assert np.abs(tokenizer.normalized_actions(tokenizer.encode(actions)) - a).max() <= 2 / 255


def test_jacobi_fixed_point_equals_ar_and_a_cache_free_greedy_reference(checkpoint):
    model = checkpoint.model
    ids = torch.tensor([checkpoint.prompt_ids(INSTRUCTION)])
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    inputs = checkpoint.model_inputs(image)
    assert inputs["pixel_values"].shape == (1, 6, 224, 224)
    allowed = TokenRange(31744, 32000)
    block = 7 * 2
    ar = decode(checkpoint.block_lm(), ids, inputs, mode="ar", block_len=block, allowed=allowed)
    jacobi = decode(checkpoint.block_lm(), ids, inputs, mode="jacobi", block_len=block, allowed=allowed,
                    generator=torch.Generator().manual_seed(0), record_trajectory=True)
    early = decode(checkpoint.block_lm(), ids, inputs, mode="early_exit", block_len=block, allowed=allowed,
                   early_exit_steps=1, generator=torch.Generator().manual_seed(0))
    reference = []  # greedy over full forwards without a cache, upstream-style image insertion
    with torch.no_grad():
        for _ in range(block):
            sequence = torch.cat((ids, torch.tensor([reference], dtype=torch.long).reshape(1, -1)), dim=1)
            logits = model(input_ids=sequence, **inputs).logits[0, -1, 31744:32000]
            reference.append(int(logits.argmax()) + 31744)
    assert ar.tokens.tolist() == reference
    assert jacobi.tokens.tolist() == reference and jacobi.stats.converged
    assert len(set(reference)) > 1  # a model whose argmax is not constant
    assert early.tokens.tolist() == jacobi.trajectory[1].tolist()


def test_left_padded_batches_decode_like_batch_one(checkpoint):
    from ceed_vla_ros.decoding import jacobi_trajectories_batched

    long_ids = checkpoint.prompt_ids(INSTRUCTION)
    short_ids = checkpoint.prompt_ids("pick up")
    width = len(long_ids)
    pad = checkpoint.pad_token_id
    input_ids = torch.tensor([long_ids, [pad] * (width - len(short_ids)) + short_ids])
    mask = (torch.arange(width)[None] >= torch.tensor([[0], [width - len(short_ids)]])).long()
    images = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    inputs = checkpoint.model_inputs(images)
    initial = torch.tensor([long_ids[:8], short_ids[:8]])
    allowed = TokenRange(31744, 32000)
    batched = jacobi_trajectories_batched(checkpoint.model, input_ids, mask, inputs, initial, allowed=allowed)
    for row, ids in enumerate((long_ids, short_ids)):
        pixels = {"pixel_values": inputs["pixel_values"][row:row + 1]}
        single = decode(checkpoint.block_lm(), torch.tensor([ids]), pixels, mode="jacobi", block_len=8, allowed=allowed,
                        initial_block=initial[row],
                        record_trajectory=True)
        assert batched.states[row].tolist() == [s.tolist() for s in single.trajectory]


def test_policy_decodes_unnormalised_actions(checkpoint):
    output = CeedVlaPolicy(checkpoint).predict(
        np.zeros((64, 64, 3), np.uint8), None, INSTRUCTION)
    assert output.actions.shape == (1, 7)
    np.testing.assert_allclose(output.actions, checkpoint.metadata.action_tokenizer().decode(output.tokens.numpy()))


def test_fine_tune_statistics_and_unnorm_key(tmp_path):
    stats = {name: {"action": {"q01": [-i - 1.0] * 7, "q99": [i + 1.0] * 7, "mask": [True] * 6 + [False]}}
             for i, name in enumerate(("bridge_orig", "libero_10"))}
    source = build_tiny_openvla_folder(tmp_path / "ft", fine_tune_statistics=stats, hidden_size=16, num_layers=1,
                                       num_heads=2, towers=({"embed_dim": 16, "depth": 2, "num_heads": 2},) * 2)
    with pytest.raises(CheckpointError, match="dataset_statistics.json: statistics of 2 datasets.*--unnorm-key"):
        import_openvla(source, tmp_path / "models", "ft", **IMPORT)
    with pytest.raises(CheckpointError, match="unknown unnorm_key 'nope'; choose from bridge_orig, libero_10"):
        import_openvla(source, tmp_path / "models", "ft", unnorm_key="nope", **IMPORT)
    metadata = import_openvla(source, tmp_path / "models", "ft", unnorm_key="libero_10", chunk_len=3, **IMPORT)
    assert metadata.action_norm == NormStats((-2.0,) * 7, (2.0,) * 7, (True,) * 6 + (False,))
    assert load_metadata(tmp_path / "models", "ft").block_len == 21
    assert ActionTokenizer(32000, 256, metadata.action_norm, 3, "openvla").token_range == (31744, 32000)


@pytest.mark.parametrize("damage, message", [
    ("missing_shard", "model-00002-of-00002.safetensors: shard listed in model.safetensors.index.json is missing"),
    ("index_disagrees", "disagrees with model.safetensors.index.json"),
    ("wrong_key", "unexpected tensor 'vision_backbone.featurizer.blocks.0.ls1.gamma'"),
    ("pickle", "pytorch_model.bin'.* refusing to load"),
    ("remote_only", "model_type 'prismatic_custom' loads only through remote code"),
])
def test_bad_folders_get_one_clear_error_naming_the_file(folder, tmp_path, damage, message):
    source = broken_copy(folder, tmp_path)
    index = json.loads((source / INDEX_FILE).read_text())
    if damage == "missing_shard":
        (source / "model-00002-of-00002.safetensors").unlink()
    elif damage == "index_disagrees":
        key = next(k for k, v in index["weight_map"].items() if v.startswith("model-00001"))
        index["weight_map"][key] = "model-00002-of-00002.safetensors"
        (source / INDEX_FILE).write_text(json.dumps(index))
    elif damage == "wrong_key":
        from safetensors.torch import load_file, save_file

        shard = index["weight_map"]["vision_backbone.featurizer.blocks.0.ls1.scale_factor"]
        tensors = load_file(source / shard)
        tensors["vision_backbone.featurizer.blocks.0.ls1.gamma"] = tensors.pop(
            "vision_backbone.featurizer.blocks.0.ls1.scale_factor")
        save_file(tensors, source / shard)
        index["weight_map"]["vision_backbone.featurizer.blocks.0.ls1.gamma"] = index["weight_map"].pop(
            "vision_backbone.featurizer.blocks.0.ls1.scale_factor")
        (source / INDEX_FILE).write_text(json.dumps(index))
    elif damage == "pickle":
        (source / "pytorch_model.bin").write_bytes(b"\x80\x04not opened")
    elif damage == "remote_only":
        config = json.loads((source / "config.json").read_text())
        config["model_type"] = "prismatic_custom"
        (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message) as error:
        import_openvla(source, tmp_path / "models", "broken", **IMPORT)
    assert str(source) in str(error.value)
    assert not list(source.glob("REMOTE_CODE_RAN_*"))


def test_a_shard_replaced_after_import_is_refused_on_load(folder, tmp_path):
    source = broken_copy(folder, tmp_path)
    import_openvla(source, tmp_path / "models", "swapped", **IMPORT)
    from safetensors.torch import load_file, save_file

    shard = source / "model-00001-of-00002.safetensors"
    tensors = load_file(shard)
    save_file({k: v.clone() for k, v in tensors.items()}, shard, metadata={"format": "pt", "edited": "yes"})
    with pytest.raises(CheckpointError, match="weights digest .* differs"):
        load_checkpoint(tmp_path / "models", "swapped")


def test_import_command_and_info(folder, tmp_path):
    command = [sys.executable, "-m", "ceed_vla_ros.tools.cli"]
    done = subprocess.run(command + ["import", "openvla", str(folder), "--name", "cli_ovla", "--model-dir",
                                     str(tmp_path), "--action-space", "joint_delta", "--dt", "0.2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "imported" in done.stdout and "1x7 actions" in done.stdout
    assert sorted(p.name for p in (tmp_path / "cli_ovla").iterdir()) == ["ceed_vla.yaml"]  # nothing copied
    info = subprocess.run(command + ["info", "cli_ovla", "--model-dir", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert info.returncode == 0, info.stdout + info.stderr
    assert "backend: openvla" in info.stdout and f"source_dir: {folder.resolve()}" in info.stdout
