"""The ROS pipeline measured across processes over DDS, with the sim arm: latency, rates, CPU, memory.

``ceed-vla bench-pipeline`` runs the ``sim_arm`` suite (the same processes as ``ceed-vla launch``)
for ``--seconds``, once on an otherwise idle machine and once with every core kept busy by
``--load-processes`` spinning processes, and reports:

* image -> /actions latency: ``/actions`` receive time minus its header stamp (= the camera frame's
  render stamp), split into decode (``decode_time_ms`` of the message) and the rest (transport of
  image and chunk, conversion, resize, preprocessing, waiting for the decoder);
* /actions -> command: receive time of the first driver command after each chunk, minus the chunk's
  receive time (the driver's next control cycle plus transport);
* the driver's command rate and its period error (``|period - 1/control_rate_hz|``) p50/p99/max
  at the receiver: the DDS reception stamps of the commands in this process (rmw
  ``received_timestamp``, taken by the middleware when the sample arrives, so the probe's own
  executor does not add its jitter; DDS delivery jitter is included), and the same at the
  driver (``source_timestamp``: when the driver published);
* CPU share (% of one core) and RSS (MiB) of every node process at start and end.

``ceed-vla soak`` is the same measurement for a long run (default 10 minutes), comparing the first and
the last minute and counting dropped frames and error lines: nothing may grow without bound.
Episodes are reset every ``--episode-seconds`` so the arm keeps moving.

``--rates 200,500,1000`` repeats the whole measurement (a fresh suite each) with the driver's
``control_rate_hz`` set to each rate and prints one control-loop table side by side: achieved
rate, period error p50/p99/max at the receiver (and p99 at the source), and the CPU share of the
driver, idle and loaded. ``--realtime-priority N`` starts the driver with ``realtime_priority:=N``;
``--probe-realtime-priority N`` runs the receiving probe's threads SCHED_FIFO (a real controller
receives in a real-time thread; a normal-priority probe on a busy machine measures its own
scheduling delays); ``--loops streamer,thread`` measures every rate with each of those driver
loops (``control_loop``), a fresh suite each, side by side in the table; ``--compare-timer`` adds
the previous loop (``control_loop:=rclpy_timer``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ceed_vla_ros.bringup import get_setup
from ceed_vla_ros.control_loop import CONTROL_LOOPS, set_realtime_priority
from ceed_vla_ros.nodes.diagnostics import status_name
from ceed_vla_ros.tools.launcher import NodeSuite

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def process_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


@dataclass
class Window:
    """What the probe saw between two times."""

    chunks: int = 0
    latency_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    action_to_command_ms: list[float] = field(default_factory=list)
    command_times: list[float] = field(default_factory=list)  # DDS reception stamps (s)
    command_source_times: list[float] = field(default_factory=list)  # the driver's publication stamps (s)

    def summary(self, control_rate_hz: float) -> dict[str, float]:
        periods = np.diff(self.command_times) if len(self.command_times) > 1 else np.array([])
        errors_ms = np.abs(periods - 1.0 / control_rate_hz) * 1000.0
        source_periods = np.diff(self.command_source_times) if len(self.command_source_times) > 1 else np.array([])
        source_errors_ms = np.abs(source_periods - 1.0 / control_rate_hz) * 1000.0
        duration = self.command_times[-1] - self.command_times[0] if len(self.command_times) > 1 else float("nan")
        other = [t - d for t, d in zip(self.latency_ms, self.decode_ms)]
        return {
            "chunks": self.chunks,
            "latency_p50_ms": percentile(self.latency_ms, 50),
            "latency_p99_ms": percentile(self.latency_ms, 99),
            "decode_p50_ms": percentile(self.decode_ms, 50),
            "decode_p99_ms": percentile(self.decode_ms, 99),
            "transport_preprocess_p50_ms": percentile(other, 50),
            "transport_preprocess_p99_ms": percentile(other, 99),
            "iterations_mean": float(np.mean(self.iterations)) if self.iterations else float("nan"),
            "action_to_command_p50_ms": percentile(self.action_to_command_ms, 50),
            "action_to_command_p99_ms": percentile(self.action_to_command_ms, 99),
            "command_rate_hz": (len(self.command_times) - 1) / duration
            if duration == duration and duration > 0
            else 0.0,
            "command_period_error_p50_ms": percentile(errors_ms, 50),
            "command_period_error_p99_ms": percentile(errors_ms, 99),
            "command_period_error_max_ms": float(errors_ms.max()) if errors_ms.size else float("nan"),
            "command_period_error_source_p50_ms": percentile(source_errors_ms, 50),
            "command_period_error_source_p99_ms": percentile(source_errors_ms, 99),
            "command_period_error_source_max_ms": float(source_errors_ms.max()) if source_errors_ms.size
            else float("nan"),
        }


class Probe:
    """A node in this process recording /actions, driver commands and diagnostics."""

    def __init__(self, realtime_priority: int = 0) -> None:
        """``realtime_priority`` > 0: the probe's threads (its DDS receive threads and executor) run
        SCHED_FIFO, like a real-time controller receiving the commands; set on this thread only
        while they are created (they inherit it), so the node and load processes started from
        here keep normal scheduling."""
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import Float64MultiArray

        from ceed_vla_ros.msg import ActionTokens
        from ceed_vla_ros.nodes.interfaces import (
            ACTIONS_TOPIC,
            FORWARD_COMMAND_TOPIC,
            SIM_RESET_SERVICE,
            probe_node,
            stamp_to_seconds,
        )
        from ceed_vla_ros.srv import ResetEpisode

        self._stamp_to_seconds = stamp_to_seconds
        self.lock = threading.Lock()
        self.window = Window()
        self._pending_actions: list[float] = []
        self.diagnostics: dict[str, dict[str, str]] = {}

        def subscribe(node) -> None:
            node.create_subscription(ActionTokens, ACTIONS_TOPIC, self._on_actions, 10)
            node.create_subscription(Float64MultiArray, FORWARD_COMMAND_TOPIC, self._on_command, 1000)
            node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

        self._probe = probe_node("ceed_vla_pipeline_probe", setup=subscribe)
        self.scheduling = set_realtime_priority(realtime_priority)
        try:
            self.node = self._probe.__enter__()
        finally:
            if realtime_priority > 0 and hasattr(os, "sched_setscheduler"):
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        self.reset_client = self.node.create_client(ResetEpisode, SIM_RESET_SERVICE)
        self.ResetEpisode = ResetEpisode

    def _on_actions(self, msg) -> None:
        now = time.time()
        stamp = self._stamp_to_seconds(msg.header.stamp)
        with self.lock:
            self.window.chunks += 1
            self.window.latency_ms.append((now - stamp) * 1000.0)
            self.window.decode_ms.append(msg.decode_time_ms)
            self.window.iterations.append(msg.iterations)
            self._pending_actions.append(now)

    def _on_command(self, msg, info) -> None:
        """(message, rmw message info: rclpy >= Iron calls a two-argument callback with it)."""
        now = time.time()
        with self.lock:
            self.window.command_times.append(info["received_timestamp"] * 1e-9)
            self.window.command_source_times.append(info["source_timestamp"] * 1e-9)
            for received in self._pending_actions:
                self.window.action_to_command_ms.append((now - received) * 1000.0)
            self._pending_actions.clear()

    def _on_diagnostics(self, msg) -> None:
        with self.lock:
            for status in msg.status:
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def take_window(self) -> Window:
        with self.lock:
            window, self.window = self.window, Window()
            self._pending_actions.clear()
        return window

    def reset_episode(self, seed: int) -> None:
        if self.reset_client.service_is_ready():
            self.reset_client.call_async(self.ResetEpisode.Request(task="reach", seed=seed, colour=""))

    def close(self) -> None:
        self._probe.__exit__(None, None, None)


def _normal_scheduling() -> None:
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def start_load(processes: int) -> list[subprocess.Popen]:
    """Busy-spinning processes that keep the cores loaded, always with normal scheduling (a
    SCHED_FIFO parent would otherwise hand its real-time priority to spinning children, which then
    starve the whole machine)."""
    return [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=_normal_scheduling)
        for _ in range(processes)
    ]


def node_stats(suite: NodeSuite) -> dict[str, dict[str, float]]:
    return {
        name: {"cpu_s": process_cpu_seconds(p.pid), "rss_mib": process_rss_mib(p.pid)}
        for name, p in suite.processes.items()
        if p.poll() is None
    }


DRIVER_KEYS = ("control_loop", "control_scheduling", "control_periods_missed")  # kept with each window


def measure(
    suite: NodeSuite,
    probe: Probe,
    seconds: float,
    episode_seconds: float,
    seed: int,
    control_rate_hz: float,
    progress=None,
) -> dict:
    """One measured window of ``seconds`` on the running suite."""
    probe.take_window()
    start_stats, start = node_stats(suite), time.monotonic()
    next_reset, episode = start, 0
    while (elapsed := time.monotonic() - start) < seconds:
        if time.monotonic() >= next_reset:
            probe.reset_episode(seed + episode)
            episode += 1
            next_reset += episode_seconds
        if progress:
            progress(elapsed)
        time.sleep(0.2)
    wall = time.monotonic() - start
    window, end_stats = probe.take_window(), node_stats(suite)
    nodes = {
        name: {
            "cpu_percent": 100.0 * (end_stats[name]["cpu_s"] - s["cpu_s"]) / wall,
            "rss_start_mib": s["rss_mib"],
            "rss_end_mib": end_stats[name]["rss_mib"],
        }
        for name, s in start_stats.items()
        if name in end_stats
    }
    with probe.lock:
        driver = dict(probe.diagnostics.get(status_name("arm_driver"), {}))
    return {"seconds": wall, "episodes": episode, **window.summary(control_rate_hz), "nodes": nodes,
            "driver": {key: driver[key] for key in DRIVER_KEYS if key in driver}}


def measure_idle_and_loaded(
    suite: NodeSuite,
    probe: Probe,
    seconds: float,
    load_processes: int,
    episode_seconds: float,
    seed: int,
    control_rate_hz: float,
) -> dict[str, dict]:
    """:func:`measure` on an idle machine, then with ``load_processes`` busy processes (0: skipped)."""
    print(f"measuring {seconds:.0f} s on an idle machine ...", flush=True)
    runs = {"idle": measure(suite, probe, seconds, episode_seconds, seed, control_rate_hz)}
    if load_processes > 0:
        print(f"measuring {seconds:.0f} s with {load_processes} busy processes ...", flush=True)
        load = start_load(load_processes)
        try:
            runs[f"{load_processes} busy processes"] = measure(
                suite, probe, seconds, episode_seconds, seed, control_rate_hz
            )
        finally:
            for process in load:
                process.kill()
                process.wait()
    return runs


def wait_for_chunks(probe: Probe, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe.window.chunks >= 5:
            return
        time.sleep(0.2)
    raise RuntimeError(f"no /actions within {timeout_s:.0f} s: is the checkpoint there? see the node log")


def run_suite(values: dict[str, str], body, probe_realtime_priority: int = 0) -> tuple[object, str]:
    """Start the sim suite, wait for chunks, run ``body(suite, probe)``; return its result and the log."""
    log = io.StringIO()
    probe = None
    with NodeSuite(get_setup("sim_arm"), values, output=log) as suite:
        try:
            probe = Probe(probe_realtime_priority)
            if probe_realtime_priority > 0:
                print(f"probe (receiver) threads: {probe.scheduling}", flush=True)
            wait_for_chunks(probe, 120.0)
            result = body(suite, probe)
        finally:
            if probe is not None:
                probe.close()
    return result, log.getvalue()


def pipeline_table(runs: dict[str, dict]) -> str:
    keys = [
        ("chunks", "chunks", "{:.0f}"),
        ("latency_p50_ms", "image->/actions p50 ms", "{:.1f}"),
        ("latency_p99_ms", "image->/actions p99 ms", "{:.1f}"),
        ("decode_p50_ms", "decode p50 ms", "{:.1f}"),
        ("transport_preprocess_p50_ms", "transport+preprocess p50 ms", "{:.1f}"),
        ("transport_preprocess_p99_ms", "transport+preprocess p99 ms", "{:.1f}"),
        ("iterations_mean", "Jacobi iterations / chunk", "{:.2f}"),
        ("action_to_command_p50_ms", "/actions->command p50 ms", "{:.1f}"),
        ("action_to_command_p99_ms", "/actions->command p99 ms", "{:.1f}"),
        ("command_rate_hz", "driver command rate Hz", "{:.1f}"),
        ("command_period_error_p50_ms", "command period error p50 ms", "{:.2f}"),
        ("command_period_error_p99_ms", "command period error p99 ms", "{:.2f}"),
    ]
    names = list(runs)
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label, fmt in keys:
        lines.append(f"| {label} | " + " | ".join(fmt.format(runs[n][key]) for n in names) + " |")
    node_names = sorted({node for run in runs.values() for node in run["nodes"]})
    for node in node_names:
        lines.append(
            f"| CPU % of a core: {node} | "
            + " | ".join(f"{runs[n]['nodes'].get(node, {}).get('cpu_percent', float('nan')):.0f}" for n in names)
            + " |"
        )
    for node in node_names:
        lines.append(
            f"| RSS MiB at the end: {node} | "
            + " | ".join(f"{runs[n]['nodes'].get(node, {}).get('rss_end_mib', float('nan')):.0f}" for n in names)
            + " |"
        )
    return "\n".join(lines)


def sim_suite_settings(assignments: list[str]) -> tuple[dict[str, str], float]:
    """Launch-argument values of the sim_arm setup and the driver's configured control rate (Hz)."""
    from ceed_vla_ros.bringup import parse_assignments, read_parameters

    setup = get_setup("sim_arm")
    values = parse_assignments(assignments, setup)
    control_rate = float(read_parameters(setup.params_path())["arm_driver"]["control_rate_hz"])
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return values, control_rate


