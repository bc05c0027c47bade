"""Consistency distillation: loss terms, one step, mixed labels, the CLI, the saved student."""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from ceed_vla_ros.checkpoint import load_checkpoint
from ceed_vla_ros.decoding import DecodeSettings, TokenRange
from ceed_vla_ros.policy import CeedVlaPolicy
from ceed_vla_ros.tools import cli
from ceed_vla_ros.training import train_student as S
from ceed_vla_ros.training import trajectories as T
from ceed_vla_ros.training.config import DistillConfig
from ceed_vla_ros.training.losses import block_prediction_logits

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture
def world(distill_world) -> dict:
    return distill_world


def fresh_student(world):
    return copy.deepcopy(world["teacher"].model).train()


def allowed(world) -> TokenRange:
    return TokenRange(*world["teacher"].action_tokenizer.token_range)


def first_states(trajectories, rows):
    return trajectories.states[trajectories.state_offset[rows]].astype(np.int64)


def test_one_distillation_step_lowers_the_loss_on_the_batch(world):
    samples, trajectories = world["samples"], world["trajectories"]
    rows = np.arange(0, len(samples), 3)
    states = S.draw_states(trajectories, rows, np.random.default_rng(0))
    batch = S.make_batch(samples, trajectories, rows, states)
    torch.manual_seed(0)
    student = fresh_student(world)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.0)
    before, _ = S.distill_step(student, optimizer, batch, allowed(world))
    with torch.no_grad():
        after, _ = S.distill_loss(student, batch, allowed(world))
    assert before.consistency > 0 and before.ar > 0
    assert after.total.item() < before.total.item() - 1e-3
    assert before.total.item() == pytest.approx(before.consistency + before.ar, rel=1e-5)


def test_frozen_vision_step_keeps_the_cnn_and_gives_the_same_loss(world):
    samples, trajectories = world["samples"], world["trajectories"]
    rows = np.arange(0, len(samples), 3)
    states = S.draw_states(trajectories, rows, np.random.default_rng(0))
    batch = S.make_batch(samples, trajectories, rows, states)
    student = fresh_student(world)
    with torch.no_grad():
        plain, _ = S.distill_loss(student, batch, allowed(world))
        frozen, _ = S.distill_loss(student, batch, allowed(world), frozen_vision=True)
    assert frozen.total.item() == pytest.approx(plain.total.item(), rel=1e-5)
    student.freeze_vision()
    cnn = copy.deepcopy(student.vision_encoder.cnn.state_dict())
    decoder = copy.deepcopy(student.language_model.state_dict())
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    S.distill_step(student, optimizer, batch, allowed(world), frozen_vision=True)
    assert all(torch.equal(v, student.vision_encoder.cnn.state_dict()[k]) for k, v in cnn.items())
    assert any(not torch.equal(v, student.language_model.state_dict()[k]) for k, v in decoder.items())

def test_draw_states_picks_intermediate_states_only():
    trajectories = T.TrajectorySet(
        attrs={}, file_index=np.zeros(2), episode=np.zeros(2), step=np.zeros(2), state_offset=np.array([0, 3]),
        num_states=np.array([3, 1]), converged=np.ones(2, bool), fixed_point=np.zeros((2, 1)),
        ground_truth=np.zeros((2, 1)), teacher_actions=np.zeros((2, 1, 1)), ground_truth_actions=np.zeros((2, 1, 1)),
        l1=np.zeros(2), states=np.array([[10], [11], [12], [20]]),
    )
    drawn = {int(S.draw_states(trajectories, np.array([0]), np.random.default_rng(seed))[0, 0]) for seed in range(40)}
    assert drawn == {10, 11}  # Y^0 or Y^1, never the fixed point Y* = 12
    assert S.draw_states(trajectories, np.array([1]), np.random.default_rng(0))[0, 0] == 20  # J = {Y*}


def test_consistency_term_is_zero_at_the_fixed_point_and_positive_elsewhere(world):
    samples, trajectories = world["samples"], world["trajectories"]
    rows = np.arange(len(samples))
    student = fresh_student(world)
    at_fixed_point = S.make_batch(samples, trajectories, rows, trajectories.fixed_point[rows])
    with torch.no_grad():
        zero, _ = S.distill_loss(student, at_fixed_point, allowed(world))
        elsewhere, _ = S.distill_loss(
            student, S.make_batch(samples, trajectories, rows, first_states(trajectories, rows)), allowed(world)
        )
    assert zero.consistency == pytest.approx(0.0, abs=1e-6)
    assert elsewhere.consistency > 1e-3
    assert zero.ar == pytest.approx(elsewhere.ar, rel=1e-5)  # the AR term only sees [prompt + Y*]


def _gt_log_prob(model, batch, allowed_range, row=0) -> float:
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            **batch.inputs,
        ).logits
    size = batch.fixed_point.shape[0]
    block = block_prediction_logits(logits, batch.prompt_len, batch.block_len)[
        size:, :, allowed_range.start : allowed_range.stop
    ]
    labels = batch.ground_truth - allowed_range.start
    return float(block.log_softmax(-1).gather(-1, labels[..., None])[row].mean())


