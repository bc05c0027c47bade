"""``ceed-vla demo``: the sim suite end to end, a handful of episodes with live progress, a summary.

Starts the ``sim_arm`` bring-up (simulated arm, camera subscriber, policy, arm driver; the same
processes as ``ceed-vla launch sim_arm``), then for each episode resets the simulated arm to a seed
through ``/sim_arm/reset_episode``, waits until ``/sim_arm/success`` turns true or the episode times
out, and shows success so far, the policy's chunk rate and its Jacobi iterations from ``/actions``.
Node output goes to a log file whose path is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from ceed_vla_ros.bringup import get_setup
from ceed_vla_ros.tools.launcher import NodeSuite


@dataclass
class ActionLog:
    """Chunks seen on /actions during one episode."""

    stamps: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)

    def rate_hz(self) -> float:
        if len(self.stamps) < 2:
            return 0.0
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])


@dataclass
class EpisodeResult:
    seed: int
    instruction: str
    success: bool
    seconds: float
    actions: ActionLog


def run_episodes(args: argparse.Namespace, progress) -> list[EpisodeResult]:
    """Drive the already running suite through the episodes (a probe node in this process)."""
    from ceed_vla_ros.nodes.interfaces import probe_node

    with probe_node("ceed_vla_demo") as node:
        return _drive_episodes(node, args, progress)


def _drive_episodes(node, args: argparse.Namespace, progress) -> list[EpisodeResult]:
    from std_msgs.msg import Bool

    from ceed_vla_ros.msg import ActionTokens
    from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC, SIM_RESET_SERVICE, SIM_SUCCESS_TOPIC
    from ceed_vla_ros.nodes.rclpy_compat import call_service
    from ceed_vla_ros.srv import ResetEpisode

    lock = threading.Lock()
    state = {"success": False, "armed": False, "log": ActionLog()}

    def on_success(msg: Bool) -> None:
        # /sim_arm/success is in order but carries no stamp: a True still in flight from the previous
        # episode could arrive after the reset. Every episode starts at the home pose (not a success),
        # so count True only after the first False that follows the reset.
        with lock:
            if not state["armed"]:
                state["armed"] = not msg.data
                return
            state["success"] = state["success"] or msg.data

    def on_actions(msg: ActionTokens) -> None:
        with lock:
            log = state["log"]
            log.stamps.append(time.monotonic())
            log.iterations.append(msg.iterations)
            log.decode_ms.append(msg.decode_time_ms)

    node.create_subscription(Bool, SIM_SUCCESS_TOPIC, on_success, 10)
    node.create_subscription(ActionTokens, ACTIONS_TOPIC, on_actions, 10)
    reset = node.create_client(ResetEpisode, SIM_RESET_SERVICE)
    results: list[EpisodeResult] = []
    try:
        if not reset.wait_for_service(timeout_sec=args.startup_timeout):
            raise RuntimeError(f"/sim_arm/reset_episode did not appear within {args.startup_timeout:.0f} s")
        deadline = time.monotonic() + args.startup_timeout
        while time.monotonic() < deadline and not state["log"].stamps:
            time.sleep(0.1)  # the policy loads and warms up before its first chunk
        if not state["log"].stamps:
            raise RuntimeError(f"no /actions within {args.startup_timeout:.0f} s: see the node log")
        for index in range(args.episodes):
            seed = args.seed + index
            response = call_service(reset, ResetEpisode.Request(task=args.task, seed=seed, colour=""), 10.0)
            if response is None or not response.success:
                raise RuntimeError(f"reset to seed {seed} failed: {response.message if response else 'timeout'}")
            with lock:
                state["success"], state["armed"], state["log"] = False, False, ActionLog()
            started = time.monotonic()
            while time.monotonic() - started < args.episode_timeout and not state["success"]:
                time.sleep(0.05)
            with lock:
                result = EpisodeResult(seed, response.instruction, state["success"], time.monotonic() - started,
                                       state["log"])
            results.append(result)
            progress(result, results)
    finally:
        node.destroy_client(reset)
    return results


def summary_table(results: list[EpisodeResult]) -> str:
    rows = ["| episode | seed | instruction | success | time s | chunks/s | median iterations | median decode ms |",
            "|---:|---:|---|:---:|---:|---:|---:|---:|"]
    for i, r in enumerate(results, 1):
        iterations = statistics.median(r.actions.iterations) if r.actions.iterations else float("nan")
        decode = statistics.median(r.actions.decode_ms) if r.actions.decode_ms else float("nan")
        rows.append(f"| {i} | {r.seed} | {r.instruction} | {'yes' if r.success else 'no'} | {r.seconds:.1f} | "
                    f"{r.actions.rate_hz():.1f} | {iterations:.0f} | {decode:.1f} |")
    successes = sum(r.success for r in results)
    rows.append(f"\nsuccess: {successes}/{len(results)}")
    return "\n".join(rows)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=5, help="episodes to run (default 5)")
    parser.add_argument("--task", choices=("reach", "push"), default="reach")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first episode (+1 per episode)")
    parser.add_argument("--episode-timeout", type=float, default=10.0, help="seconds before an episode fails")
    parser.add_argument("--startup-timeout", type=float, default=90.0, help="seconds to wait for the suite")
    parser.add_argument("--log", default=None, help="node log file (default: a new file in the temp dir)")
    parser.add_argument("assignments", nargs="*", metavar="name:=value",
                        help="launch arguments of the sim_arm bring-up, e.g. checkpoint:=sim_teacher "
                             "decoding_mode:=ar early_exit_steps:=3")


def cli_main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ceed_vla_ros.bringup import parse_assignments

    setup = get_setup("sim_arm")
    try:
        values = parse_assignments(args.assignments, setup)
    except ValueError as error:
        print(f"ceed-vla demo: {error}", file=sys.stderr)
        return 2
    values.setdefault("task", args.task)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    log_path = args.log or tempfile.mkstemp(prefix="ceed_vla_demo_", suffix=".log")[1]
    print(f"starting the sim suite ({', '.join(n.name for n in setup.nodes)}); node log: {log_path}", flush=True)
    with open(log_path, "w") as log, NodeSuite(setup, values, output=log) as suite:
        bar = tqdm(total=args.episodes, unit="episode", desc="demo", dynamic_ncols=True)

        def progress(result: EpisodeResult, results: list[EpisodeResult]) -> None:
            successes = sum(r.success for r in results)
            iterations = result.actions.iterations
            bar.set_postfix_str(f"success {successes}/{len(results)}, policy {result.actions.rate_hz():.1f} Hz, "
                                f"iterations {statistics.median(iterations) if iterations else float('nan'):.0f}")
            bar.update(1)

        try:
            results = run_episodes(args, progress)
        except RuntimeError as error:
            bar.close()
            print(f"ceed-vla demo: {error}", file=sys.stderr)
            dead = suite.dead_nodes()
            if dead:
                print(f"nodes that exited: {dead}", file=sys.stderr)
            return 1
        bar.close()
        dead = suite.dead_nodes()
    print(summary_table(results))
    if dead:
        print(f"nodes that exited during the demo: {dead}; see {log_path}", file=sys.stderr)
        return 1
    return 0
