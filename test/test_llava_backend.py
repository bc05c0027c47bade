"""The llava backend on a tiny random LLaVA folder in transformers' converted layout: import, load,
Jacobi == AR == transformers' greedy generate, early exit = the k-th iterate, unnormalisation,
refused folders, and collect-trajectories + distill (full and LoRA) on it."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from ceed_vla_ros.backends.llava import build_tiny_llava_folder, import_llava, insert_proprio_ids
from ceed_vla_ros.checkpoint import load_checkpoint
from ceed_vla_ros.decoding import TokenRange, decode
from ceed_vla_ros.metadata import CheckpointError
from ceed_vla_ros.policy import CeedVlaPolicy
from ceed_vla_ros.sim.mjcf import JOINT_NAMES
from ceed_vla_ros.sim.recorder import record_dataset
from ceed_vla_ros.tools import cli
from ceed_vla_ros.training.dataset import load_teacher_data
from ceed_vla_ros.training.train_teacher import all_instructions

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CHUNK = 2
INSTRUCTION = "reach the red cube"


@pytest.fixture(scope="module")
def llava_world(tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("llava")
    files = [root / "reach.h5"]
    record_dataset("reach", 2, files[0], seed=0, image_size=32, horizon=8, progress=False)
    data = load_teacher_data(files, CHUNK)
    source = build_tiny_llava_folder(root / "llava-tiny-hf", all_instructions(), seed=0, init_std=0.2)
    stats = root / "statistics.yaml"
    entry = {"action": data.action_stats().to_dict(), "proprio": data.proprio_stats().to_dict()}
    stats.write_text(yaml.safe_dump(entry))
    import_llava(source, root / "models", "tiny_llava", stats_file=stats, joint_names=JOINT_NAMES,
                 proprio_names=JOINT_NAMES, chunk_len=CHUNK, action_space="joint_delta")
    checkpoint = load_checkpoint(root / "models", "tiny_llava")
    return {"root": root, "files": files, "source": source, "stats": stats, "checkpoint": checkpoint}


def prompt_and_inputs(checkpoint, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    proprio = torch.tensor([[0.1, -0.5, 0.9, 0.0]])
    ids = torch.tensor([checkpoint.prompt_ids(INSTRUCTION)])
    return ids, checkpoint.model_inputs(image, proprio)


def test_import_writes_metadata_only_and_loads_natively(llava_world):
    checkpoint = llava_world["checkpoint"]
    folder = llava_world["root"] / "models" / "tiny_llava"
    assert sorted(p.name for p in folder.iterdir()) == ["ceed_vla.yaml"]  # no weights copied
    assert type(checkpoint.model).__mro__[1].__name__ == "LlavaForConditionalGeneration"
    assert checkpoint.metadata.backend == "llava" and checkpoint.metadata.action_token_scheme == "openvla"
    assert len(list(llava_world["source"].glob("model-*-of-*.safetensors"))) >= 2  # sharded, with an index
    config = json.loads((llava_world["source"] / "config.json").read_text())
    assert config["model_type"] == "llava" and "auto_map" not in config
    # action ids: the last 256 of the text vocabulary (before <image>, <pad>)
    tokenizer = checkpoint.tokenizer
    first, stop = checkpoint.action_tokenizer.token_range
    assert stop == tokenizer.vocab_size and stop - first == 256
    assert tokenizer.convert_tokens_to_ids("<image>") == stop == checkpoint.model.config.image_token_id


def test_prompt_expands_the_image_and_holds_proprio_tokens(llava_world):
    checkpoint = llava_world["checkpoint"]
    ids, inputs = prompt_and_inputs(checkpoint)
    config = checkpoint.model.config
    assert int((ids == config.image_token_id).sum()) == 4  # (28 / 14)^2 patches, CLS dropped
    assert ids[0, 0] == checkpoint.tokenizer.bos_token_id
    proprio = inputs["proprio_token_ids"]
    assert proprio.shape == (1, 4)
    # the same ids an action of the same normalised value gets
    expected = checkpoint.action_tokenizer.bins_to_tokens(
        checkpoint.action_tokenizer.discretize(np.array([[0.1, -0.5, 0.9, 0.0]])))
    assert proprio.tolist() == expected.tolist()
    filled = insert_proprio_ids(ids, proprio, config.proprio_placeholder_id)
    assert int((filled != ids).sum()) == 4


def test_jacobi_equals_ar_equals_transformers_greedy_generate(llava_world):
    checkpoint = llava_world["checkpoint"]
    model, n = checkpoint.model, checkpoint.metadata.block_len
    ids, inputs = prompt_and_inputs(checkpoint)
    allowed = TokenRange(*checkpoint.action_tokenizer.token_range)
    lm = checkpoint.block_lm()
    ar = decode(lm, ids, inputs, mode="ar", block_len=n, allowed=allowed)
    jacobi = decode(lm, ids, inputs, mode="jacobi", block_len=n, allowed=allowed,
                    generator=torch.Generator().manual_seed(3), record_trajectory=True)
    filled = insert_proprio_ids(ids, inputs["proprio_token_ids"], model.config.proprio_placeholder_id)
    vocab = model.config.text_config.vocab_size
    suppress = [i for i in range(vocab) if not allowed.start <= i < allowed.stop]
    reference = model.generate(input_ids=filled, pixel_values=inputs["pixel_values"], max_new_tokens=n,
                               min_new_tokens=n, do_sample=False, suppress_tokens=suppress, num_beams=1)
    assert reference[0, ids.shape[1]:].tolist() == ar.tokens.tolist() == jacobi.tokens.tolist()
    assert jacobi.stats.converged and len(set(ar.tokens.tolist())) > 2  # a random model, not a constant
    for k in (1, 2, 3):
        early = decode(lm, ids, inputs, mode="early_exit", early_exit_steps=k, block_len=n, allowed=allowed,
                       generator=torch.Generator().manual_seed(3))
        assert early.tokens.tolist() == jacobi.trajectory[min(k, len(jacobi.trajectory) - 1)].tolist()


def test_actions_unnormalise_as_the_reference_formula(llava_world):
    checkpoint = llava_world["checkpoint"]
    policy = CeedVlaPolicy(checkpoint, seed=0)
    image = np.zeros((32, 32, 3), np.uint8)
    joints = np.array([0.0, 0.3, 0.5, -0.2])
    out = policy.predict(image, joints, INSTRUCTION)
    metadata = checkpoint.metadata
    tokens = out.tokens.numpy().reshape(CHUNK, 4)
    base, edges = metadata.action_token_base, np.linspace(-1, 1, 256)
    index = np.clip(base - tokens - 1, 0, 254)
    normalized = (edges[index] + edges[index + 1]) / 2
    q01, q99 = np.array(metadata.action_norm.q01), np.array(metadata.action_norm.q99)
    expected = 0.5 * (normalized + 1) * (q99 - q01) + q01
    np.testing.assert_allclose(out.actions, expected, atol=1e-9)


def test_the_two_views_are_stacked_vertically(llava_world):
    from ceed_vla_ros.backends.llava import stack_views

    static = np.full((1, 20, 30, 3), 10, np.uint8)
    wrist = np.full((1, 20, 30, 3), 200, np.uint8)
    stacked = stack_views(torch.from_numpy(np.stack([static, wrist], 1)), (16, 32))
    assert stacked.shape == (1, 32, 32, 3)
    assert torch.allclose(stacked[0, :16], torch.tensor(10.0)) and torch.allclose(stacked[0, 16:], torch.tensor(200.0))
    checkpoint = llava_world["checkpoint"]
    two = checkpoint.model_inputs(np.stack([static, wrist], 1), torch.zeros(1, 4))
    assert two["pixel_values"].shape == (1, 3, 28, 28)


@pytest.mark.parametrize("damage", ["missing_shard", "index_disagrees", "pickle", "auto_map", "wrong_keys"])
def test_bad_folders_get_one_clear_error_naming_the_file(llava_world, tmp_path, damage):
    source = tmp_path / "src"
    shutil.copytree(llava_world["source"], source)
    index = json.loads((source / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    if damage == "missing_shard":
        (source / shard).unlink()
        named = shard
    elif damage == "index_disagrees":
        key = next(iter(index["weight_map"]))
        index["weight_map"][key + ".renamed"] = index["weight_map"].pop(key)
        (source / "model.safetensors.index.json").write_text(json.dumps(index))
        named = "safetensors"
    elif damage == "pickle":
        (source / "pytorch_model.bin").write_bytes(b"not opened")
        named = "pytorch_model.bin"
    elif damage == "auto_map":
        config = json.loads((source / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "modeling_evil.Evil"}
        (source / "config.json").write_text(json.dumps(config))
        (source / "modeling_evil.py").write_text("raise SystemExit('imported!')\n")
        named = "config.json"
    else:  # tensors renamed consistently in the index and in a shard's header: loads must refuse
        from safetensors.torch import load_file, save_file

        tensors = load_file(source / shard)
        renamed = {k.replace("language_model", "llm"): v for k, v in tensors.items()}
        save_file(renamed, source / shard, metadata={"format": "pt"})
        index["weight_map"] = {k.replace("language_model", "llm") if v == shard else k: v
                               for k, v in index["weight_map"].items()}
        (source / "model.safetensors.index.json").write_text(json.dumps(index))
        named = "wrong key names"
    with pytest.raises(CheckpointError) as info:
        import_llava(source, tmp_path / "models", "bad", stats_file=llava_world["stats"], joint_names=JOINT_NAMES,
                     proprio_names=JOINT_NAMES, chunk_len=CHUNK)
        load_checkpoint(tmp_path / "models", "bad")
    assert named in str(info.value)


def test_unknown_unnorm_key_is_refused(llava_world, tmp_path):
    stats = tmp_path / "dataset_statistics.json"
    entry = yaml.safe_load(llava_world["stats"].read_text())
    stats.write_text(json.dumps({"libero_10": entry, "calvin": entry}))
    with pytest.raises(CheckpointError, match="unknown --unnorm-key 'bridge'"):
        import_llava(llava_world["source"], tmp_path / "models", "x", stats_file=stats, joint_names=JOINT_NAMES,
                     proprio_names=JOINT_NAMES, unnorm_key="bridge")


def test_import_cli_and_info(llava_world, tmp_path, capsys):
    assert cli.main(["import", "llava", str(llava_world["source"]), "--name", "cli_llava", "--model-dir",
                     str(tmp_path), "--stats", str(llava_world["stats"]), "--joint-names", *JOINT_NAMES,
                     "--proprio-names", *JOINT_NAMES, "--chunk-len", str(CHUNK), "--dt", "0.1",
                     "--action-space", "joint_delta"]) == 0
    assert (tmp_path / "cli_llava" / "ceed_vla.yaml").is_file()
    assert cli.main(["info", str(tmp_path / "cli_llava")]) == 0
    assert "llava" in capsys.readouterr().out


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_collect_and_distill_run_on_llava_and_the_student_decodes(llava_world, lora):
    root, files = llava_world["root"], llava_world["files"]
    traj = root / "traj.h5"
    if not traj.is_file():
        assert cli.main(["collect-trajectories", "--teacher", "tiny_llava", "--model-dir", str(root / "models"),
                         "--data", *map(str, files), "--out", str(traj), "--batch-size", "8", "--threads", "1",
                         "--no-progress"]) == 0
    name = f"llava_student_{'lora' if lora else 'full'}"
    args = ["distill", "--teacher", "tiny_llava", "--model-dir", str(root / "models"), "--trajectories", str(traj),
            "--data", *map(str, files), "--out-name", name, "--run-dir", str(root / f"run_{name}"), "--steps", "2",
            "--batch-size", "4", "--val-samples", "2", "--eval-every", "0", "--save-every", "5", "--threads", "1",
            "--no-progress", "--lr", "1e-3", "--device", "cpu"]
    if lora:
        args += ["--lora-rank", "4", "--lora-save", "adapter"]
    assert cli.main(args) == 0
    student = load_checkpoint(root / "models", name)
    teacher = llava_world["checkpoint"]
    assert student.metadata.provenance.parent == teacher.metadata.checkpoint_id
    files_written = {p.name for p in student.path.iterdir()}
    if lora:
        assert files_written == {"ceed_vla.yaml", "adapter_config.json", "adapter_model.safetensors"}
    else:
        assert "model.safetensors.index.json" in files_written or "model.safetensors" in files_written
    moved = [not torch.equal(a, b) for a, b in zip(student.model.state_dict().values(),
                                                    teacher.model.state_dict().values())]
    assert any(moved)
    out = CeedVlaPolicy(student, seed=0).predict(np.zeros((32, 32, 3), np.uint8), np.zeros(4), INSTRUCTION)
    assert out.actions.shape == (CHUNK, 4) and np.isfinite(out.actions).all()
