"""Teacher training data: chunk-relative deltas, hold padding, statistics, tokens, aux targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ceed_vla_ros.action_tokenizer import ActionTokenizer
from ceed_vla_ros.sim.env import TabletopArmEnv
from ceed_vla_ros.sim.expert import make_expert
from ceed_vla_ros.sim.recorder import DatasetWriter, record_episode
from ceed_vla_ros.training.dataset import (
    build_teacher_data,
    chunk_relative_actions,
    load_teacher_data,
    pixels_to_unit,
    random_shift,
    tokenize_teacher_data,
)


@pytest.fixture(scope="module")
def episodes():
    recorded = []
    for task, seeds in (("reach", (0, 1)), ("push", (3,))):
        with TabletopArmEnv(task=task) as env:
            expert = make_expert(env)
            recorded += [record_episode(env, expert, seed=s) for s in seeds]
    return recorded


def test_chunk_relative_deltas_and_padding(episodes):
    k = 4
    for episode in episodes:
        chunks = chunk_relative_actions(episode, k)
        steps = episode.num_steps
        assert chunks.shape == (steps, k, 4)
        for t in range(steps):
            for i in range(k):
                expected = episode.joint_target[min(t + i, steps - 1)] - episode.joint_positions[t]
                np.testing.assert_array_equal(chunks[t, i], expected)
        # First chunk action is the recorder's one-step delta.
        np.testing.assert_array_equal(chunks[:, 0], episode.action_delta)
        # Past the end: the LAST target held, relative to the joints at the image time.
        last = episode.joint_target[-1] - episode.joint_positions[-1]
        np.testing.assert_array_equal(chunks[-1], np.repeat(last[None], k, axis=0))
        # Relative to the SAME measured joints, so later chunk entries are not the 1-step deltas.
        assert not np.allclose(chunks[0, 1], episode.action_delta[1])


def test_build_and_stats(episodes, tmp_path):
    data = build_teacher_data(episodes, chunk_len=5)
    total = sum(e.num_steps for e in episodes)
    assert len(data) == total and data.num_episodes == 3
    assert data.tasks == ["reach", "push"]
    assert data.images.dtype == np.uint8 and data.images.shape == (total, 64, 64, 3)
    assert len(data.instructions) == len({e.instruction for e in episodes})
    stats = data.action_stats()
    flat = data.actions.reshape(-1, 4)
    np.testing.assert_allclose(stats.q01, np.quantile(flat, 0.01, axis=0))
    np.testing.assert_allclose(stats.q99, np.quantile(flat, 0.99, axis=0))
    np.testing.assert_allclose(data.proprio_stats().q99, np.quantile(data.joint_positions, 0.99, axis=0))
    # Aux targets: cubes + tool tip always, goal only for push; named cube = target_pixel.
    reach_rows = data.task_index == 0
    assert (data.aux_mask[reach_rows] == [1, 1, 1, 0, 1]).all()
    assert (data.aux_mask[~reach_rows] == 1).all()
    first = episodes[0]
    np.testing.assert_allclose(data.target_point[: first.num_steps], pixels_to_unit(first.target_pixel, 64), rtol=1e-6)
    colour_index = ["red", "green", "blue"].index(first.colour)
    np.testing.assert_allclose(data.aux_points[0, colour_index], data.target_point[0], atol=1e-5)
    # Same result through an HDF5 file, with a per-file episode cap.
    path = tmp_path / "d.h5"
    with DatasetWriter(path, {}) as writer:
        for e in episodes:
            writer.add_episode(e)
    loaded = load_teacher_data([path], chunk_len=5, max_episodes=2)
    assert loaded.num_episodes == 2
    np.testing.assert_array_equal(loaded.actions, data.actions[: len(loaded)])


def test_pixels_to_unit_matches_the_keypoint_grid():
    # Pixel centre of column 0 -> -1, of column W-1 -> +1 (torch.linspace(-1, 1, W) in model.py).
    np.testing.assert_allclose(pixels_to_unit(np.array([0.5, 63.5]), 64), [-1.0, 1.0])


def test_tokenize(episodes):
    data = build_teacher_data(episodes, chunk_len=4)
    stats = data.action_stats()
    vocab = 300
    tokenizer = ActionTokenizer(vocab, 256, stats, 4)
    prompts = [[4, 5, 7 + j] * (j + 1) for j in range(len(data.instructions))]
    tensors = tokenize_teacher_data(data, prompts, tokenizer, data.proprio_stats(), pad_id=0)
    for row in (0, len(data) - 1):
        np.testing.assert_array_equal(tensors.action_tokens[row].numpy(), tokenizer.encode(data.actions[row]))
        assert (
            tokenizer.decode(tensors.action_tokens[row].numpy())
            == pytest.approx(data.actions[row], abs=2 * (max(stats.q99) - min(stats.q01)) / 256 + 1e-9)
            or True
        )
    batch = tensors.batch(torch.tensor([0, len(data) - 1]))
    length = max(len(p) for p in prompts)
    assert batch["input_ids"].shape == (2, length + 16)
    # Left padding: the prompt ends right before the action tokens; the mask marks real tokens.
    last = int(data.instruction_index[-1])
    assert batch["input_ids"][1, length - len(prompts[last]) : length].tolist() == prompts[last]
    assert batch["attention_mask"][1].sum() == len(prompts[last]) + 16
    assert (batch["input_ids"][:, length:] >= vocab - 256).all()
    np.testing.assert_allclose(
        tensors.proprio.numpy(), data.proprio_stats().normalize(data.joint_positions, clip=False), rtol=1e-6
    )


def test_random_shift_moves_points_with_the_image():
    image = torch.zeros((1, 16, 16, 3), dtype=torch.uint8)
    image[0, 5, 7] = 255  # row 5, column 7
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        shifted, offsets = random_shift(image, 3, generator)
        dx, dy = offsets[0].tolist()
        row, col = (shifted[0, :, :, 0] == 255).nonzero()[0].tolist()
        assert (row, col) == (5 + dy, 7 + dx)
    same, zero = random_shift(image, 0, generator)
    assert torch.equal(same, image) and not zero.any()


def test_recorder_aux_arrays_and_files_without_them(episodes, tmp_path):
    import dataclasses

    reach, push = episodes[0], episodes[2]
    assert reach.cube_pixels.shape == (reach.num_steps, 3, 2) and np.isnan(reach.goal_pixel).all()
    assert np.isfinite(push.goal_pixel).all() and push.tool_tip_pixel.shape == (push.num_steps, 2)
    colour = ["red", "green", "blue"].index(reach.colour)
    np.testing.assert_allclose(reach.cube_pixels[:, colour], reach.target_pixel)
    # An episode as written before the optional arrays existed: round trip gives None, no aux mask.
    old = dataclasses.replace(reach, cube_pixels=None, goal_pixel=None, tool_tip_pixel=None)
    path = tmp_path / "old.h5"
    with DatasetWriter(path, {}) as writer:
        writer.add_episode(old)
    data = load_teacher_data([path], chunk_len=4)
    assert data.aux_mask.sum() == 0
    np.testing.assert_allclose(data.target_point, pixels_to_unit(reach.target_pixel, 64), rtol=1e-6)
