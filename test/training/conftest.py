"""A tiny distillation world shared by the trajectory and student tests: two reach episodes and one
push episode (different prompt lengths), a tiny random teacher, its samples and Jacobi trajectories."""

from __future__ import annotations

import json

import pytest
import torch

from ceed_vla_ros.checkpoint import build_tiny_checkpoint, load_checkpoint
from ceed_vla_ros.metadata import CheckpointMetadata, ImageSpec
from ceed_vla_ros.sim.mjcf import JOINT_NAMES
from ceed_vla_ros.sim.recorder import record_dataset
from ceed_vla_ros.training import trajectories as T
from ceed_vla_ros.training.dataset import load_teacher_data
from ceed_vla_ros.training.train_teacher import all_instructions

IMAGE = 32
CHUNK = 2  # block of 8 tokens


@pytest.fixture(scope="session")
def distill_world(tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("distill")
    files = [root / "reach.h5", root / "push.h5"]
    record_dataset("reach", 2, files[0], seed=0, image_size=IMAGE, horizon=10, progress=False)
    record_dataset("push", 1, files[1], seed=3, image_size=IMAGE, horizon=10, progress=False)
    data = load_teacher_data(files, CHUNK)
    metadata = CheckpointMetadata(
        name="tiny_teacher", action_space="joint_delta", joint_names=list(JOINT_NAMES), action_dims=4,
        chunk_len=CHUNK, dt=0.1, action_norm=data.action_stats(), proprio_names=list(JOINT_NAMES),
        proprio_norm=data.proprio_stats(), image=ImageSpec(height=IMAGE, width=IMAGE),
    )
    build_tiny_checkpoint(
        root / "models" / "tiny_teacher", metadata, seed=0, instructions=all_instructions(), hidden_size=32,
        num_layers=2, num_heads=4, num_image_tokens=2, num_keypoints=4, vision_channels=(8,), vision_strides=(2,),
        vision_mlp_hidden=16,
    )
    teacher = load_checkpoint(root / "models", "tiny_teacher")
    samples = T.load_samples(files, teacher)
    trajectories = T.collect(teacher, samples, batch_size=8, seed=0, progress=False)
    trajectories.attrs |= {"data_files": json.dumps([str(p) for p in files]), "data_episodes": json.dumps([2, 1])}
    path = root / "traj.h5"
    T.write_trajectories(path, trajectories)
    return {"root": root, "files": files, "teacher": teacher, "samples": samples, "trajectories": trajectories,
            "path": path}
