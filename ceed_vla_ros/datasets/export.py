"""``ceed-vla export-lerobot`` (simulator HDF5 -> LeRobot v3.0) and ``ceed-vla inspect-lerobot``.

The export is lossless by default: images as PNG in the parquet (``dtype: image``), joint values
as float64, the privileged auxiliary targets as ``ceed.*`` features and the episode attributes as
``ceed/*`` columns of the episode table, so that training from the export gives the same batches
as training from the HDF5 files (``test/datasets/test_export.py``). ``--video h264`` or
``--video av1`` store mp4 instead (lossy, far smaller; what LeRobot itself records).

Features written: ``observation.image`` (H, W, 3), ``observation.state`` (the measured joints),
``action`` (the absolute joint target the expert applied; ``action_kind: absolute``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ceed_vla_ros.datasets.lerobot import LeRobotDataset, LeRobotWriter

IMAGE_KEY = "observation.image"
STATE_KEY = "observation.state"
ACTION_KEY = "action"


def sim_features(image_size: int, joint_names: Sequence[str], images: str = "image", noisy: bool = False) -> dict:
    names = list(joint_names)
    features = {
        IMAGE_KEY: {"dtype": images, "shape": [image_size, image_size, 3], "names": ["height", "width", "channels"]},
        STATE_KEY: {"dtype": "float64", "shape": [len(names)], "names": names},
        ACTION_KEY: {"dtype": "float64", "shape": [len(names)], "names": names},
        "ceed.target_pixel": {"dtype": "float64", "shape": [2], "names": ["u", "v"]},
        "ceed.tool_tip_position": {"dtype": "float64", "shape": [3], "names": ["x", "y", "z"]},
        "ceed.cube_pixels": {
            "dtype": "float64",
            "shape": [6],
            "names": ["red_u", "red_v", "green_u", "green_v", "blue_u", "blue_v"],
        },
        "ceed.goal_pixel": {"dtype": "float64", "shape": [2], "names": ["u", "v"]},
        "ceed.tool_tip_pixel": {"dtype": "float64", "shape": [2], "names": ["u", "v"]},
    }
    if noisy:
        features["ceed.executed_target"] = {"dtype": "float64", "shape": [len(names)], "names": names}
    return features


def episode_frames(episode, noisy: bool) -> dict[str, np.ndarray]:
    steps = episode.num_steps
    nan2 = np.full((steps, 2), np.nan)
    frames = {
        IMAGE_KEY: episode.images,
        STATE_KEY: episode.joint_positions,
        ACTION_KEY: episode.joint_target,
        "ceed.target_pixel": episode.target_pixel,
        "ceed.tool_tip_position": episode.tool_tip_position,
        "ceed.cube_pixels": (
            np.full((steps, 6), np.nan) if episode.cube_pixels is None else episode.cube_pixels.reshape(steps, 6)
        ),
        "ceed.goal_pixel": nan2 if episode.goal_pixel is None else episode.goal_pixel,
        "ceed.tool_tip_pixel": nan2 if episode.tool_tip_pixel is None else episode.tool_tip_pixel,
    }
    if noisy:
        frames["ceed.executed_target"] = (
            episode.joint_target if episode.executed_target is None else episode.executed_target
        )
    return frames


def export_hdf5(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    video: str | None = None,
    episodes_per_file: int = 50,
    max_episodes: int | None = None,
    progress: bool = True,
) -> LeRobotDataset:
    """Write every episode of the HDF5 files ``paths`` (in order) into one LeRobot v3.0 dataset ``out``."""
    from tqdm import tqdm

    from ceed_vla_ros.sim.recorder import DatasetReader

    readers = [DatasetReader(p) for p in paths]
    try:
        first = readers[0][0]
        noisy = any(len(r) and r[0].executed_target is not None for r in readers)
        features = sim_features(first.image_size, first.joint_names, "video" if video else "image", noisy)
        fps = round(1.0 / first.dt)
        if abs(fps * first.dt - 1.0) > 1e-9:
            raise ValueError(f"control period {first.dt} s is not 1 / an integer fps")
        total = sum(len(r) if max_episodes is None else min(len(r), max_episodes) for r in readers)
        with LeRobotWriter(
            out,
            fps=fps,
            features=features,
            robot_type="ceed_vla_sim_arm",
            video_codec=video or "h264",
            episodes_per_file=episodes_per_file,
        ) as writer:
            bar = tqdm(total=total, desc="export", unit="episode", disable=not progress)
            for reader in readers:
                count = len(reader) if max_episodes is None else min(len(reader), max_episodes)
                for i in range(count):
                    episode = reader[i]
                    extra = {
                        "task": episode.task,
                        "colour": episode.colour,
                        "seed": int(episode.seed),
                        "success": bool(episode.success),
                        "action_noise": float(episode.action_noise),
                        "noise_seed": int(episode.noise_seed),
                        "goal_position": None
                        if episode.goal_position is None
                        else list(map(float, episode.goal_position)),
                        "source": f"{Path(reader.path).name}#{i}",
                    }
                    writer.add_episode(episode_frames(episode, noisy), episode.instruction, extra)
                    bar.update(1)
            bar.close()
    finally:
        for reader in readers:
            reader.close()
    return LeRobotDataset(out)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="HDF5 files from ceed-vla record")
    parser.add_argument("--out", type=Path, required=True, help="the LeRobot dataset folder to create")
    parser.add_argument(
        "--video",
        choices=("h264", "av1"),
        default=None,
        help="store mp4 video (lossy) instead of lossless PNG images in the parquet (default)",
    )
    parser.add_argument("--episodes-per-file", type=int, default=50, help="episodes per data file (default 50)")
    parser.add_argument("--max-episodes", type=int, default=None, help="at most this many episodes per HDF5 file")
    parser.add_argument("--no-progress", action="store_true")


def cli_main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        dataset = export_hdf5(
            args.data,
            args.out,
            video=args.video,
            episodes_per_file=args.episodes_per_file,
            max_episodes=args.max_episodes,
            progress=not args.no_progress,
        )
    except (FileExistsError, ValueError, OSError) as error:
        print(f"export-lerobot: {error}")
        return 1
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(
        f"wrote {args.out}: {len(dataset)} episodes, {dataset.num_frames} frames, {size / 1e6:.1f} MB "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


# ------------------------------------------------------------------------------------------------
# inspect-lerobot


def describe(path: str | Path, *, check: bool = False, mapping_items: Sequence[str] = ()) -> dict:
    """What a dataset holds (and, with ``check``, every episode read once: frames, images, videos)."""
    from ceed_vla_ros.datasets import FeatureMapping, LeRobotSource

    dataset = LeRobotDataset(path)
    lengths = [e.length for e in dataset.episodes]
    report = {
        "path": str(path),
        "codebase_version": dataset.version,
        "fps": dataset.fps,
        "episodes": len(dataset),
        "frames": dataset.num_frames,
        "episode_length": {"min": min(lengths, default=0), "max": max(lengths, default=0)},
        "tasks": dataset.tasks,
        "features": {
            k: {
                "dtype": f.get("dtype"),
                "shape": list(f.get("shape") or []),
                **({"codec": f.get("info", {}).get("video.codec")} if f.get("dtype") == "video" else {}),
            }
            for k, f in dataset.features.items()
        },
        "stats": {},
    }
    for key, feature in dataset.features.items():
        if feature.get("dtype") in ("float32", "float64") and key != "timestamp":
            q01, q99, from_file = dataset.quantiles(key)
            report["stats"][key] = {
                "q01": np.round(q01, 4).tolist(),
                "q99": np.round(q99, 4).tolist(),
                "source": "meta/stats.json" if from_file else "computed",
            }
    if check:
        source = LeRobotSource(path, FeatureMapping.parse(mapping_items))
        for i in range(len(source)):
            for key in dataset.image_keys:
                dataset.episode_images(i, key)
            source[i]
        report["checked"] = f"all {len(source)} episodes read (frames, every camera, the mapping)"
    return report


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a LeRobot dataset folder (v3.0 or v2.1)")
    parser.add_argument("--check", action="store_true", help="read every episode, image and video frame once")
    parser.add_argument("--lerobot-map", nargs="+", default=[], metavar="KEY=VALUE", help="as for ceed-vla train")
    parser.add_argument("--json", action="store_true", help="print JSON")


def inspect_main(args: argparse.Namespace) -> int:
    from ceed_vla_ros.datasets import LeRobotFormatError

    try:
        report = describe(args.path, check=args.check, mapping_items=args.lerobot_map)
    except LeRobotFormatError as error:
        print(f"inspect-lerobot: {error}")
        return 1
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        f"{report['path']}: LeRobot {report['codebase_version']}, {report['fps']:g} fps, "
        f"{report['episodes']} episodes, {report['frames']} frames "
        f"(episode length {report['episode_length']['min']}-{report['episode_length']['max']})"
    )
    print(
        f"tasks ({len(report['tasks'])}): "
        + "; ".join(report["tasks"][:10])
        + (" ..." if len(report["tasks"]) > 10 else "")
    )
    print("features:")
    for key, feature in report["features"].items():
        extra = f" ({feature['codec']})" if feature.get("codec") else ""
        print(f"  {key}: {feature['dtype']} {feature['shape']}{extra}")
    print("statistics (q01 / q99):")
    for key, stats in report["stats"].items():
        print(f"  {key}: {stats['q01']} / {stats['q99']} ({stats['source']})")
    if "checked" in report:
        print(report["checked"])
    return 0
