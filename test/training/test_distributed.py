"""Training on several processes for real: 2 CPU processes (torchrun, gloo) against 1 process.

Each command is launched as ``torchrun --standalone --nproc_per_node 2 -m ceed_vla_ros.tools.cli ...``
on the tiny distillation world and compared with the same command run here in one process with the
same global batch: the per-step losses and the learning rate in the logs, and the weights (after a
``--resume`` with ONE process of the 2-process run, so resuming with another process count is
checked too); collect-trajectories' merged shards must equal the 1-process file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ceed_vla_ros.checkpoint import load_checkpoint
from ceed_vla_ros.tools import cli
from ceed_vla_ros.training import loop
from ceed_vla_ros.training import trajectories as T

TINY_TEACHER = ["--hidden", "32", "--layers", "1", "--heads", "2", "--keypoints", "4", "--image-tokens", "2",
                "--vision-channels", "8", "--vision-strides", "2", "--batch-size", "8", "--threads", "1",
                "--val-episodes", "0", "--log-every", "1", "--no-progress", "--seed", "3", "--shift", "1",
                "--proprio-noise", "0.05", "--lr", "1e-2", "--warmup", "1"]
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 5e-4  # Adam turns float-level gradient differences into larger weight ones


def torchrun(args: list[str], processes: int = 2, timeout_s: float = 300.0) -> str:
    """Run ``ceed-vla <args>`` on ``processes`` CPU processes; return the combined output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "ceed_vla_ros.tools.cli", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def max_weight_difference(a, b) -> float:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


@pytest.fixture(scope="module")
def world(distill_world) -> dict:
    return distill_world


def test_process_slices_split_every_global_batch_evenly():
    slices = [loop.process_slice(12, 3, rank) for rank in range(3)]
    assert [list(range(12))[s] for s in slices] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(SystemExit, match="multiple of the 5 processes"):
        loop.process_slice(12, 5, 0)


