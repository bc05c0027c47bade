"""Faults in the running sim suite (real processes, real DDS): nothing unsafe reaches the arm and
the suite recovers when a node comes back, without manual steps.

One suite runs for the whole module (start-up costs seconds); the tests run in file order and each
leaves every node running again.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from std_msgs.msg import Bool, Float64MultiArray

from ceed_vla_ros.bringup import get_setup
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC, FORWARD_COMMAND_TOPIC
from ceed_vla_ros.tools.launcher import NodeSuite

WATCHDOG_S = 0.5  # config/sim_arm.yaml
CONTROL_PERIOD_S = 1.0 / 200.0
BRAKING_S = 2.0 / 20.0  # the longest stop: max_velocity / max_acceleration in config/sim_arm.yaml


class Recorder:
    """Receive times of /actions and of the driver's commands, and the latest diagnostics."""

    def __init__(self, node) -> None:
        self.lock = threading.Lock()
        self.action_times: list[float] = []
        self.commands: list[tuple[float, np.ndarray]] = []
        self.diagnostics: dict[str, object] = {}
        self.holding: list[tuple[float, float, bool]] = []  # (monotonic, wall clock, holding)
        self.log_lines: list[tuple[float, str, str]] = []  # (stamp on the sender's wall clock, logger, text)
        latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(Bool, "/arm_driver/holding", self._on_holding, latched)
        node.create_subscription(ActionTokens, ACTIONS_TOPIC, self._on_actions, 10)
        node.create_subscription(Float64MultiArray, FORWARD_COMMAND_TOPIC, self._on_command, 100)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        # /rosout is published transient-local: a line logged before this probe discovered its sender
        # still arrives, with the stamp of when it was logged.
        rosout = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE,
                            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(Log, "/rosout", self._on_log, rosout)

    def _on_actions(self, msg) -> None:
        with self.lock:
            self.action_times.append(time.monotonic())

    def _on_command(self, msg) -> None:
        with self.lock:
            self.commands.append((time.monotonic(), np.array(msg.data)))

    def _on_holding(self, msg) -> None:
        with self.lock:
            self.holding.append((time.monotonic(), time.time(), msg.data))

    def _on_log(self, msg) -> None:
        with self.lock:
            self.log_lines.append((msg.stamp.sec + msg.stamp.nanosec * 1e-9, msg.name, msg.msg))

    def logged_after(self, wall: float, logger: str, text: str) -> float | None:
        """Wall-clock stamp of the first line from ``logger`` containing ``text`` logged after ``wall``."""
        with self.lock:
            return min((t for t, name, line in self.log_lines if t > wall and name == logger and text in line),
                       default=None)

    def following(self) -> bool:
        """The driver follows actions (its latest ~/holding is false)."""
        with self.lock:
            return bool(self.holding) and not self.holding[-1][2]

    def hold_started_after(self, t: float) -> float | None:
        with self.lock:
            return next((when for when, _, holding in self.holding if when > t and holding), None)

    def _on_diagnostics(self, msg) -> None:
        with self.lock:
            for status in msg.status:
                self.diagnostics[status.name] = status

    def actions_after(self, t: float) -> list[float]:
        with self.lock:
            return [a for a in self.action_times if a > t]

    def commands_after(self, t: float) -> list[tuple[float, np.ndarray]]:
        with self.lock:
            return [c for c in self.commands if c[0] > t]


@pytest.fixture(scope="module")
def suite(tiny_model_dir, module_ros_node):
    log = io.StringIO()
    values = {"model_dir": str(tiny_model_dir), "checkpoint": "tiny_sim", "early_exit_steps": "1"}
    with NodeSuite(get_setup("sim_arm"), values, output=log) as running:
        recorder = Recorder(module_ros_node)
        yield running, recorder, log


def wait_for_following(recorder, since: float, wait_until, timeout: float = 60.0) -> bool:
    """Fresh actions arrive after ``since`` and the driver follows them."""
    return wait_until(lambda: len(recorder.actions_after(since)) >= 2 and recorder.following(), timeout)


def assert_held(recorder, last_action: float, until: float) -> None:
    """The driver starts holding at the watchdog deadline (+ two control periods), brakes within its
    acceleration limits, and from the deadline + the braking time bound (max_velocity /
    max_acceleration) + two periods on every command is exactly the same."""
    deadline = last_action + WATCHDOG_S + 2 * CONTROL_PERIOD_S
    hold = recorder.hold_started_after(last_action)
    assert hold is not None and hold <= deadline + 0.05, (  # 0.05 s: DDS delivery to this probe
        f"hold reported {None if hold is None else round(hold - last_action, 3)} s after the last action")
    held = [c for t, c in recorder.commands_after(deadline + BRAKING_S + 0.05) if t < until]
    assert len(held) > 50, "the driver stopped sending commands instead of holding"
    assert all(np.array_equal(c, held[0]) for c in held), "commands kept changing after the watchdog deadline"


