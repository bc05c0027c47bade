"""HDF5 demonstration datasets: exact round trip, action definitions, chunking, CLI."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from ceed_vla_ros import cli
from ceed_vla_ros.sim.env import TabletopArmEnv
from ceed_vla_ros.sim.expert import make_expert
from ceed_vla_ros.sim.recorder import (
    FORMAT_VERSION,
    DatasetReader,
    DatasetWriter,
    Episode,
    action_chunks,
    iter_training_samples,
    read_episodes,
    record_episode,
)


@pytest.fixture(scope="module")
def episodes() -> list[Episode]:
    with TabletopArmEnv(task="push") as env:
        expert = make_expert(env)
        recorded = [record_episode(env, expert, seed=seed) for seed in (0, 1)]
    with TabletopArmEnv(task="reach") as env:
        recorded.append(record_episode(env, make_expert(env), seed=0))
    return recorded


def _assert_episodes_equal(a: Episode, b: Episode) -> None:
    for field in dataclasses.fields(Episode):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=field.name)
            assert np.asarray(x).dtype == np.asarray(y).dtype, field.name
        else:
            assert x == y and type(x) is type(y), field.name


def test_recorded_episode_is_consistent(episodes):
    for episode in episodes:
        steps = episode.num_steps
        assert episode.success
        assert episode.images.shape == (steps, 64, 64, 3) and episode.images.dtype == np.uint8
        for name in ("joint_positions", "joint_target", "action_delta"):
            assert getattr(episode, name).shape == (steps, 4)
        np.testing.assert_array_equal(
            episode.action_delta, episode.joint_target - episode.joint_positions
        )
        # The measured joints at t+1 result from the target at t, so they move towards it.
        assert np.linalg.norm(episode.joint_positions[1] - episode.joint_positions[0]) > 0


def test_round_trip_is_exact(tmp_path, episodes):
    path = tmp_path / "demo.h5"
    config = {"task": "push", "image_size": 64}
    with DatasetWriter(path, config) as writer:
        for episode in episodes:
            writer.add_episode(episode)
    with DatasetReader(path) as reader:
        assert len(reader) == len(episodes)
        assert reader.format_version == FORMAT_VERSION and reader.env_config == config
        for original, loaded in zip(episodes, reader):
            _assert_episodes_equal(original, loaded)
    assert [e.seed for e in read_episodes(path)] == [0, 1, 0]
    with h5py.File(path, "r") as raw:
        assert raw.attrs["num_episodes"] == 3
        group = raw["episodes/000000"]
        assert group.attrs["instruction"] == episodes[0].instruction
        assert list(group.attrs["joint_names"]) == list(episodes[0].joint_names)
        assert group["images"].compression == "lzf"
    with pytest.raises(FileExistsError):
        DatasetWriter(path, config)


def test_reader_rejects_foreign_files(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as raw:
        raw.attrs["format"] = "something else"
    with pytest.raises(ValueError):
        DatasetReader(path)


def test_action_chunks_are_padded_with_hold_actions(episodes):
    episode = episodes[0]
    steps, k = episode.num_steps, 5
    deltas = action_chunks(episode, k)
    targets = action_chunks(episode, k, action="joint_target")
    assert deltas.shape == targets.shape == (steps, k, 4)
    np.testing.assert_array_equal(deltas[0], episode.action_delta[:k])
    np.testing.assert_array_equal(deltas[-1, 0], episode.action_delta[-1])
    np.testing.assert_array_equal(deltas[-1, 1:], np.zeros((k - 1, 4)))
    np.testing.assert_array_equal(targets[-1, 1:], np.repeat(episode.joint_target[-1:], k - 1, 0))
    with pytest.raises(ValueError):
        action_chunks(episode, k, action="velocity")


def test_training_samples_cover_every_step(episodes):
    samples = list(iter_training_samples(episodes, chunk_size=3))
    assert len(samples) == sum(e.num_steps for e in episodes)
    first = samples[0]
    np.testing.assert_array_equal(first.image, episodes[0].images[0])
    assert first.instruction == episodes[0].instruction and first.actions.shape == (3, 4)


def test_record_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "data" / "reach.h5"
    argv = ["record", "--task", "reach", "--episodes", "3", "--seed", "7", "--out", str(out)]
    assert cli.main(argv + ["--only-successful"]) == 0
    assert "wrote 3 reach episodes" in capsys.readouterr().out
    with DatasetReader(out) as reader:
        assert len(reader) == 3 and [e.seed for e in reader] == [7, 8, 9]
        assert reader.env_config["task"] == "reach"
        assert json.loads(json.dumps(reader.env_config)) == reader.env_config
    assert cli.main(argv) == 1  # refuses to overwrite without --overwrite
    assert cli.main(argv + ["--overwrite", "--image-size", "32"]) == 0
    with DatasetReader(out) as reader:
        assert reader[0].images.shape[1:] == (32, 32, 3)