CONTROL_KEYS = (
    ("command_rate_hz", "achieved Hz", "{:.1f}"),
    ("command_period_error_p50_ms", "period error p50 ms", "{:.3f}"),
    ("command_period_error_p99_ms", "p99 ms", "{:.3f}"),
    ("command_period_error_max_ms", "max ms", "{:.2f}"),
    ("command_period_error_source_p99_ms", "p99 at the driver ms", "{:.3f}"),
)


def control_loop_table(results: dict[str, dict[str, dict]]) -> str:
    """One row per (rate [and loop], condition): the driver's timing at the receiver and every node's CPU."""
    nodes = sorted({n for runs in results.values() for run in runs.values() for n in run["nodes"]})
    header = ["rate Hz (loop)", "condition", *(label for _, label, _ in CONTROL_KEYS), *(f"CPU % {n}" for n in nodes)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for rate, runs in results.items():
        for condition, run in runs.items():
            cells = [rate, condition, *(fmt.format(run[key]) for key, _, fmt in CONTROL_KEYS)]
            cells += [f"{run['nodes'].get(n, {}).get('cpu_percent', float('nan')):.1f}" for n in nodes]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_rates(text: str) -> list[float]:
    try:
        rates = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rates: comma-separated Hz values, got {text!r}") from None
    if not rates or any(not 10.0 <= r <= 2000.0 for r in rates):
        raise argparse.ArgumentTypeError(f"--rates: each within 10-2000 Hz (the driver's range), got {text!r}")
    return rates


def parse_loops(text: str) -> tuple[str, ...]:
    """``streamer,thread`` -> ('streamer', 'thread'); each one of the driver's control_loop choices."""
    loops = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [loop for loop in loops if loop not in CONTROL_LOOPS]
    if not loops or unknown:
        choices = ", ".join(CONTROL_LOOPS)
        raise argparse.ArgumentTypeError(f"--loops: comma-separated, each one of {choices}; got {text!r}")
    return loops


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per condition")
    parser.add_argument(
        "--rates",
        type=parse_rates,
        default=None,
        help="comma-separated driver control rates (e.g. 200,500,1000): the measurement once per rate, "
        "and a control-loop table side by side (default: the parameter file's rate only)",
    )
    parser.add_argument(
        "--realtime-priority", type=int, default=None, help="start the driver with realtime_priority:=N (SCHED_FIFO)"
    )
    parser.add_argument(
        "--probe-realtime-priority",
        type=int,
        default=0,
        help="SCHED_FIFO priority of the measuring probe's threads (the receiver of the commands; 0: normal)",
    )
    parser.add_argument(
        "--compare-timer",
        action="store_true",
        help="also measure every rate with the driver's previous loop (control_loop:=rclpy_timer), side by side",
    )
    parser.add_argument(
        "--loops",
        type=parse_loops,
        default=None,
        help="control loops to measure side by side at every rate, e.g. streamer,thread (default: the setup's)",
    )
    parser.add_argument(
        "--load-processes",
        type=int,
        default=os.cpu_count() or 2,
        help="busy processes for the loaded run (default: one per core; 0: skip it)",
    )
    parser.add_argument("--episode-seconds", type=float, default=8.0, help="reset the sim episode this often")
    parser.add_argument("--seed", type=int, default=2_000_000, help="seed of the first episode")
    parser.add_argument(
        "--out", type=Path, default=None, help="write pipeline.json, pipeline.md and pipeline_nodes.log here"
    )
    parser.add_argument("assignments", nargs="*", metavar="name:=value", help="sim_arm launch arguments")


def cli_main(args: argparse.Namespace) -> int:
    values, control_rate = sim_suite_settings(args.assignments)
    if args.realtime_priority is not None:
        values["realtime_priority"] = str(args.realtime_priority)
    if "control_rate_hz" in values:
        control_rate = float(values["control_rate_hz"])
    rates = args.rates or [control_rate]
    loops = args.loops or (values.get("control_loop", "streamer"),)
    if args.compare_timer and "rclpy_timer" not in loops:
        loops = (*loops, "rclpy_timer")
    results: dict[str, dict] = {}
    headings: dict[str, str] = {}
    logs: list[str] = []
    for rate in rates:
        for control_loop in loops:
            key = f"{rate:g}" if len(loops) == 1 else f"{rate:g} {control_loop}"
            print(f"== driver at {rate:g} Hz, control_loop {control_loop}", flush=True)
            runs, log = run_suite(
                {**values, "control_rate_hz": repr(float(rate)), "control_loop": control_loop},
                lambda suite, probe, rate=rate: measure_idle_and_loaded(
                    suite, probe, args.seconds, args.load_processes, args.episode_seconds, args.seed, rate
                ),
                args.probe_realtime_priority,
            )
            heading = f"{rate:g} Hz" if len(loops) == 1 else f"{rate:g} Hz, control_loop {control_loop}"
            ran = "/".join(sorted({str(run.get("driver", {}).get("control_loop")) for run in runs.values()}))
            if ran != control_loop:  # e.g. streamer without its library: the driver fell back to thread
                print(f"WARNING: asked for control_loop {control_loop}, the driver's /diagnostics said {ran} "
                      "(its log is in pipeline_nodes.log)", flush=True)
                key, heading = f"{key} (ran {ran})", f"{heading} (the driver ran {ran})"
            results[key], headings[key] = runs, heading
            logs.append(f"== {key}\n{log}")
            print(pipeline_table(runs), flush=True)
    control = control_loop_table(results)
    print("\ncontrol loop (period error = |command interval - 1/rate| at the receiver):\n" + control)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = next(iter(results.values())) if len(results) == 1 else results
        (args.out / "pipeline.json").write_text(json.dumps(payload, indent=2))
        tables = "\n\n".join(f"### {headings[key]}\n\n{pipeline_table(runs)}" for key, runs in results.items())
        (args.out / "pipeline.md").write_text(tables + "\n\n### control loop\n\n" + control + "\n")
        (args.out / "pipeline_nodes.log").write_text("\n".join(logs))
    return 0


def add_soak_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    parser.add_argument("--episode-seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=3_000_000)
    parser.add_argument("--out", type=Path, default=None, help="write soak.json and the node log here")
    parser.add_argument("assignments", nargs="*", metavar="name:=value", help="sim_arm launch arguments")


def soak_main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    values, control_rate = sim_suite_settings(args.assignments)
    total = args.minutes * 60.0
    window = min(60.0, total / 3)

    def body(suite: NodeSuite, probe: Probe) -> dict:
        bar = tqdm(total=int(total), unit="s", desc="soak")
        done = [0.0]

        def progress(elapsed: float) -> None:
            bar.update(int(done[0] + elapsed) - bar.n)

        first = measure(suite, probe, window, args.episode_seconds, args.seed, control_rate, progress)
        done[0] += first["seconds"]
        middle = measure(
            suite, probe, total - 2 * window, args.episode_seconds, args.seed + 1000, control_rate, progress
        )
        done[0] += middle["seconds"]
        last = measure(suite, probe, window, args.episode_seconds, args.seed + 2000, control_rate, progress)
        bar.close()
        with probe.lock:
            diagnostics = dict(probe.diagnostics)
        return {
            "first_minute": first,
            "last_minute": last,
            "diagnostics_at_end": diagnostics,
            "dead_nodes": suite.dead_nodes(),
        }

    result, log = run_suite(values, body)
    error_lines = [line for line in log.splitlines() if "[ERROR]" in line or "Traceback" in line]
    result["error_lines"] = error_lines[:50]
    print(pipeline_table({"first minute": result["first_minute"], "last minute": result["last_minute"]}))
    print("\n| node | RSS MiB first minute start | RSS MiB end |\n|---|---:|---:|")
    for node, stats in result["first_minute"]["nodes"].items():
        end = result["last_minute"]["nodes"].get(node, {}).get("rss_end_mib", float("nan"))
        print(f"| {node} | {stats['rss_start_mib']:.0f} | {end:.0f} |")
    camera = result["diagnostics_at_end"].get(status_name("camera_subscriber"), {})
    policy = result["diagnostics_at_end"].get(status_name("policy"), {})
    print(
        f"\nframes dropped by the camera node: {camera.get('frames_dropped', '?')}, frames skipped by the policy: "
        f"{policy.get('frames_skipped', '?')}, error lines: {len(error_lines)}, dead nodes: {result['dead_nodes']}"
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "soak.json").write_text(json.dumps(result, indent=2, default=str))
        (args.out / "soak_nodes.log").write_text(log)
    return 0 if not result["dead_nodes"] and not error_lines else 1
