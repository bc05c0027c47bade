"""Teacher training: the loss goes down, the CLI saves a loadable checkpoint, --resume continues."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from ceed_vla_ros.action_tokenizer import ActionTokenizer
from ceed_vla_ros.checkpoint import PICKLE_SUFFIXES, load_checkpoint
from ceed_vla_ros.decoding import DecodeSettings
from ceed_vla_ros.model import FROZEN_VISION_MODULES, build_tokenizer, encode_prompt, make_model_config, new_model
from ceed_vla_ros.policy import CeedVlaPolicy
from ceed_vla_ros.sim.env import TabletopArmEnv
from ceed_vla_ros.sim.expert import make_expert
from ceed_vla_ros.sim.recorder import DatasetWriter, record_episode
from ceed_vla_ros.tools import cli
from ceed_vla_ros.training import loop
from ceed_vla_ros.training import train_teacher as tt
from ceed_vla_ros.training.config import TeacherConfig
from ceed_vla_ros.training.dataset import build_teacher_data, tokenize_teacher_data

TINY = ["--hidden", "32", "--layers", "1", "--heads", "2", "--keypoints", "8", "--image-tokens", "2",
        "--vision-channels", "8", "8", "--vision-strides", "2", "2", "--batch-size", "8", "--threads", "1"]


@pytest.fixture(scope="module")
def episodes():
    recorded = []
    for task, seeds in (("reach", (0, 1, 2)), ("push", (5,))):
        with TabletopArmEnv(task=task) as env:
            expert = make_expert(env)
            recorded += [record_episode(env, expert, seed=s) for s in seeds]
    return recorded


@pytest.fixture(scope="module")
def data_file(episodes, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "demo.h5"
    with DatasetWriter(path, {"task": "mixed"}) as writer:
        for episode in episodes:
            writer.add_episode(episode)
    return path


def test_training_steps_lower_the_loss(episodes):
    torch.manual_seed(0)
    parser = __import__("argparse").ArgumentParser()
    tt.add_cli_arguments(parser)
    config = TeacherConfig.from_args(parser.parse_args(["--data", "x.h5", *TINY]), model_dir="models", command="test")
    data = build_teacher_data(episodes, chunk_len=4)
    metadata = tt.build_metadata(config, data)
    tokenizer = build_tokenizer(tt.all_instructions(), 256, metadata.prompt_template)
    config = make_model_config(tokenizer, metadata, hidden_size=32, num_layers=1, num_heads=2, num_keypoints=8,
                               num_image_tokens=2, vision_channels=(8, 8), vision_strides=(2, 2))
    model = new_model(config, 0).train()
    metadata = dataclasses.replace(metadata, vocab_size=config.text_config.vocab_size)
    actions = ActionTokenizer(metadata.vocab_size, 256, metadata.action_norm, 4)
    prompts = [encode_prompt(tokenizer, metadata, config, text) for text in data.instructions]
    tensors = tokenize_teacher_data(data, prompts, actions, metadata.proprio_norm, tokenizer.pad_token_id)
    module = tt.TeacherTrainingModule(model, actions.first_token_id, 256)
    batch = tt.make_batch(
        tensors, torch.arange(0, len(tensors), 3), metadata.image, 0, torch.Generator(), torch.device("cpu")
    )
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)

    def total() -> torch.Tensor:
        losses = module(**batch)
        return losses["ce"] + losses["aux"] + losses["target_aux"]

    before = total()
    assert torch.isfinite(before)
    for _ in range(3):
        optimizer.zero_grad()
        loss = total()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = total()
    assert after < before - 0.05, (float(before), float(after))


def test_cli_trains_saves_loadable_checkpoint_and_resumes(data_file, tmp_path):
    model_dir, run_dir = tmp_path / "models", tmp_path / "runs" / "t"
    common = [
        "train",
        "--data",
        str(data_file),
        "--model-dir",
        str(model_dir),
        "--run-dir",
        str(run_dir),
        "--name",
        "tiny_teacher",
        "--save-every",
        "2",
        "--log-every",
        "1",
        "--val-episodes",
        "1",
        "--no-progress",
        "--seed",
        "3",
        *TINY,
    ]
    assert cli.main([*common, "--steps", "3"]) == 0
    assert json.loads((run_dir / "trainer_state.json").read_text())["step"] == 3
    checkpoint = load_checkpoint(model_dir, "tiny_teacher")
    meta = checkpoint.metadata
    assert meta.action_space == "joint_delta" and meta.chunk_len == 4 and meta.dt == pytest.approx(0.1)
    assert meta.provenance.role == "teacher" and meta.provenance.seeds["train"] == 3
    assert meta.provenance.command == "ceed-vla " + shlex.join([*common, "--steps", "3"])  # as cli.main got it
    assert str(data_file) in meta.provenance.data and "3 steps" in meta.provenance.notes
    assert meta.proprio_names and meta.proprio_norm is not None
    assert not [p for p in (model_dir / "tiny_teacher").rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
    # The shipped checkpoint holds the VLA only (no auxiliary heads).
    assert not any("head" in name and "lm_head" not in name for name in checkpoint.model.state_dict())
    with TabletopArmEnv(task="reach") as env:
        obs = env.reset(seed=0)
    for mode in ("ar", "jacobi"):
        out = CeedVlaPolicy(checkpoint, DecodeSettings(mode)).predict(
            obs["image"], obs["joint_positions"], obs["instruction"]
        )
        assert out.actions.shape == (4, 4) and np.isfinite(out.actions).all()
        assert out.tokens.numel() == 16
    # Resume: continues from step 3 to 5 and appends to the log.
    assert cli.main([*common, "--steps", "5", "--resume"]) == 0
    assert json.loads((run_dir / "trainer_state.json").read_text())["step"] == 5
    saved_config = TeacherConfig.load(run_dir)
    assert saved_config.steps == 5 and saved_config.resume and saved_config.seed == 3
    assert saved_config.model_dir == model_dir and saved_config.data == (data_file,)
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert "5 steps" in load_checkpoint(model_dir, "tiny_teacher").metadata.provenance.notes


def test_run_dir_inside_model_dir_is_refused(data_file, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(
            [
                "train",
                "--data",
                str(data_file),
                "--model-dir",
                str(tmp_path),
                "--run-dir",
                str(tmp_path / "run"),
                "--steps",
                "1",
                "--no-progress",
                *TINY,
            ]
        )


def test_batch_indices_are_a_seeded_permutation():
    seen = np.concatenate([loop.batch_indices(10, 3, 0, s) for s in range(3)])
    assert sorted(seen.tolist()) == sorted(set(seen.tolist())) and len(seen) == 9
    np.testing.assert_array_equal(loop.batch_indices(10, 3, 0, 4), loop.batch_indices(10, 3, 0, 4))
    assert not np.array_equal(loop.batch_indices(100, 10, 0, 0), loop.batch_indices(100, 10, 1, 0))
    assert not np.array_equal(loop.batch_indices(100, 10, 0, 0), loop.batch_indices(100, 10, 0, 0, stream=(11,)))


def test_lr_schedule_warms_up_and_decays_by_steps_or_time():
    assert loop.lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert loop.lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert loop.lr_factor(100, 10, 100) == pytest.approx(0.05)
    assert loop.lr_factor(100, 10, 100, min_ratio=0.1) == pytest.approx(0.1)
    # Half the time limit used at a fraction of the steps: the decay follows the time.
    assert loop.lr_factor(20, 10, 100, elapsed_s=50.0, time_limit_s=100.0) == pytest.approx(0.05 + 0.95 * 0.5)
    assert loop.lr_factor(20, 10, 100, elapsed_s=100.0, time_limit_s=100.0) == pytest.approx(0.05)


def test_config_is_validated_once_and_round_trips_through_yaml(tmp_path):
    config = TeacherConfig(
        data=["a.h5", Path("b.h5")],
        model_dir=tmp_path / "models",
        vision_channels=[8, 8],
        vision_strides=[2, 2],
        steps=7,
    )
    assert config.data == (Path("a.h5"), Path("b.h5")) and config.vision_channels == (8, 8)
    assert TeacherConfig.load(config.save(tmp_path)) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 3
    for bad, match in (
        (dict(batch_size=0), "--batch-size"),
        (dict(lr=0.0), "--lr"),
        (dict(vision_strides=(2,)), "--vision-strides"),
        (dict(freeze_vision=True), "need --init-checkpoint"),
        (dict(data=()), "--data"),
    ):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(config, **bad)


def test_init_norm_keeps_the_init_checkpoints_statistics(data_file, tmp_path):
    common = [
        "train",
        "--data",
        str(data_file),
        "--model-dir",
        str(tmp_path / "models"),
        "--steps",
        "1",
        "--val-episodes",
        "1",
        "--no-progress",
        "--save-every",
        "1",
        *TINY,
    ]
    assert cli.main([*common, "--run-dir", str(tmp_path / "runs" / "a"), "--name", "a", "--max-episodes", "1"]) == 0
    init = load_checkpoint(tmp_path / "models", "a").metadata
    for flag, name in (([], "b"), (["--init-norm"], "c")):
        assert (
            cli.main(
                [
                    *common,
                    "--run-dir",
                    str(tmp_path / "runs" / name),
                    "--name",
                    name,
                    "--init-checkpoint",
                    str(tmp_path / "models" / "a"),
                    *flag,
                ]
            )
            == 0
        )
    recomputed, kept = (load_checkpoint(tmp_path / "models", n).metadata for n in ("b", "c"))
    assert kept.action_norm == init.action_norm and kept.proprio_norm == init.proprio_norm
    assert recomputed.action_norm != init.action_norm  # 1 episode vs all 4 (the data file's 3 + val 1)
    with pytest.raises(SystemExit):
        cli.main([*common, "--run-dir", str(tmp_path / "runs" / "d"), "--name", "d", "--init-norm"])


def test_sample_pool_oversamples_the_first_steps_of_each_episode():
    episodes = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(tt.sample_pool(episodes), np.arange(9))
    pool = tt.sample_pool(episodes, first_steps=2, factor=3)
    counts = np.bincount(pool, minlength=9)
    np.testing.assert_array_equal(counts, [3, 3, 1, 3, 3, 3, 3, 1, 1])


def test_freeze_vision_trains_everything_but_the_cnn_on_cached_features(data_file, tmp_path):
    common = [
        "train",
        "--data",
        str(data_file),
        "--model-dir",
        str(tmp_path / "models"),
        "--val-episodes",
        "1",
        "--no-progress",
        "--save-every",
        "10",
        "--lr",
        "1e-2",
        *TINY,
    ]
    assert cli.main([*common, "--run-dir", str(tmp_path / "runs" / "a"), "--name", "a", "--steps", "1"]) == 0
    assert (
        cli.main(
            [
                *common,
                "--run-dir",
                str(tmp_path / "runs" / "b"),
                "--name",
                "b",
                "--steps",
                "3",
                "--init-checkpoint",
                str(tmp_path / "models" / "a"),
                "--freeze-vision",
            ]
        )
        == 0
    )
    before, after = (load_checkpoint(tmp_path / "models", n) for n in ("a", "b"))
    old, new = before.model.state_dict(), after.model.state_dict()
    frozen = [
        k
        for k in old
        if k.startswith(tuple(f"vision_encoder.{m}." for m in FROZEN_VISION_MODULES))
        or k == "vision_encoder.spatial_softmax.log_temperature"
    ]
    assert frozen and all(torch.equal(old[k], new[k]) for k in frozen)
    for trained in (
        "vision_encoder.projector.0.weight",
        "proprio_projector.weight",
        "language_model.model.layers.0.mlp.up_proj.weight",
    ):
        assert not torch.equal(old[trained], new[trained]), trained
    assert "--freeze-vision" in after.metadata.provenance.notes
    assert "shift unused (CNN frozen)" in after.metadata.provenance.notes
    with pytest.raises(SystemExit):
        cli.main([*common, "--run-dir", str(tmp_path / "runs" / "c"), "--name", "c", "--steps", "1", "--freeze-vision"])


def test_widening_the_projector_for_prompt_conditioning_keeps_the_function(episodes):
    data = build_teacher_data(episodes, chunk_len=4)
    parser = __import__("argparse").ArgumentParser()
    tt.add_cli_arguments(parser)
    metadata = tt.build_metadata(
        TeacherConfig.from_args(parser.parse_args(["--data", "x.h5", *TINY]), model_dir="m"), data
    )
    tokenizer = build_tokenizer(tt.all_instructions(), 256, metadata.prompt_template)
    sizes = dict(
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        num_keypoints=8,
        num_image_tokens=2,
        vision_channels=(8, 8),
        vision_strides=(2, 2),
    )
    plain = new_model(make_model_config(tokenizer, metadata, **sizes), 0).eval()
    wide = new_model(make_model_config(tokenizer, metadata, vision_prompt_conditioning=True, **sizes), 1).eval()
    wide.load_state_dict(tt.widen_projector_input(plain.state_dict(), wide), strict=True)
    config = plain.config
    ids = torch.tensor([encode_prompt(tokenizer, metadata, config, "reach the red cube")])
    inputs = dict(input_ids=ids, pixel_values=torch.rand(1, 3, 64, 64), proprio=torch.rand(1, 4))
    with torch.no_grad():
        torch.testing.assert_close(wide(**inputs).logits, plain(**inputs).logits)
