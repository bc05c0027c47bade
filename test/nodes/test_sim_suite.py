"""The whole sim suite as users start it (``ceed-vla launch sim_arm``): the loop closes over DDS,
Ctrl-C stops everything cleanly, a node that dies takes the runner down with a non-zero exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC, FORWARD_COMMAND_TOPIC, JOINT_STATES_TOPIC


def node_pids(runner_pid: int) -> dict[str, int]:
    """Running child processes of the runner, by executable name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent != runner_pid or not argv[0]:
            continue
        # console scripts run as "<venv>/bin/python <venv>/bin/<executable> --ros-args ..."
        words = [Path(a.decode(errors="replace")).name for a in argv]
        executable = words[1] if words[0].startswith("python") and len(words) > 1 else words[0]
        found[executable] = int(entry.name)
    return found


class Watcher:
    def __init__(self, node) -> None:
        self.lock = threading.Lock()
        self.actions: list[ActionTokens] = []
        self.commands: list[np.ndarray] = []
        self.joints: list[np.ndarray] = []
        node.create_subscription(ActionTokens, ACTIONS_TOPIC, lambda m: self._add(self.actions, m), 10)
        node.create_subscription(Float64MultiArray, FORWARD_COMMAND_TOPIC,
                                 lambda m: self._add(self.commands, np.array(m.data)), 100)
        node.create_subscription(
            JointState, JOINT_STATES_TOPIC, lambda m: self._add(self.joints, np.array(m.position)), 100
        )

    def _add(self, store, item) -> None:
        with self.lock:
            store.append(item)

    def snapshot(self):
        with self.lock:
            return list(self.actions), list(self.commands), list(self.joints)


@pytest.fixture
def suite(tiny_model_dir, ros_node, tmp_path):
    log = open(tmp_path / "launch.log", "w+")
    runner = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ceed-vla"),
            "launch",
            "sim_arm",
            f"model_dir:={tiny_model_dir}",
            "checkpoint:=tiny_sim",
            "decoding_mode:=early_exit",
            "early_exit_steps:=1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watcher = Watcher(ros_node)

    def output() -> str:
        log.flush()
        log.seek(0)
        return log.read()

    yield runner, watcher, output, runner.pid
    leftovers = node_pids(runner.pid)
    if runner.poll() is None:
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=20)
    for pid in leftovers.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_loop_closes_and_ctrl_c_stops_every_node(suite, wait_until):
    runner, watcher, output, runner_pid = suite
    assert wait_until(lambda: len(watcher.snapshot()[0]) >= 3, 90.0), output()
    actions, commands, joints = watcher.snapshot()
    assert wait_until(lambda: len(watcher.snapshot()[1]) > len(commands) + 50, 10.0), output()
    # the arm follows the driver's commands: the joints move
    assert wait_until(lambda: np.ptp(np.array(watcher.snapshot()[2][-200:]), axis=0).max() > 1e-3, 20.0), output()
    assert actions[-1].checkpoint_id.startswith("tiny_sim-") and actions[-1].iterations == 1
    assert set(node_pids(runner_pid)) == {"sim_arm", "camera_subscriber", "policy_node", "arm_driver"}
    children = node_pids(runner_pid)
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=30) == 0, output()
    assert not any(Path(f"/proc/{pid}").exists() for pid in children.values())
    assert "Traceback" not in output(), output()


def test_a_dead_policy_is_restarted_and_a_dead_driver_stops_the_suite(suite, wait_until):
    """The bring-up's one policy for a node that exits (bringup.NodeLaunch.respawn), in the runner."""
    runner, watcher, output, runner_pid = suite
    assert wait_until(lambda: "policy_node" in node_pids(runner_pid), 30.0), output()
    assert wait_until(lambda: len(watcher.snapshot()[0]) >= 1, 90.0), output()
    first_policy = node_pids(runner_pid)["policy_node"]
    os.kill(first_policy, signal.SIGKILL)
    assert wait_until(lambda: "policy restarted" in output(), 20.0), output()
    restarted = node_pids(runner_pid).get("policy_node")
    assert restarted not in (None, first_policy) and runner.poll() is None, output()
    chunks = len(watcher.snapshot()[0])
    assert wait_until(lambda: len(watcher.snapshot()[0]) > chunks + 2, 90.0), "no actions from the restarted policy"
    children = node_pids(runner_pid)
    os.kill(children.pop("arm_driver"), signal.SIGKILL)
    assert runner.wait(timeout=30) == 1, output()
    assert "arm_driver exited with code -9: stopping the others" in output(), output()
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children.values()), 15.0)