def test_the_loop_runs(suite, wait_until):
    running, recorder, log = suite
    assert wait_for_following(recorder, 0.0, wait_until, 120.0), log.getvalue()


def test_policy_killed_mid_episode_the_driver_holds_and_resumes_only_on_fresh_actions(suite, wait_until):
    running, recorder, log = suite
    assert wait_for_following(recorder, time.monotonic(), wait_until), log.getvalue()
    os.kill(running.processes["policy"].pid, signal.SIGKILL)
    running.processes["policy"].wait(timeout=10)
    last_action = max(recorder.action_times)
    assert wait_until(lambda: False, 1.5) is False  # let the watchdog expire and the hold accumulate
    assert_held(recorder, last_action, time.monotonic())
    assert wait_until(lambda: "watchdog" in recorder.diagnostics["ceed_vla_ros: arm_driver"].message, 5.0)
    restarted, restarted_wall = time.monotonic(), time.time()
    running.start_node("policy")
    assert wait_for_following(recorder, restarted, wait_until, 90.0), log.getvalue()
    hold = recorder.hold_started_after(last_action)
    resumed, resumed_wall = next((when, wall) for when, wall, holding in recorder.holding
                                 if when > hold and not holding)
    # Held for the whole time the policy was dead: nothing but the restarted policy moves the arm.
    assert resumed > restarted, "motion resumed before the policy was restarted"
    # ... and only on its fresh chunks: the driver may move only after the restarted policy had its
    # checkpoint loaded (so could publish at all). Both times are on this machine's wall clock, taken
    # by the senders, so how late this probe discovers the new policy does not matter.
    loaded = recorder.logged_after(restarted_wall, "policy", "loaded ")
    assert loaded is not None, "the restarted policy never logged that it loaded its checkpoint"
    assert resumed_wall > loaded, f"motion resumed {loaded - resumed_wall:.3f} s before the policy had loaded"


def test_camera_stall_stops_the_actions_and_the_driver_holds(suite, wait_until):
    running, recorder, log = suite
    assert wait_for_following(recorder, time.monotonic(), wait_until), log.getvalue()
    running.processes["camera_subscriber"].send_signal(signal.SIGINT)
    assert running.processes["camera_subscriber"].wait(timeout=15) == 0
    stopped = time.monotonic()
    assert wait_until(lambda: False, 1.5) is False
    assert recorder.actions_after(stopped + 0.5) == [], "actions kept coming without camera frames"
    assert_held(recorder, max(recorder.action_times), time.monotonic())
    restarted = time.monotonic()
    running.start_node("camera_subscriber")
    assert wait_for_following(recorder, restarted, wait_until), log.getvalue()


@pytest.mark.parametrize("name", ["arm_driver", "sim_arm"])
def test_restarting_a_node_while_the_others_run_recovers_the_loop(suite, wait_until, name):
    running, recorder, log = suite
    running.processes[name].send_signal(signal.SIGINT)
    assert running.processes[name].wait(timeout=15) == 0, log.getvalue()
    restarted = time.monotonic()
    running.start_node(name)
    assert wait_until(lambda: len(recorder.commands_after(restarted)) > 100, 60.0), log.getvalue()
    assert wait_for_following(recorder, restarted, wait_until), log.getvalue()
    assert running.dead_nodes() == {}


def test_every_node_reports_diagnostics(suite, wait_until):
    running, recorder, log = suite
    names = {"ceed_vla_ros: camera_subscriber", "ceed_vla_ros: policy", "ceed_vla_ros: arm_driver"}
    assert wait_until(lambda: names <= set(recorder.diagnostics), 10.0), recorder.diagnostics.keys()

    def values(name: str) -> dict[str, str]:
        with recorder.lock:
            return {kv.key: kv.value for kv in recorder.diagnostics[f"ceed_vla_ros: {name}"].values}

    assert wait_until(lambda: float(values("policy")["chunks_per_s"]) > 0, 10.0)
    assert values("policy")["decoding_mode"] == "early_exit" and values("policy")["last_iterations"] == "1"
    assert wait_until(lambda: float(values("arm_driver")["commands_sent_per_s"]) > 100, 10.0)  # 200 Hz set
    assert wait_until(lambda: float(values("camera_subscriber")["frames_forwarded_per_s"]) > 5, 10.0), (
        values("camera_subscriber"), log.getvalue()[-3000:])  # 15 Hz camera