def test_fsdp_on_cpu_is_refused_with_the_reason(world, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(SystemExit, match="FSDP needs CUDA"):
        cli.main(["train", "--data", *map(str, world["files"]), "--model-dir", str(tmp_path / "models"),
                  "--run-dir", str(tmp_path / "run"), "--steps", "1", *TINY_TEACHER])


def test_teacher_training_on_2_processes_equals_1_process_and_resumes_on_1(world, tmp_path):
    models = tmp_path / "models"
    common = ["train", "--data", *map(str, world["files"]), "--model-dir", str(models), "--save-every", "100",
              *TINY_TEACHER]
    assert cli.main([*common, "--run-dir", str(tmp_path / "one"), "--name", "one", "--steps", "3"]) == 0
    output = torchrun([*common, "--run-dir", str(tmp_path / "two"), "--name", "two", "--steps", "2"])
    assert "2 processes (MULTI_CPU, gloo); each trains on 1/2 of every global batch" in output
    # only rank 0 wrote: one config, one log line per step, one trainer state, one checkpoint
    two = tmp_path / "two"
    assert [r["step"] for r in log_records(two)] == [1, 2]
    assert json.loads((two / "trainer_state.json").read_text()) | {"train_seconds": 0} == {
        "step": 2, "processes": 2, "train_seconds": 0}
    assert sorted(p.name for p in two.iterdir()) == ["checkpoints", "config.yaml", "log.jsonl", "state",
                                                      "trainer_state.json"]
    # accelerate's state: one model/optimizer, one RNG file per process
    assert sorted(p.name for p in (two / "state").glob("random_states_*")) == ["random_states_0.pkl",
                                                                               "random_states_1.pkl"]
    one_log, two_log = log_records(tmp_path / "one"), log_records(two)
    for a, b in zip(one_log[:2], two_log):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
        for key in ("ce", "aux", "target_aux"):
            assert a[key] == pytest.approx(b[key], abs=LOSS_TOLERANCE), (key, a, b)
    after_two_steps = load_checkpoint(two / "checkpoints", "two")
    # resume the 2-process run with ONE process for the 3rd step: the 1-process run's weights
    assert cli.main([*common, "--run-dir", str(two), "--name", "two", "--steps", "3", "--resume"]) == 0
    assert [r["step"] for r in log_records(two)] == [1, 2, 3]
    a, b = load_checkpoint(models, "one"), load_checkpoint(models, "two")
    assert log_records(two)[2]["ce"] == pytest.approx(one_log[2]["ce"], abs=LOSS_TOLERANCE)
    assert max_weight_difference(a, after_two_steps) > 5 * WEIGHT_TOLERANCE  # the last step moved the weights
    difference = max_weight_difference(a, b)
    print(f"teacher: largest weight difference 1 process vs 2 processes + resume on 1: {difference:.2e}")
    assert difference < WEIGHT_TOLERANCE


def test_distillation_on_2_processes_equals_1_process_and_resumes_on_1(world, tmp_path):
    root = world["root"]
    models = root / "models"
    common = ["distill", "--teacher", "tiny_teacher", "--model-dir", str(models), "--trajectories", str(world["path"]),
              "--data", *map(str, world["files"]), "--batch-size", "4", "--val-samples", "4", "--eval-every", "0",
              "--save-every", "100", "--log-every", "1", "--threads", "1", "--no-progress", "--lr", "1e-2",
              "--warmup", "2"]
    assert cli.main([*common, "--run-dir", str(tmp_path / "one"), "--out-name", "dist_one", "--steps", "3"]) == 0
    output = torchrun([*common, "--run-dir", str(tmp_path / "two"), "--out-name", "dist_two", "--steps", "2"])
    assert "each trains on 1/2 of every global batch" in output
    one_log = [r for r in log_records(tmp_path / "one") if "lr" in r]
    two_log = [r for r in log_records(tmp_path / "two") if "lr" in r]
    assert [r["step"] for r in two_log] == [1, 2]
    for a, b in zip(one_log, two_log):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)  # the schedule counts global steps, not process steps
        for key in ("consistency", "ar", "gt_labels"):
            assert a[key] == pytest.approx(b[key], abs=LOSS_TOLERANCE), (key, a, b)
    assert cli.main([*common, "--run-dir", str(tmp_path / "two"), "--out-name", "dist_two", "--steps", "3",
                     "--resume"]) == 0
    two_log = [r for r in log_records(tmp_path / "two") if "lr" in r]
    assert [r["step"] for r in two_log] == [1, 2, 3] and two_log[2]["lr"] == pytest.approx(one_log[2]["lr"], rel=1e-9)
    one, two = load_checkpoint(models, "dist_one"), load_checkpoint(models, "dist_two")
    assert max_weight_difference(one, world["teacher"]) > 5 * WEIGHT_TOLERANCE
    difference = max_weight_difference(one, two)
    print(f"student: largest weight difference 1 process vs 2 processes + resume on 1: {difference:.2e}")
    assert difference < WEIGHT_TOLERANCE


def test_collect_trajectories_on_2_processes_merges_the_shards_into_the_1_process_file(world, tmp_path):
    common = ["collect-trajectories", "--teacher", "tiny_teacher", "--model-dir", str(world["root"] / "models"),
              "--data", *map(str, world["files"]), "--batch-size", "4", "--threads", "1", "--no-progress",
              "--seed", "5"]
    assert cli.main([*common, "--out", str(tmp_path / "one.h5")]) == 0
    output = torchrun([*common, "--out", str(tmp_path / "two.h5")])
    assert "2 processes" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "two.h5"]  # no shard files left behind
    one, two = T.read_trajectories(tmp_path / "one.h5"), T.read_trajectories(tmp_path / "two.h5")
    assert len(one) == len(two) > 2 and two.attrs["processes"] == 2
    for name in (*T.TrajectorySet.SAMPLE_FIELDS, "states"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    assert {k: v for k, v in one.attrs.items() if k not in ("collection_seconds", "created", "command")} == {
        k: v for k, v in two.attrs.items() if k not in ("collection_seconds", "created", "command", "processes")
    }


def test_merging_shards_renumbers_the_state_offsets(world):
    trajectories = world["trajectories"]
    samples, teacher = world["samples"], world["teacher"]
    parts = [T.collect(teacher, samples, batch_size=3, seed=0, progress=False, rows=T.shard_rows(len(samples), 3, i))
             for i in range(3)]
    merged = T.merge_trajectories(parts)
    assert np.array_equal(merged.state_offset, trajectories.state_offset)
    assert np.array_equal(merged.states, trajectories.states)
    assert merged.attrs["num_samples"] == len(samples) and merged.attrs["processes"] == 3
    assert torch.is_tensor(samples.tensors.action_tokens)
