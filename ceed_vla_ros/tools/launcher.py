"""``ceed-vla launch <setup> [name:=value ...]``: start a bring-up without ``ros2 launch``.

Starts every node of :data:`ceed_vla_ros.bringup.SETUPS` ``[setup]`` as its own process (the
installed executables, the same parameter file and arguments as the launch file), prefixes their
output with the node name and stops all of them cleanly on Ctrl-C / SIGTERM. A node that exits on
its own is handled as ``ros2 launch`` handles it (see :mod:`ceed_vla_ros.bringup`): the camera
subscriber and the policy are restarted after ``RESPAWN_DELAY_S``; the exit of the arm driver,
the simulated arm or the episode recorder stops the others and the runner exits with code 1; the
exit of a node that does a finite job (``finishes``: the sim episode runner) stops the others and
the runner exits with its code (0: done).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ceed_vla_ros.bringup import RESPAWN_DELAY_S, SETUPS, Setup, get_setup, node_ros_arguments, parse_assignments
from ceed_vla_ros.nodes.interfaces import stop_requested

STOP_TIMEOUT_S = 10.0


class NodeSuite:
    """The processes of one setup. Use as a context manager, or call start() / stop()."""

    def __init__(self, setup: Setup, values: dict[str, str] | None = None, *, config_dir: Path | None = None,
                 env: dict[str, str] | None = None, output=None) -> None:
        self.setup = setup
        self.values = dict(values or {})
        self.config_dir = config_dir
        self.env = env
        self.output = output if output is not None else sys.stdout
        self.processes: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._print_lock = threading.Lock()

    def commands(self) -> dict[str, list[str]]:
        bin_dir = Path(sys.executable).parent
        return {
            node.name: [str(bin_dir / node.executable),
                        *node_ros_arguments(self.setup, node, self.values, self.config_dir)]
            for node in self.setup.nodes
        }

    def start(self) -> None:
        for name in self.commands():
            self.start_node(name)

    def start_node(self, name: str) -> subprocess.Popen:
        """Start (or start again, once it has exited) the node ``name`` of the setup."""
        command = self.commands()[name]
        if not Path(command[0]).exists():
            self.stop()
            raise FileNotFoundError(f"executable {command[0]} not found: is ceed_vla_ros installed?")
        if name in self.processes and self.processes[name].poll() is None:
            raise RuntimeError(f"{name} is still running")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1, env=self.env, start_new_session=True)
        self.processes[name] = process
        thread = threading.Thread(target=self._forward_output, args=(name, process), daemon=True)
        thread.start()
        self._threads.append(thread)
        return process

    def _forward_output(self, name: str, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._print_lock:
                print(f"[{name}] {line}", end="", file=self.output, flush=True)

    def dead_nodes(self) -> dict[str, int]:
        """Nodes whose process has exited, with their exit codes."""
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """SIGINT every running node, wait, SIGKILL what is left; return the exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with self._print_lock:
                    print(f"[launch] {name} did not stop within {timeout_s:.0f} s: killing it", file=self.output)
                process.kill()
                process.wait()
        for thread in self._threads:
            thread.join(timeout=2.0)
        return {name: p.returncode for name, p in self.processes.items()}

    def __enter__(self) -> NodeSuite:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run(setup: Setup, values: dict[str, str], respawn_delay_s: float = RESPAWN_DELAY_S) -> int:
    """Run until Ctrl-C / SIGTERM (exit 0) or until a node that is not respawned exits (exit 1)."""
    suite = NodeSuite(setup, values)
    respawn = {node.name: node.respawn for node in setup.nodes}
    finishes = {node.name: node.finishes for node in setup.nodes}
    restart_at: dict[str, float] = {}
    with stop_requested() as stop:
        suite.start()
        print(f"[launch] {setup.name}: started {', '.join(suite.processes)}; Ctrl-C stops all", flush=True)
        while not stop.wait(0.2):
            for name, code in suite.dead_nodes().items():
                if finishes[name]:
                    print(f"[launch] {name} {'finished' if code == 0 else f'failed (exit code {code})'}: "
                          "stopping the others", file=sys.stderr if code else sys.stdout, flush=True)
                    suite.stop()
                    return 0 if code == 0 else 1
                if not respawn[name]:
                    print(f"[launch] {name} exited with code {code}: stopping the others", file=sys.stderr, flush=True)
                    suite.stop()
                    return 1
                if name not in restart_at:
                    print(f"[launch] {name} exited with code {code}: restarting it in {respawn_delay_s:.0f} s",
                          file=sys.stderr, flush=True)
                    restart_at[name] = time.monotonic() + respawn_delay_s
                elif time.monotonic() >= restart_at[name]:
                    del restart_at[name]
                    suite.start_node(name)
                    print(f"[launch] {name} restarted", flush=True)
        codes = suite.stop()
    print(f"[launch] stopped: {', '.join(f'{n}={c}' for n, c in codes.items())}", flush=True)
    return 0


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("setup", choices=sorted(SETUPS), help="which bring-up to start")
    parser.add_argument("assignments", nargs="*", metavar="name:=value",
                        help="launch arguments, as for ros2 launch (see --list-arguments)")
    parser.add_argument("--list-arguments", action="store_true", help="print the setup's launch arguments and exit")


def cli_main(args: argparse.Namespace) -> int:
    setup = get_setup(args.setup)
    if args.list_arguments:
        from ceed_vla_ros.bringup import argument_default
        for argument in setup.arguments:
            assignment = f"{argument.name}:={argument_default(setup, argument)}"
            print(f"{assignment:<40} {argument.description}")
        return 0
    try:
        values = parse_assignments(args.assignments, setup)
    except ValueError as error:
        print(f"ceed-vla launch: {error}", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return run(setup, values)
