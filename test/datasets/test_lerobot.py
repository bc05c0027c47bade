"""LeRobot datasets: HDF5 -> LeRobot round trip (same batches), video, v2.1, broken datasets, statistics,
and training, trajectories and distillation straight from a LeRobot folder. Every dataset is written here."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch

from ceed_vla_ros.action_tokenizer import ActionTokenizer
from ceed_vla_ros.datasets import FeatureMapping, LeRobotFormatError, LeRobotSource, LeRobotWriter, open_dataset
from ceed_vla_ros.datasets.export import export_hdf5
from ceed_vla_ros.datasets.lerobot import LeRobotDataset, encode_video
from ceed_vla_ros.sim.recorder import record_dataset
from ceed_vla_ros.training.dataset import load_teacher_data, tokenize_teacher_data


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    files = [root / "reach.h5", root / "push.h5"]
    record_dataset("reach", 3, files[0], seed=0, image_size=32, horizon=8, progress=False)
    record_dataset("push", 1, files[1], seed=3, image_size=32, horizon=8, progress=False)
    export_hdf5(files, root / "png", episodes_per_file=2, progress=False)
    export_hdf5(files, root / "h264", video="h264", episodes_per_file=3, progress=False)
    return {"root": root, "files": files}


def _assert_same_data(a, b):
    for f in dataclasses.fields(a):
        if f.name == "proprio_norm":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


def test_export_gives_the_same_batches(world):
    hdf5 = load_teacher_data(world["files"], 3)
    exported = load_teacher_data([world["root"] / "png"], 3)
    _assert_same_data(hdf5, exported)
    # the dataset's own statistics (meta/stats.json) are the ones the HDF5 path computes
    assert exported.proprio_norm is not None and exported.proprio_stats() == hdf5.proprio_stats()
    tokenizer = ActionTokenizer(1000, 256, hdf5.action_stats(), 3)
    prompts = [[5, 6, 7 + i] for i in range(len(hdf5.instructions))]
    a = tokenize_teacher_data(hdf5, prompts, tokenizer, hdf5.proprio_stats(), 0)
    b = tokenize_teacher_data(exported, prompts, tokenizer, exported.proprio_stats(), 0)
    index = torch.arange(len(a))
    for key, value in a.batch(index).items():
        assert torch.equal(value, b.batch(index)[key]), key
    dataset = LeRobotDataset(world["root"] / "png")
    assert dataset.version == "v3.0" and len(dataset) == 4 and dataset.tasks[0].startswith("reach")
    assert len({e.data_path for e in dataset.episodes}) == 2  # two episodes per data file


def test_video_export_reads_back_close(world):
    lossless = load_teacher_data(world["files"], 3)
    video = load_teacher_data([world["root"] / "h264"], 3)
    assert video.images.shape == lossless.images.shape
    error = np.abs(video.images.astype(int) - lossless.images.astype(int))
    assert error.mean() < 8, error.mean()  # lossy, but the same frames in the same order
    np.testing.assert_array_equal(video.actions, lossless.actions)
    info = json.loads((world["root"] / "h264" / "meta/info.json").read_text())
    assert info["features"]["observation.image"]["info"]["video.codec"] == "h264"


def test_av1_video_and_resize_to_the_mapping(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (6, 48, 64, 3), dtype=np.uint8)
    frames[:, :, :32] = 40  # left half flat: survives the codec
    features = {
        "observation.images.top": {"dtype": "video", "shape": [48, 64, 3], "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["a", "b"]},
        "action": {"dtype": "float32", "shape": [2], "names": ["a", "b"]},
    }
    with LeRobotWriter(tmp_path / "ds", fps=5, features=features, video_codec="av1") as writer:
        state = np.arange(12, dtype=np.float32).reshape(6, 2)
        writer.add_episode({"observation.images.top": frames, "observation.state": state, "action": state + 1}, "wave")
    source = open_dataset(tmp_path / "ds", FeatureMapping(image_size=16))
    assert isinstance(source, LeRobotSource) and source.image_key == "observation.images.top"
    episode = source[0]
    assert episode.images.shape == (6, 16, 16, 3) and source.image_crop == "center_square"
    assert episode.joint_names == ("a", "b") and episode.dt == pytest.approx(0.2)
    np.testing.assert_allclose(episode.action_delta, 1.0)
    assert episode.instruction == "wave" and np.isnan(episode.target_pixel).all()
    delta = FeatureMapping.parse(["action_kind=delta", "task=fixed:wave hello", "image_size=16"])
    episode = LeRobotSource(tmp_path / "ds", delta)[0]
    np.testing.assert_allclose(episode.joint_target, state + state + 1)
    assert episode.instruction == "wave hello"


def _write_v21(root, frames, states, fps=10):
    """A LeRobot v2.1 dataset laid out as lerobot 0.3 wrote it: one parquet and one mp4 per episode."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "meta").mkdir(parents=True)
    info = {
        "codebase_version": "v2.1",
        "fps": fps,
        "chunks_size": 1000,
        "total_episodes": len(frames),
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            "observation.images.cam": {
                "dtype": "video",
                "shape": [32, 32, 3],
                "names": ["height", "width", "channels"],
            },
            "observation.state": {"dtype": "float32", "shape": [3], "names": {"motors": ["j1", "j2", "j3"]}},
            "action": {"dtype": "float32", "shape": [3], "names": {"motors": ["j1", "j2", "j3"]}},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "stack the cups"}) + "\n")
    lines = []
    start = 0
    for e, (images, state) in enumerate(zip(frames, states)):
        n = len(images)
        lines.append(json.dumps({"episode_index": e, "tasks": ["stack the cups"], "length": n}))
        table = pa.table(
            {
                "observation.state": pa.array(state.tolist(), pa.list_(pa.float32())),
                "action": pa.array((state + 0.5).tolist(), pa.list_(pa.float32())),
                "timestamp": pa.array(np.arange(n) / fps, pa.float32()),
                "frame_index": pa.array(np.arange(n), pa.int64()),
                "episode_index": pa.array(np.full(n, e), pa.int64()),
                "index": pa.array(np.arange(start, start + n), pa.int64()),
                "task_index": pa.array(np.zeros(n), pa.int64()),
            }
        )
        path = root / f"data/chunk-000/episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        encode_video(root / f"videos/chunk-000/observation.images.cam/episode_{e:06d}.mp4", images, fps)
        start += n
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")


