"""``ceed-vla bench-shutdown``: how long each node of a bring-up takes to exit after Ctrl-C.

Starts the setup's nodes as ``ceed-vla launch`` does, lets them run ``--settle-s`` seconds, sends
SIGINT to all of them at once (what a terminal's Ctrl-C does to ``ros2 launch``'s process group)
and measures, per node, the seconds from the signal to the process's exit; ``--rounds`` times.
``ros2 launch`` escalates to SIGTERM after ``sigterm_timeout`` (bringup.SIGTERM_TIMEOUT_S).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time

from ceed_vla_ros.bringup import SETUPS, SIGTERM_TIMEOUT_S, get_setup
from ceed_vla_ros.tools.launcher import NodeSuite


def measure_round(setup_name: str, settle_s: float, timeout_s: float = 30.0) -> dict[str, float]:
    """{node: seconds from SIGINT to exit} for one start / settle / Ctrl-C round."""
    with open(os.devnull, "w") as sink:
        suite = NodeSuite(get_setup(setup_name), {}, output=sink)
        suite.start()
        try:
            time.sleep(settle_s)
            start = time.monotonic()
            for process in suite.processes.values():
                process.send_signal(signal.SIGINT)
            exited: dict[str, float] = {}
            while len(exited) < len(suite.processes) and time.monotonic() - start < timeout_s:
                for name, process in suite.processes.items():
                    if name not in exited and process.poll() is not None:
                        exited[name] = time.monotonic() - start
                time.sleep(0.005)
        finally:
            suite.stop()
    return exited


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--setup", choices=sorted(SETUPS), default="sim_arm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle-s", type=float, default=20.0, help="seconds the nodes run before Ctrl-C")


def cli_main(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    times: dict[str, list[float]] = {}
    for index in range(args.rounds):
        exited = measure_round(args.setup, args.settle_s)
        print(f"round {index + 1}: " + ", ".join(f"{n} {t:.2f} s" for n, t in exited.items()), flush=True)
        for name, seconds in exited.items():
            times.setdefault(name, []).append(seconds)
    print(f"\nseconds from SIGINT to exit over {args.rounds} rounds (ros2 launch sends SIGTERM after "
          f"{SIGTERM_TIMEOUT_S:.0f} s):")
    for name, values in times.items():
        print(f"  {name:<18} median {statistics.median(values):.2f}  max {max(values):.2f}")
    return 0
