"""``ceed-vla bench-recorder``: what the episode recorder costs at its rate, over DDS, with the sim arm.

For each setting ``<image_storage>:<image_size>[:<fps>]`` (e.g. ``image:64``, ``video:480:30``) the
simulated arm (``expert_teleop``, camera at max(15, fps) Hz) and an ``episode_recorder`` are
started as in ``ceed-vla launch record_sim``, and ``--episodes`` episodes of ``--episode-s``
seconds are recorded through the recorder's services. Per setting it prints, side by side:

* frames written (read back from the dataset on disk) and ticks dropped, against the
  ``episode_s x fps`` ticks due;
* the recorder's CPU while recording (% of one core, from /proc utime + stime) and its
  resident memory growth per recorded frame (an episode lives in memory until it is saved);
* the write time per frame: the ``stop_episode`` call (encode + write parquet / mp4 + metadata)
  divided by the frames saved, and the bytes on disk per frame;
* the sim arm's CPU for scale.

Writes ``results.json`` and ``results.md`` into ``--out`` (default results/recorder/).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ceed_vla_ros.bringup import RECORDER, SIM_ARM, get_setup
from ceed_vla_ros.tools.pipeline_bench import process_cpu_seconds, process_rss_mib

DEFAULT_SETTINGS = ("image:64", "video:64", "image:256", "video:256", "image:480", "video:480")
SAVED = re.compile(r"saved: (\d+) frames, (\d+) ticks dropped")


def parse_setting(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("image", "video"):
        raise ValueError(f"a setting is <image|video>:<image_size>[:<fps>], got {text!r}")
    try:
        size, fps = int(parts[1]), int(parts[2]) if len(parts) == 3 else 10
    except ValueError:
        raise ValueError(f"a setting is <image|video>:<image_size>[:<fps>], got {text!r}") from None
    if not (8 <= size <= 1024 and 1 <= fps <= 60):
        raise ValueError(f"{text!r}: image_size 8-1024, fps 1-60")
    return {"name": text, "image_storage": parts[0], "image_size": size, "fps": fps}


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_setting(setting: dict, episodes: int, episode_s: float, work_dir: Path, log) -> dict:
    from std_srvs.srv import Trigger

    from ceed_vla_ros.datasets.lerobot import LeRobotDataset
    from ceed_vla_ros.nodes.interfaces import probe_node
    from ceed_vla_ros.nodes.rclpy_compat import call_service
    from ceed_vla_ros.tools.launcher import NodeSuite

    setup = replace(get_setup("record_sim"), nodes=(SIM_ARM, RECORDER))  # the bench sequences the episodes
    dataset_dir = work_dir / setting["name"].replace(":", "_")
    values = {
        "dataset_dir": str(dataset_dir),
        "fps": str(setting["fps"]),
        "image_size": str(setting["image_size"]),
        "image_storage": setting["image_storage"],
        "camera_rate_hz": str(float(max(15, setting["fps"]))),
    }
    rows = []
    with NodeSuite(setup, values, output=log) as suite, probe_node(f"bench_recorder_{os.getpid()}") as node:
        clients = {name: node.create_client(Trigger, f"/episode_recorder/{name}")
                   for name in ("start_episode", "stop_episode")}
        for name, client in clients.items():
            if not client.wait_for_service(timeout_sec=60.0):
                raise RuntimeError(f"/episode_recorder/{name} did not appear: {suite.dead_nodes()}")
        recorder_pid = suite.processes["episode_recorder"].pid
        sim_pid = suite.processes["sim_arm"].pid
        time.sleep(2.0)  # camera, joint states and expert commands flowing, first instruction received
        for _ in range(episodes):
            started = call_service(clients["start_episode"], Trigger.Request(), 20.0)
            if started is None or not started.success:
                raise RuntimeError(f"start_episode: {started and started.message}")
            t0 = time.monotonic()
            cpu0, sim0, rss0 = process_cpu_seconds(recorder_pid), process_cpu_seconds(sim_pid), process_rss_mib(
                recorder_pid)
            time.sleep(episode_s)
            wall = time.monotonic() - t0
            cpu1, sim1, rss1 = process_cpu_seconds(recorder_pid), process_cpu_seconds(sim_pid), process_rss_mib(
                recorder_pid)
            bytes_before = _directory_bytes(dataset_dir) if dataset_dir.exists() else 0
            s0 = time.monotonic()
            stopped = call_service(clients["stop_episode"], Trigger.Request(), 120.0)
            save_s = time.monotonic() - s0
            if stopped is None or not stopped.success:
                raise RuntimeError(f"stop_episode: {stopped and stopped.message}")
            match = SAVED.search(stopped.message)
            frames, dropped = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
            rows.append({
                "frames": frames,
                "dropped": dropped,
                "ticks_due": round(wall * setting["fps"]),
                "recorder_cpu_percent": 100.0 * (cpu1 - cpu0) / wall,
                "sim_cpu_percent": 100.0 * (sim1 - sim0) / wall,
                "rss_growth_kib_per_frame": 1024.0 * (rss1 - rss0) / max(frames, 1),
                "save_s": save_s,
                "bytes": _directory_bytes(dataset_dir) - bytes_before,
            })
            print(f"  {setting['name']}: {stopped.message} (save {save_s * 1000:.0f} ms)", flush=True)
    dataset = LeRobotDataset(dataset_dir)
    on_disk = [int(dataset.episode_frames(i)["action"].shape[0]) for i in range(len(dataset))]
    frames = sum(r["frames"] for r in rows)
    return {
        **setting,
        "episodes": episodes,
        "episode_s": episode_s,
        "frames_written": sum(on_disk),
        "frames_reported": frames,
        "ticks_dropped": sum(r["dropped"] for r in rows),
        "ticks_due": sum(r["ticks_due"] for r in rows),
        "recorder_cpu_percent": sum(r["recorder_cpu_percent"] for r in rows) / len(rows),
        "sim_cpu_percent": sum(r["sim_cpu_percent"] for r in rows) / len(rows),
        "rss_growth_kib_per_frame": sum(r["rss_growth_kib_per_frame"] for r in rows) / len(rows),
        "write_ms_per_frame": 1000.0 * sum(r["save_s"] for r in rows) / max(frames, 1),
        "save_s_per_episode": sum(r["save_s"] for r in rows) / len(rows),
        "kib_per_frame": sum(r["bytes"] for r in rows) / 1024.0 / max(frames, 1),
        "episodes_detail": rows,
    }


def table(results: list[dict]) -> str:
    header = ("| setting (storage:size:fps) | frames written / ticks due | ticks dropped | recorder CPU % of a core"
              " | write ms / frame | save s / episode | KiB on disk / frame | RSS KiB / frame in memory"
              " | sim arm CPU % |")
    lines = [header, "|" + " --- |" * 9]
    for r in results:
        lines.append(
            f"| {r['image_storage']}:{r['image_size']}:{r['fps']} | {r['frames_written']} / {r['ticks_due']} "
            f"| {r['ticks_dropped']} | {r['recorder_cpu_percent']:.1f} | {r['write_ms_per_frame']:.2f} "
            f"| {r['save_s_per_episode']:.2f} | {r['kib_per_frame']:.1f} | {r['rss_growth_kib_per_frame']:.0f} "
            f"| {r['sim_cpu_percent']:.0f} |"
        )
    return "\n".join(lines)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                        help="<image|video>:<image_size>[:<fps>] (fps default 10), e.g. image:64 video:480:30")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per setting")
    parser.add_argument("--episode-s", type=float, default=10.0, help="seconds per episode")
    parser.add_argument("--out", type=Path, default=Path("results/recorder"), help="where results.json / .md go")
    parser.add_argument("--keep-data", type=Path, default=None, help="keep the recorded datasets here")
    parser.add_argument("--quiet", action="store_true", help="do not forward the nodes' output")


def cli_main(args: argparse.Namespace) -> int:
    try:
        settings = [parse_setting(s) for s in args.settings]
    except ValueError as error:
        print(f"ceed-vla bench-recorder: {error}", file=sys.stderr)
        return 2
    if args.episodes < 1 or args.episode_s <= 0:
        print("ceed-vla bench-recorder: --episodes >= 1 and --episode-s > 0", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    work_dir = args.keep_data or Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    log = open(os.devnull, "w") if args.quiet else sys.stdout
    results = []
    try:
        for setting in settings:
            print(f"{setting['name']}: {args.episodes} episodes of {args.episode_s:.0f} s at {setting['fps']} fps",
                  flush=True)
            results.append(measure_setting(setting, args.episodes, args.episode_s, work_dir, log))
    finally:
        if args.keep_data is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    load = os.getloadavg()
    report = {
        "command": getattr(args, "command_line", "ceed-vla bench-recorder"),
        "cpu_count": os.cpu_count(),
        "load_average_end": load,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    text = table(results)
    (args.out / "results.md").write_text(
        f"# Episode recorder cost\n\n`{report['command']}`\n\n{os.cpu_count()} CPUs, load average at the end "
        f"{load[0]:.1f}. The sim arm (camera at max(15, fps) Hz, expert teleoperator) runs on the same CPUs.\n\n"
        f"{text}\n"
    )
    print(text)
    print(f"wrote {args.out / 'results.md'}")
    return 0