def test_v21_dataset_and_computed_quantiles(tmp_path):
    rng = np.random.default_rng(1)
    frames = [np.full((n, 32, 32, 3), 30 * (i + 1), dtype=np.uint8) for i, n in enumerate((5, 7))]
    states = [rng.normal(size=(len(f), 3)).astype(np.float32) for f in frames]
    _write_v21(tmp_path / "v21", frames, states)
    dataset = LeRobotDataset(tmp_path / "v21")
    assert dataset.version == "v2.1" and len(dataset) == 2 and dataset.names("observation.state") == ["j1", "j2", "j3"]
    source = LeRobotSource(tmp_path / "v21", FeatureMapping(image_size=32))
    for i in range(2):
        episode = source[i]
        np.testing.assert_array_equal(episode.joint_positions, states[i].astype(np.float64))
        assert np.abs(episode.images.astype(int) - int(frames[i][0, 0, 0, 0])).max() <= 3
        assert episode.instruction == "stack the cups"
    # no meta/stats.json: q01/q99 computed over every frame
    q01, q99, from_file = dataset.quantiles("observation.state")
    every = np.concatenate(states).astype(np.float64)
    assert not from_file
    np.testing.assert_allclose(q01, np.quantile(every, 0.01, axis=0))
    np.testing.assert_allclose(q99, np.quantile(every, 0.99, axis=0))
    assert source.proprio_norm().q01 == tuple(np.quantile(every, 0.01, axis=0))


