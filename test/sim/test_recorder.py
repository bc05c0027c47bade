"""HDF5 demonstration datasets: exact round trip, action definitions, CLI."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from ceed_vla_ros.sim.env import TabletopArmEnv
from ceed_vla_ros.sim.expert import make_expert
from ceed_vla_ros.sim.recorder import (
    FORMAT_VERSION,
    DatasetReader,
    DatasetWriter,
    Episode,
    read_episodes,
    record_episode,
)
from ceed_vla_ros.tools import cli


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


def test_action_noise_changes_visited_states_but_labels_stay_the_experts(tmp_path):
    with TabletopArmEnv(task="reach") as env:
        expert = make_expert(env)
        clean = record_episode(env, expert, seed=3)
        noisy = record_episode(env, expert, seed=3, action_noise=0.08, noise_seed=5)
        again = record_episode(env, expert, seed=3, action_noise=0.08, noise_seed=5)
        assert clean.action_noise == 0.0 and clean.executed_target is None
        assert noisy.action_noise == 0.08 and noisy.noise_seed == 5
        _assert_episodes_equal(noisy, again)  # reproducible from (noise_seed, seed)
        # Same start, then the noise drives the arm through different states.
        np.testing.assert_array_equal(noisy.joint_positions[0], clean.joint_positions[0])
        steps = min(clean.num_steps, noisy.num_steps)
        assert np.abs(noisy.joint_positions[1:steps] - clean.joint_positions[1:steps]).max() > 1e-2
        # The executed (noisy) targets differ from the labels ...
        assert np.abs(noisy.executed_target - noisy.joint_target).max() > 1e-2
        np.testing.assert_array_equal(
            noisy.action_delta, noisy.joint_target - noisy.joint_positions
        )
        # ... and replaying the executed targets visits the recorded states, where every label is
        # the expert's clean action for that state (velocity-limited/clipped like the env does).
        obs = env.reset(seed=3)
        info = env.privileged()
        for t in range(noisy.num_steps):
            np.testing.assert_array_equal(obs["joint_positions"], noisy.joint_positions[t])
            np.testing.assert_array_equal(obs["image"], noisy.images[t])
            expected = env.clip_joint_target(expert.act(obs, info), env.joint_target)
            np.testing.assert_array_equal(noisy.joint_target[t], expected)
            obs, _, done, info = env.step(noisy.executed_target[t])
            np.testing.assert_array_equal(info["joint_target"], noisy.executed_target[t])
            assert done == (t == noisy.num_steps - 1)
    # Round trip, and a clean file keeps the old defaults.
    path = tmp_path / "dart.h5"
    with DatasetWriter(path, {"task": "reach"}) as writer:
        writer.add_episode(noisy)
        writer.add_episode(clean)
    with DatasetReader(path) as reader:
        _assert_episodes_equal(reader[0], noisy)
        _assert_episodes_equal(reader[1], clean)
    with h5py.File(path, "r+") as raw:  # a file written before the noise attributes existed
        group = raw["episodes/000001"]
        del group.attrs["action_noise"], group.attrs["noise_seed"]
    with DatasetReader(path) as reader:
        _assert_episodes_equal(reader[1], clean)


def test_record_cli_action_noise(tmp_path, capsys):
    out = tmp_path / "dart.h5"
    argv = ["record", "--task", "reach", "--episodes", "2", "--out", str(out), "--action-noise", "0.05"]
    assert cli.main(argv) == 0
    assert "action noise 0.05" in capsys.readouterr().out
    with DatasetReader(out) as reader:
        assert all(e.action_noise == 0.05 and e.executed_target is not None for e in reader)
