"""End-effector training data (the gripper arm): chunk-relative ee deltas + gripper, read back by the
driver's own IK to the recorded joint labels; metadata; partial initialisation from another robot's model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ceed_vla_ros.sim.chunk_targets import ChunkTargets
from ceed_vla_ros.sim.env import TabletopArmEnv
from ceed_vla_ros.sim.expert import make_expert
from ceed_vla_ros.sim.gripper_mjcf import ARM_JOINT_NAMES, FINGER_OPEN, JOINT_NAMES
from ceed_vla_ros.sim.recorder import DatasetReader, DatasetWriter, record_episode
from ceed_vla_ros.training.dataset import (
    build_teacher_data,
    chunk_relative_ee_actions,
    matrix_to_rpy,
    rpy_to_matrix,
)


@pytest.fixture(scope="module")
def pick_episodes(tmp_path_factory):
    path = tmp_path_factory.mktemp("pick") / "pick.h5"
    with TabletopArmEnv(task="pick", robot="gripper_arm") as env:
        expert = make_expert(env)
        episodes = [record_episode(env, expert, seed=s) for s in (0, 1)]
        episodes.append(record_episode(env, expert, seed=2, action_noise=0.05, noise_seed=1))
        with DatasetWriter(path, env.config()) as writer:
            for episode in episodes:
                writer.add_episode(episode)
    with DatasetReader(path) as reader:  # what training reads: through the file
        return list(reader)


def test_rpy_matches_pinocchio_both_ways():
    import pinocchio as pin

    rng = np.random.default_rng(0)
    rpy = rng.uniform([-3, -1.5, -3], [3, 1.5, 3], size=(50, 3))
    matrices = rpy_to_matrix(rpy)
    for angles, matrix in zip(rpy, matrices):
        np.testing.assert_allclose(matrix, pin.rpy.rpyToMatrix(angles), atol=1e-12)
    np.testing.assert_allclose(matrix_to_rpy(matrices), rpy, atol=1e-9)


def test_recorded_pick_episodes_carry_the_ee_arrays(pick_episodes):
    for episode in pick_episodes:
        assert episode.joint_names == JOINT_NAMES and episode.gripper_open == FINGER_OPEN
        assert episode.ee_pose.shape == episode.ee_target.shape == (episode.num_steps, 6)
        assert set(np.unique(episode.joint_target[:, -1])) <= {0.0, FINGER_OPEN}
    noisy = pick_episodes[-1]
    assert noisy.action_noise == 0.05
    # DART noise never touches the gripper: the executed gripper entry is the clean label's
    np.testing.assert_array_equal(noisy.executed_target[:, -1], noisy.joint_target[:, -1])


def test_ee_chunks_through_the_driver_ik_give_the_recorded_joint_labels(pick_episodes):
    """The round trip the deployed policy makes: ee chunk (relative to the pose at the image) ->
    the driver's IK seeded at the measured joints -> joint targets = the expert's labels."""
    data = build_teacher_data(pick_episodes, 4)
    assert data.action_space == "ee_delta" and data.arm_joints == 6 and data.actions.shape[-1] == 7
    from ceed_vla_ros.training.config import TeacherConfig
    from ceed_vla_ros.training.train_teacher import build_metadata

    metadata = build_metadata(TeacherConfig(data=("x.h5",), name="pick_test"), data)
    assert metadata.action_space == "ee_delta" and metadata.joint_names == list(ARM_JOINT_NAMES)
    assert metadata.proprio_names == list(JOINT_NAMES) and metadata.gripper.mode == "binary"
    assert metadata.end_effector.rotation == "rpy" and metadata.end_effector.delta_reference == "image_pose"
    with TabletopArmEnv(task="pick", robot="gripper_arm") as env:
        to_targets = ChunkTargets(metadata, env)
    worst = 0.0
    row = 0
    for episode in pick_episodes:
        chunks = chunk_relative_ee_actions(episode, 4)
        np.testing.assert_array_equal(chunks, data.actions[row : row + episode.num_steps])
        row += episode.num_steps
        for t in range(0, episode.num_steps, 3):
            targets, reason = to_targets(chunks[t], episode.joint_positions[t])
            assert targets is not None, reason
            labels = episode.joint_target[np.minimum(t + np.arange(4), episode.num_steps - 1)]
            np.testing.assert_array_equal(targets[:, -1], labels[:, -1])  # gripper: open / closed exactly
            worst = max(worst, float(np.abs(targets[:, :6] - labels[:, :6]).max()))
    assert worst < 0.02  # rad: the IK's 2 mm / 0.02 rad tolerance, not a different pose


def test_a_chunk_the_ik_cannot_reach_is_refused(pick_episodes):
    data = build_teacher_data(pick_episodes[:1], 4)
    from ceed_vla_ros.training.config import TeacherConfig
    from ceed_vla_ros.training.train_teacher import build_metadata

    metadata = build_metadata(TeacherConfig(data=("x.h5",), name="pick_test"), data)
    with TabletopArmEnv(task="pick", robot="gripper_arm") as env:
        to_targets = ChunkTargets(metadata, env)
        far = np.zeros((4, 7))
        far[:, 0] = 2.0  # 2 m out of reach
        targets, reason = to_targets(far, env.reset(seed=0)["joint_positions"])
        assert targets is None and "unreachable" in reason
        with pytest.raises(ValueError, match="drives joints"):
            ChunkTargets(metadata, TabletopArmEnv(task="reach"))


def test_partial_init_copies_what_fits_by_name_shape_and_token(tmp_path, pick_episodes):
    from ceed_vla_ros.model import build_tokenizer, make_model_config, new_model
    from ceed_vla_ros.training.config import TeacherConfig
    from ceed_vla_ros.training.train_teacher import all_instructions, build_metadata, partial_state

    old_tokenizer = build_tokenizer(all_instructions())
    data = build_teacher_data(pick_episodes, 4)
    metadata = build_metadata(TeacherConfig(data=("x.h5",), name="pick_test"), data)
    new_tokenizer = build_tokenizer(all_instructions() + data.instructions)
    assert len(new_tokenizer) == len(old_tokenizer) + 2  # "pick", "up"
    small = dict(hidden_size=32, num_layers=1, num_heads=2, num_keypoints=4, vision_channels=(8,),
                 vision_strides=(2,), vision_mlp_hidden=16)
    old_metadata = build_metadata(TeacherConfig(data=("x.h5",), name="arm_test"),
                                  _arm_data())
    old = new_model(make_model_config(old_tokenizer, old_metadata, **small), seed=1)
    new = new_model(make_model_config(new_tokenizer, metadata, **small), seed=2)
    state, fresh = partial_state(old, old_tokenizer, new, new_tokenizer)
    assert "proprio_projector.weight" in fresh  # 4 joints -> 7
    old_state = old.state_dict()
    copied = [name for name in state if name.startswith("vision_encoder.") and name not in fresh]
    assert copied and all(torch.equal(state[name], old_state[name]) for name in copied)
    rows = "language_model.model.embed_tokens.weight"
    old_vocab, new_vocab = old_tokenizer.get_vocab(), new_tokenizer.get_vocab()
    for token in ("red", "cube", "<act_0>", "<act_255>", "<image>"):
        torch.testing.assert_close(state[rows][new_vocab[token]], old_state[rows][old_vocab[token]])
    assert new_vocab["<act_0>"] == old_vocab["<act_0>"] + 2  # ids after the new words moved: rows follow the token
    torch.testing.assert_close(state[rows][new_vocab["pick"]], new.state_dict()[rows][new_vocab["pick"]])
    new.load_state_dict(state, strict=True)


def _arm_data():
    from ceed_vla_ros.sim.recorder import record_episode as record

    with TabletopArmEnv(task="reach", horizon=5) as env:
        return build_teacher_data([record(env, make_expert(env), seed=0)], 4)