def test_broken_datasets_name_the_file(world, tmp_path):
    def copy(name):
        target = tmp_path / name
        shutil.copytree(world["root"] / "h264", target)
        return target

    missing = copy("missing")
    data_file = LeRobotDataset(missing).episodes[0].data_path
    os.remove(data_file)
    with pytest.raises(LeRobotFormatError, match=str(data_file)):
        LeRobotSource(missing)[0]

    miscounted = copy("miscounted")
    import pyarrow as pa
    import pyarrow.parquet as pq

    episodes_file = miscounted / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(episodes_file)
    lengths = table.column("length").to_pylist()
    table = table.set_column(table.column_names.index("length"), "length", pa.array([lengths[0] + 2] + lengths[1:]))
    pq.write_table(table, episodes_file)
    dataset = LeRobotDataset(miscounted)
    with pytest.raises(LeRobotFormatError, match=rf"{dataset.episodes[0].data_path}.*episode 0 has \d+ frames"):
        LeRobotSource(miscounted)[0]

    short = copy("short")
    dataset = LeRobotDataset(short)
    video = dataset.episodes[0].videos["observation.image"][0]
    encode_video(video, np.zeros((3, 32, 32, 3), np.uint8), 10)  # 3 frames for the file's episodes
    with pytest.raises(LeRobotFormatError, match=rf"{video}.*shorter than its frames"):
        LeRobotSource(short)[1]

    with pytest.raises(LeRobotFormatError, match="meta/info.json: missing"):
        open_dataset(tmp_path)
    broken = copy("badjson")
    (broken / "meta/info.json").write_text("{")
    with pytest.raises(LeRobotFormatError, match="info.json: not valid JSON"):
        LeRobotDataset(broken)


def test_uncommitted_episode_rows_are_ignored(world, tmp_path):
    """info.json is the commit point: rows past its total_episodes (a writer killed in between) are not read."""
    target = tmp_path / "ds"
    shutil.copytree(world["root"] / "png", target)
    info = json.loads((target / "meta/info.json").read_text())
    info["total_episodes"] = 3
    (target / "meta/info.json").write_text(json.dumps(info))
    assert len(LeRobotDataset(target)) == 3
    # and an appending writer continues from the committed episodes
    dataset = LeRobotDataset(target)
    features = {
        k: v
        for k, v in dataset.features.items()
        if k not in ("timestamp", "frame_index", "episode_index", "index", "task_index")
    }
    writer = LeRobotWriter(target, fps=10, features=features, append=True)
    frames = dataset.episode_frames(0)
    frames["observation.image"] = dataset.episode_images(0, "observation.image")
    writer.add_episode({k: frames[k] for k in features}, "again")
    again = LeRobotDataset(target)
    assert len(again) == 4 and again.tasks[-1] == "again"
    np.testing.assert_array_equal(again.episode_frames(3)["observation.state"], frames["observation.state"])


def test_train_collect_distill_from_a_lerobot_folder(world, tmp_path):
    from ceed_vla_ros.checkpoint import load_checkpoint
    from ceed_vla_ros.tools import cli

    folder = str(world["root"] / "png")
    tiny = [
        "--hidden",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--keypoints",
        "4",
        "--image-tokens",
        "2",
        "--vision-channels",
        "8",
        "--vision-strides",
        "2",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--no-progress",
        "--chunk-len",
        "2",
        "--val-episodes",
        "1",
    ]
    models = str(tmp_path / "models")
    assert (
        cli.main(
            [
                "train",
                "--data",
                folder,
                "--name",
                "lr_teacher",
                "--model-dir",
                models,
                "--run-dir",
                str(tmp_path / "run_t"),
                "--steps",
                "2",
                *tiny,
            ]
        )
        == 0
    )
    teacher = load_checkpoint(tmp_path / "models", "lr_teacher")
    assert teacher.metadata.joint_names == ["base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch"]
    assert teacher.metadata.dt == pytest.approx(0.1) and teacher.metadata.image.height == 32
    trajectories = str(tmp_path / "traj.h5")
    assert (
        cli.main(
            [
                "collect-trajectories",
                "--teacher",
                "lr_teacher",
                "--model-dir",
                models,
                "--data",
                folder,
                "--out",
                trajectories,
                "--max-samples",
                "12",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "distill",
                "--teacher",
                "lr_teacher",
                "--model-dir",
                models,
                "--trajectories",
                trajectories,
                "--data",
                folder,
                "--out-name",
                "lr_student",
                "--run-dir",
                str(tmp_path / "run_s"),
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--val-samples",
                "4",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert load_checkpoint(tmp_path / "models", "lr_student").metadata.provenance.role == "student"
