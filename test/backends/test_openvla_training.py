"""collect-trajectories and distill on a tiny OpenVLA-layout teacher (sim demonstrations), through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ceed_vla_ros.backends.openvla import build_tiny_openvla_folder
from ceed_vla_ros.checkpoint import load_checkpoint
from ceed_vla_ros.decoding import DecodeSettings
from ceed_vla_ros.policy import CeedVlaPolicy
from ceed_vla_ros.sim.mjcf import JOINT_NAMES
from ceed_vla_ros.sim.recorder import record_dataset
from ceed_vla_ros.tools import cli
from ceed_vla_ros.training import trajectories as T
from ceed_vla_ros.training.dataset import load_teacher_data
from ceed_vla_ros.training.train_teacher import all_instructions

TOWERS = ({"embed_dim": 16, "depth": 2, "num_heads": 2}, {"embed_dim": 16, "depth": 2, "num_heads": 2})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("openvla_distill")
    data_file = root / "reach.h5"
    record_dataset("reach", 1, data_file, seed=0, image_size=32, horizon=6, progress=False)
    stats = load_teacher_data([data_file], 2).action_stats()
    norm_stats = {"sim_reach": {"action": stats.to_dict()}}
    source = build_tiny_openvla_folder(root / "tiny-openvla", seed=0, norm_stats=norm_stats,
                                       instructions=all_instructions(), hidden_size=32, num_layers=1, num_heads=2,
                                       towers=TOWERS, image_size=56)
    models = root / "models"
    assert cli.main(["import", "openvla", str(source), "--name", "ovla_teacher", "--model-dir", str(models),
                     "--action-space", "joint_delta", "--dt", "0.1", "--chunk-len", "2",
                     "--joint-names", *JOINT_NAMES]) == 0
    return {"root": root, "data": data_file, "models": models}


def test_collect_and_distill_run_on_the_openvla_backend_and_the_student_decodes(world, capsys):
    root, models = world["root"], world["models"]
    trajectories = root / "traj.h5"
    assert cli.main(["collect-trajectories", "--teacher", "ovla_teacher", "--model-dir", str(models), "--data",
                     str(world["data"]), "--out", str(trajectories), "--batch-size", "3", "--threads", "1",
                     "--no-progress"]) == 0
    collected = T.read_trajectories(trajectories)
    teacher = load_checkpoint(models, "ovla_teacher")
    assert len(collected) == 6 and collected.converged.all()
    # the batched (left-padded) collection equals batch-1 decoding of the same sample
    samples = T.load_samples([world["data"]], teacher)
    from ceed_vla_ros.decoding import TokenRange, decode

    inputs = samples.model_batch(torch.tensor([0]))
    single = decode(teacher.block_lm(), samples.prompt(0), {"pixel_values": inputs["pixel_values"]}, mode="jacobi",
                    block_len=8, allowed=TokenRange(*teacher.action_tokenizer.token_range),
                    initial_block=torch.from_numpy(collected.trajectory(0)[0]), record_trajectory=True)
    assert collected.trajectory(0).tolist() == [s.tolist() for s in single.trajectory]

    assert cli.main(["distill", "--teacher", "ovla_teacher", "--model-dir", str(models), "--trajectories",
                     str(trajectories), "--data", str(world["data"]), "--out-name", "ovla_student", "--run-dir",
                     str(root / "run"), "--batch-size", "2", "--val-samples", "2", "--eval-every", "0", "--steps",
                     "2", "--save-every", "2", "--threads", "1", "--no-progress", "--lr", "1e-3"]) == 0
    assert "validation" in capsys.readouterr().out
    student = load_checkpoint(models, "ovla_student")
    assert student.metadata.backend == "openvla" and student.metadata.source_dir is None
    assert student.metadata.provenance.parent == teacher.metadata.checkpoint_id
    changed = [not torch.equal(a, b) for a, b in zip(student.model.parameters(), teacher.model.parameters())]
    assert any(changed)
    image = np.zeros((32, 32, 3), np.uint8)
    ar = CeedVlaPolicy(student, DecodeSettings("ar")).predict(image, None, "reach the red cube")
    jacobi = CeedVlaPolicy(student, DecodeSettings("jacobi")).predict(image, None, "reach the red cube")
    assert ar.tokens.tolist() == jacobi.tokens.tolist() and ar.actions.shape == (2, 4)
