"""LoRA distillation (peft, adapter-only student) on a tiny OpenVLA-layout teacher: the student loads
on top of the imported teacher folder and decodes (Jacobi == AR)."""

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
from ceed_vla_ros.training.dataset import load_teacher_data
from ceed_vla_ros.training.train_teacher import all_instructions

TOWERS = ({"embed_dim": 16, "depth": 2, "num_heads": 2}, {"embed_dim": 16, "depth": 2, "num_heads": 2})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("openvla_lora")
    data_file = root / "reach.h5"
    record_dataset("reach", 1, data_file, seed=1, image_size=32, horizon=6, progress=False)
    stats = load_teacher_data([data_file], 2).action_stats()
    source = build_tiny_openvla_folder(root / "tiny-openvla", seed=1, norm_stats={"sim": {"action": stats.to_dict()}},
                                       instructions=all_instructions(), hidden_size=32, num_layers=1, num_heads=2,
                                       towers=TOWERS, image_size=56)
    models = root / "models"
    assert cli.main(["import", "openvla", str(source), "--name", "ovla_teacher", "--model-dir", str(models),
                     "--action-space", "joint_delta", "--dt", "0.1", "--chunk-len", "2",
                     "--joint-names", *JOINT_NAMES]) == 0
    return {"root": root, "data": data_file, "models": models}


def test_lora_adapter_student_of_an_openvla_teacher_loads_and_decodes(world, capsys):
    root, models = world["root"], world["models"]
    trajectories = root / "traj.h5"
    assert cli.main(["collect-trajectories", "--teacher", "ovla_teacher", "--model-dir", str(models), "--data",
                     str(world["data"]), "--out", str(trajectories), "--batch-size", "3", "--threads", "1",
                     "--no-progress"]) == 0
    assert cli.main(["distill", "--teacher", "ovla_teacher", "--model-dir", str(models), "--trajectories",
                     str(trajectories), "--data", str(world["data"]), "--out-name", "ovla_lora", "--run-dir",
                     str(root / "run"), "--batch-size", "2", "--val-samples", "2", "--eval-every", "0", "--steps",
                     "2", "--save-every", "2", "--threads", "1", "--no-progress", "--lr", "5e-3",
                     "--lora-rank", "4", "--lora-save", "adapter"]) == 0
    assert "LoRA rank 4" in capsys.readouterr().out
    teacher = load_checkpoint(models, "ovla_teacher")
    student = load_checkpoint(models, "ovla_lora")
    assert {p.name for p in student.path.iterdir()} == {"ceed_vla.yaml", "adapter_config.json",
                                                        "adapter_model.safetensors"}
    assert student.metadata.backend == "openvla"
    assert student.metadata.provenance.parent == teacher.metadata.checkpoint_id
    changed = [n for (n, a), b in zip(student.model.state_dict().items(), teacher.model.state_dict().values())
               if not torch.equal(a, b)]
    assert changed and all("language_model" in n for n in changed)
    image = np.zeros((32, 32, 3), np.uint8)
    ar = CeedVlaPolicy(student, DecodeSettings("ar")).predict(image, None, "reach the red cube")
    jacobi = CeedVlaPolicy(student, DecodeSettings("jacobi")).predict(image, None, "reach the red cube")
    assert ar.tokens.tolist() == jacobi.tokens.tolist() and ar.actions.shape == (2, 4)
