"""What a lossy or delayed policy -> driver link does to the running sim suite.

``ceed-vla bench-link`` starts the ``sim_arm`` bring-up with the policy's ``/actions`` remapped to
``/actions_raw`` and the link relay (``nodes/link_relay.py``) in between, then, for each link
setting (``drop:DELAY_MS[:JITTER_MS]``, changed at run time on the relay), runs ``--episodes``
reach episodes of ``--episode-seconds`` each on consecutive seeds and reports: chunks the policy
published, chunks delivered to the driver, chunks the driver refused (stale: every step already
past; or not newer than the last one; both counted until one diagnostics period after the last
episode), the share of time the driver held the arm (watchdog), the
age of the delivered chunks (driver receive time - image stamp), and episode success with its 95 %
Wilson interval. Same seeds for every setting, so the rows differ only by the link.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import threading
import time
from pathlib import Path

import numpy as np

from ceed_vla_ros.bringup import SETUPS, LaunchArgument, NodeLaunch, parse_assignments
from ceed_vla_ros.tools.launcher import NodeSuite
from ceed_vla_ros.tools.statistics import format_rate

RAW_TOPIC = "/actions_raw"
DEFAULT_SETTINGS = ("0:0", "0.2:0", "0.5:0", "0:150", "0:150:150", "0:450")


def linked_setup():
    """sim_arm with the link relay between the policy and the driver."""
    base = SETUPS["sim_arm"]
    relay = NodeLaunch("link_relay", "link_relay")
    nodes = tuple(n for n in base.nodes if n.name != "arm_driver") + (relay,) + tuple(
        n for n in base.nodes if n.name == "arm_driver")
    remap = LaunchArgument("policy_actions_topic", "where the policy publishes its chunks",
                           remap=("policy", "/actions"), remap_default=RAW_TOPIC)
    return dataclasses.replace(base, name="sim_arm_link", nodes=nodes, arguments=base.arguments + (remap,))


def parse_setting(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(":")]
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: expected DROP:DELAY_MS[:JITTER_MS], e.g. 0.2:150")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else 0.0


def held_share(transitions: list[tuple[float, bool]], start: float, end: float) -> float:
    """Share of [start, end] spent holding, from (time, holding) transitions in time order (the state
    before the first one inside the window is the last one before it; none: not holding)."""
    state = next((h for t, h in reversed(transitions) if t <= start), False)
    held, since = 0.0, start
    for t, h in transitions:
        if start < t < end:
            held += (t - since) if state else 0.0
            state, since = h, t
    held += (end - since) if state else 0.0
    return held / (end - start)


class LinkProbe:
    def __init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import SetParameters
        from std_msgs.msg import Bool

        from ceed_vla_ros.msg import ActionTokens
        from ceed_vla_ros.nodes.interfaces import (
            ACTIONS_TOPIC,
            LATCHED_QOS,
            SIM_RESET_SERVICE,
            SIM_SUCCESS_TOPIC,
            probe_node,
            stamp_to_seconds,
        )
        from ceed_vla_ros.srv import ResetEpisode

        self.lock = threading.Lock()
        self.raw = 0
        self.ages_ms: list[float] = []
        self.success = False
        self._armed = False  # True once the sim reported "not succeeded" after the last reset
        self.holding: list[tuple[float, bool]] = []
        self.refused = 0

        def on_delivered(msg) -> None:
            with self.lock:
                self.ages_ms.append((time.time() - stamp_to_seconds(msg.header.stamp)) * 1e3)

        def on_raw(msg) -> None:
            with self.lock:
                self.raw += 1

        def on_success(msg) -> None:
            with self.lock:  # a "true" still in flight from the previous episode must not count
                self._armed = self._armed or not msg.data
                self.success = self.success or (self._armed and msg.data)

        def on_holding(msg) -> None:
            with self.lock:
                self.holding.append((time.monotonic(), msg.data))

        def on_diagnostics(msg) -> None:
            for status in msg.status:
                if status.name.endswith(": arm_driver"):
                    values = {kv.key: kv.value for kv in status.values}
                    with self.lock:
                        self.refused = int(values.get("chunks_refused", self.refused))

        def subscribe(node) -> None:
            node.create_subscription(ActionTokens, ACTIONS_TOPIC, on_delivered, 10)
            node.create_subscription(ActionTokens, RAW_TOPIC, on_raw, 10)
            node.create_subscription(Bool, SIM_SUCCESS_TOPIC, on_success, 10)
            node.create_subscription(Bool, "/arm_driver/holding", on_holding, LATCHED_QOS)
            node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)

        self._context = probe_node("ceed_vla_link_probe", setup=subscribe)
        self.node = self._context.__enter__()
        self.reset_client = self.node.create_client(ResetEpisode, SIM_RESET_SERVICE)
        self.parameter_client = self.node.create_client(SetParameters, "/link_relay/set_parameters")
        self.ResetEpisode, self.SetParameters = ResetEpisode, SetParameters

    def _call(self, client, request, timeout_s: float = 20.0):
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            raise RuntimeError(f"no answer from {client.srv_name}")
        return future.result()

    def set_link(self, drop: float, delay_ms: float, jitter_ms: float) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue

        request = self.SetParameters.Request(parameters=[
            Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value))
            for name, value in (("drop_probability", drop), ("delay_ms", delay_ms), ("jitter_ms", jitter_ms))])
        response = self._call(self.parameter_client, request)
        failed = [r.reason for r in response.results if not r.successful]
        if failed:
            raise RuntimeError(f"link_relay refused the setting: {failed}")

    def reset(self, seed: int) -> None:
        response = self._call(self.reset_client, self.ResetEpisode.Request(task="reach", seed=seed, colour=""))
        if not response.success:
            raise RuntimeError(f"reset to seed {seed} failed: {response.message}")
        with self.lock:
            self.success = self._armed = False

    def held_share(self, start: float, end: float) -> float:
        with self.lock:
            return held_share(list(self.holding), start, end)

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def measure_setting(probe: LinkProbe, setting, episodes: int, episode_seconds: float, seed: int) -> dict:
    drop, delay_ms, jitter_ms = setting
    probe.set_link(drop, delay_ms, jitter_ms)
    time.sleep(max(1.0, (delay_ms + jitter_ms) / 1e3 + 0.5))  # chunks still in flight drain first
    with probe.lock:
        raw0, refused0 = probe.raw, probe.refused
        probe.ages_ms.clear()
    start, successes = time.monotonic(), 0
    for episode in range(episodes):
        probe.reset(seed + episode)
        time.sleep(episode_seconds)
        with probe.lock:
            successes += bool(probe.success)
    end = time.monotonic()
    # one more diagnostics period for the refusal counter; chunks delivered meanwhile count too
    time.sleep(1.2)
    with probe.lock:
        ages = list(probe.ages_ms)
        raw, refused = probe.raw - raw0, probe.refused - refused0
    return {"drop_probability": drop, "delay_ms": delay_ms, "jitter_ms": jitter_ms, "episodes": episodes,
            "successes": successes, "chunks_published": raw, "chunks_delivered": len(ages),
            "chunks_refused": refused, "held_share": probe.held_share(start, end),
            "age_p50_ms": float(np.percentile(ages, 50)) if ages else float("nan"),
            "age_p99_ms": float(np.percentile(ages, 99)) if ages else float("nan")}


def link_table(rows: list[dict]) -> str:
    lines = ["| link (loss, delay + jitter) | chunks published | delivered | refused by the driver | time held | "
             "chunk age at the driver p50 / p99 ms | reach success |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['drop_probability']:.0%}, {r['delay_ms']:g} + U(0, {r['jitter_ms']:g}) ms | {r['chunks_published']} "
            f"| {r['chunks_delivered']} | {r['chunks_refused']} | {r['held_share']:.0%} | "
            f"{r['age_p50_ms']:.0f} / {r['age_p99_ms']:.0f} | {format_rate(r['successes'], r['episodes'])} |")
    return "\n".join(lines)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", nargs="+", type=parse_setting,
                        default=[parse_setting(s) for s in DEFAULT_SETTINGS], metavar="DROP:DELAY_MS[:JITTER_MS]",
                        help=f"link settings (default: {' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--episodes", type=int, default=10, help="reach episodes per setting")
    parser.add_argument("--episode-seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=4_000_000, help="seed of the first episode (same for every row)")
    parser.add_argument("--out", type=Path, default=None, help="write link.json, link.md and the node log here")
    parser.add_argument("assignments", nargs="*", metavar="name:=value", help="sim_arm launch arguments")


def cli_main(args: argparse.Namespace) -> int:
    import os

    from tqdm import tqdm

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    setup = linked_setup()
    values = parse_assignments(args.assignments, setup)
    log, rows = io.StringIO(), []
    with NodeSuite(setup, values, output=log):
        probe = LinkProbe()
        try:
            deadline = time.monotonic() + 120.0
            while probe.raw < 5:
                if time.monotonic() > deadline:
                    raise RuntimeError("no chunks from the policy within 120 s; node log:\n" + log.getvalue()[-3000:])
                time.sleep(0.2)
            for setting in tqdm(args.settings, desc="link settings", unit="setting"):
                rows.append(measure_setting(probe, setting, args.episodes, args.episode_seconds, args.seed))
        finally:
            probe.close()
    table = link_table(rows)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "link.json").write_text(json.dumps({"command": args.command_line, "rows": rows}, indent=2))
        (args.out / "link.md").write_text(table + "\n")
        (args.out / "link_nodes.log").write_text(log.getvalue())
    return 0