def test_mixed_labels_train_far_off_samples_toward_the_ground_truth(world):
    samples, trajectories = world["samples"], world["trajectories"]
    action_range = allowed(world)
    n_bins = action_range.stop - action_range.start
    rows = np.array([0, 1])
    edited = dataclasses.replace(
        trajectories,
        ground_truth=trajectories.ground_truth.copy(),
        ground_truth_actions=trajectories.ground_truth_actions.copy(),
    )
    # sample 0: ground truth = the mirrored bins of the teacher's fixed point (far); sample 1: = the fixed point
    teacher_bins = action_range.stop - 1 - trajectories.fixed_point[rows].astype(np.int64)
    far_bins = n_bins - 1 - teacher_bins[0]
    edited.ground_truth[0] = action_range.stop - 1 - far_bins
    edited.ground_truth_actions[0] = (-1.0 + (far_bins + 0.5) * 2.0 / n_bins).reshape(
        edited.ground_truth_actions[0].shape
    )
    edited.ground_truth[1] = trajectories.fixed_point[1]
    edited.ground_truth_actions[1] = trajectories.teacher_actions[1]
    assert np.abs(edited.ground_truth_actions[0] - trajectories.teacher_actions[0]).mean() > 0.1
    batch = S.make_batch(samples, edited, rows, first_states(edited, rows))
    before = _gt_log_prob(world["teacher"].model, batch, action_range)
    results = {}
    for threshold in (S.DEFAULT_L1_THRESHOLD, 1e9):
        torch.manual_seed(0)
        student = fresh_student(world)
        optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3, weight_decay=0.0)
        for _ in range(8):
            _, uses_truth = S.distill_step(student, optimizer, batch, action_range, l1_threshold=threshold)
        results[threshold] = (_gt_log_prob(student, batch, action_range), uses_truth.tolist())
    mixed_log_prob, mixed_flags = results[S.DEFAULT_L1_THRESHOLD]
    teacher_log_prob, teacher_flags = results[1e9]
    assert mixed_flags == [True, False] and teacher_flags == [False, False]
    assert mixed_log_prob > before + 1.0
    assert mixed_log_prob > teacher_log_prob + 1.0


def test_distill_cli_saves_a_loadable_student_with_provenance_and_resumes(world, capsys):
    root = world["root"]
    common = [
        "distill",
        "--teacher",
        "tiny_teacher",
        "--model-dir",
        str(root / "models"),
        "--trajectories",
        str(world["path"]),
        "--data",
        *map(str, world["files"]),
        "--out-name",
        "tiny_student",
        "--run-dir",
        str(root / "run"),
        "--batch-size",
        "4",
        "--val-samples",
        "4",
        "--eval-every",
        "0",
        "--save-every",
        "2",
        "--log-every",
        "1",
        "--threads",
        "1",
        "--no-progress",
        "--lr",
        "1e-3",
    ]
    assert cli.main([*common, "--steps", "2"]) == 0
    assert cli.main([*common, "--steps", "3", "--resume"]) == 0
    output = capsys.readouterr().out
    assert "resumed at step 2" in output
    config = DistillConfig.load(root / "run")
    assert config.steps == 3 and config.resume and config.teacher == "tiny_teacher" and config.batch_size == 4
    steps = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "consistency" in r] == [1, 2, 3]
    assert all({"consistency", "ar", "total", "gt_labels"} <= set(r) for r in steps if "lr" in r)
    assert any("val_l1_k1" in r for r in steps)

    student = load_checkpoint(root / "models", "tiny_student")
    teacher = world["teacher"]
    provenance = student.metadata.provenance
    assert provenance.role == "student"
    assert provenance.parent == teacher.metadata.checkpoint_id
    assert provenance.seeds["distill"] == 0 and "3 steps" in provenance.notes
    assert student.metadata.checkpoint_id != teacher.metadata.checkpoint_id
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in student.path.rglob("*"))
    # weights moved away from the teacher's
    moved = [not torch.equal(a, b) for a, b in zip(student.model.parameters(), teacher.model.parameters())]
    assert any(moved)
    sample = world["samples"]
    image = sample.tensors.images[0].numpy()
    joints = teacher.metadata.proprio_norm.unnormalize(sample.tensors.proprio[0].numpy().astype(np.float64))
    instruction = "reach the red cube"
    for mode, k in (("jacobi", None), ("early_exit", 2), ("ar", None)):
        output = CeedVlaPolicy(student, DecodeSettings(mode, k)).predict(image, joints, instruction)
        assert output.actions.shape == (student.metadata.chunk_len, 4) and np.isfinite(output.actions).all()
    assert output.stats.forward_passes == student.metadata.block_len


def test_distill_refuses_trajectories_of_another_teacher(world, tmp_path):
    other = T.read_trajectories(world["path"])
    other.attrs["teacher_checkpoint_id"] = "someone-else-00000000"
    path = tmp_path / "other.h5"
    T.write_trajectories(path, other)
    with pytest.raises(SystemExit, match="someone-else"):
        cli.main(
            [
                "distill",
                "--teacher",
                "tiny_teacher",
                "--model-dir",
                str(world["root"] / "models"),
                "--trajectories",
                str(path),
                "--data",
                *map(str, world["files"]),
                "--run-dir",
                str(tmp_path / "run"),
                "--no-progress",
            ]
        )
