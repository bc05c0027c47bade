"""The arm driver node over real DDS: commands from /actions, limits, refusals, watchdog, e-stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from ceed_vla_ros.metadata import load_metadata
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC, FORWARD_COMMAND_TOPIC, JOINT_STATES_TOPIC
from ceed_vla_ros.nodes.rclpy_compat import call_service

REPO = Path(__file__).resolve().parents[2]
JOINTS = ["base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch"]
LOWER = np.array([-2.0, -1.9, -0.2, -2.4])
UPPER = np.array([2.0, 0.6, 2.6, 1.2])
MAX_STEP = 2.0 / 200.0  # max_velocity / control_rate_hz in config/sim_arm.yaml
MAX_STEP_CHANGE = 20.0 / 200.0**2  # max_acceleration * period^2: the change of the step per period


class Probe:
    """Publishes joint states and actions, records the driver's commands."""

    def __init__(self, node, metadata) -> None:
        self.node = node
        self.metadata = metadata
        self.commands: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.sequence = 0
        self.joint_positions = np.zeros(4)
        self.joint_publisher = node.create_publisher(JointState, JOINT_STATES_TOPIC, 10)
        self.action_publisher = node.create_publisher(ActionTokens, ACTIONS_TOPIC, 10)
        node.create_subscription(Float64MultiArray, FORWARD_COMMAND_TOPIC, self._on_command, 100)
        node.create_timer(0.02, self._publish_joint_state)

    def _on_command(self, msg: Float64MultiArray) -> None:
        with self.lock:
            self.commands.append(np.array(msg.data))

    def _publish_joint_state(self) -> None:
        msg = JointState(name=JOINTS, position=self.joint_positions.tolist())
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.joint_publisher.publish(msg)

    def command_count(self) -> int:
        with self.lock:
            return len(self.commands)

    def commands_since(self, start: int) -> np.ndarray:
        with self.lock:
            return np.array(self.commands[start:])

    def send_chunk(self, deltas: np.ndarray, checkpoint_id: str | None = None, token_ids=None,
                   stamp_offset_s: float = 0.0, sequence: int | None = None, step_dt: float | None = None) -> None:
        self.sequence += 1
        tokenizer = self.metadata.action_tokenizer()
        msg = ActionTokens()
        stamp = self.node.get_clock().now().nanoseconds + int(stamp_offset_s * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        msg.sequence = self.sequence if sequence is None else sequence
        msg.checkpoint_id = checkpoint_id or self.metadata.checkpoint_id
        msg.token_ids = [int(t) for t in (tokenizer.encode(deltas) if token_ids is None else token_ids)]
        msg.chunk_length, msg.action_dims = self.metadata.chunk_len, self.metadata.action_dims
        msg.step_dt = self.metadata.dt if step_dt is None else step_dt
        msg.decoding_mode = "early_exit"
        self.action_publisher.publish(msg)


@pytest.fixture
def driver(start_node, tiny_model_dir, ros_node, wait_until):
    process = start_node("arm_driver", ["-r", "__node:=arm_driver", "--params-file", str(REPO / "config/sim_arm.yaml"),
                                        "-p", f"model_dir:={tiny_model_dir}"])
    probe = Probe(ros_node, load_metadata(tiny_model_dir, "tiny_sim"))
    assert wait_until(lambda: probe.command_count() > 20, 20.0), process.output()
    return process, probe


def assert_within_limits(commands: np.ndarray) -> None:
    assert np.all(commands >= LOWER - 1e-9) and np.all(commands <= UPPER + 1e-9)
    steps = np.abs(np.diff(commands, axis=0))
    assert steps.max(initial=0.0) <= MAX_STEP + 1e-9
    assert np.abs(np.diff(commands, n=2, axis=0)).max(initial=0.0) <= MAX_STEP_CHANGE + 1e-9


def test_actions_move_the_arm_within_limits_and_the_watchdog_holds(driver, wait_until):
    process, probe = driver
    start = probe.command_count()
    assert np.allclose(probe.commands_since(start - 1)[-1], 0.0)  # holding the measured pose
    big = np.full((4, 4), 0.3)  # +0.3 rad on every joint, each step (clipped by the tokenizer's q99)
    mark = probe.command_count()
    probe.send_chunk(big)
    assert wait_until(lambda: np.abs(probe.commands_since(mark)).max(initial=0) > 0.1, 10.0), process.output()
    # stop sending: within the watchdog timeout (0.5 s) plus slack, commands stop changing
    time.sleep(1.0)
    held_from = probe.command_count()
    assert wait_until(lambda: probe.command_count() > held_from + 40, 5.0)
    held = probe.commands_since(held_from)
    assert np.all(held == held[0]), "commands kept changing after actions stopped"
    moved = probe.commands_since(start)
    assert_within_limits(moved)
    assert np.all(moved[-1] <= UPPER) and moved[-1][0] > 0.1


def test_actions_of_an_unknown_checkpoint_or_invalid_tokens_are_refused(driver, wait_until):
    process, probe = driver
    mark = probe.command_count()
    probe.send_chunk(np.full((4, 4), 0.3), checkpoint_id="someone_else@deadbeef")
    probe.send_chunk(np.zeros((4, 4)), token_ids=[0] * 16)  # not action tokens
    probe.send_chunk(np.zeros((4, 4)), token_ids=[probe.metadata.action_tokenizer().token_range[0]] * 5)
    assert wait_until(lambda: "unknown checkpoint id" in process.output()
                      and "is not an action token" in process.output(), 10.0), process.output()
    assert wait_until(lambda: probe.command_count() > mark + 100, 5.0)
    assert np.all(probe.commands_since(mark) == 0.0)
    assert process.alive()


def test_stale_future_duplicate_and_out_of_order_chunks_are_refused(driver, wait_until):
    process, probe = driver
    mark = probe.command_count()
    probe.send_chunk(np.full((4, 4), 0.3), stamp_offset_s=-5.0)
    probe.send_chunk(np.full((4, 4), 0.3), stamp_offset_s=+5.0)
    assert wait_until(lambda: "stale: all 4 steps already past" in process.output()
                      and "in the future" in process.output(), 10.0), process.output()
    assert wait_until(lambda: probe.command_count() > mark + 60, 5.0)
    assert np.all(probe.commands_since(mark) == 0.0), "a refused chunk moved the arm"
    probe.send_chunk(np.zeros((4, 4)))  # accepted: holds the pose, sets the newest stamp
    accepted_sequence = probe.sequence
    time.sleep(0.2)
    # older than the accepted chunk, with steps long enough not to be stale
    probe.send_chunk(np.full((4, 4), 0.3), stamp_offset_s=-0.5, step_dt=1.0)
    probe.send_chunk(np.full((4, 4), 0.3), sequence=accepted_sequence)  # a duplicate
    assert wait_until(lambda: "not newer than the last accepted chunk" in process.output()
                      and f"duplicate sequence {accepted_sequence}" in process.output(), 10.0), process.output()
    mark = probe.command_count()
    assert wait_until(lambda: probe.command_count() > mark + 60, 5.0)
    after = probe.commands_since(mark)
    # the accepted "zero" chunk decodes to the bin centre next to 0 (about 1e-3 rad): only that moved
    assert np.abs(after).max() < 0.005 and np.ptp(after, axis=0).max() < 1e-9
    assert process.alive()


def test_estop_topic_latches(driver, ros_node, wait_until):
    process, probe = driver
    estop_topic = ros_node.create_publisher(Bool, "/arm_driver/estop", 10)
    assert wait_until(lambda: estop_topic.get_subscription_count() > 0, 10.0)
    estop_topic.publish(Bool(data=True))
    assert wait_until(lambda: "E-STOP latched (topic)" in process.output(), 10.0), process.output()
    mark = probe.command_count()
    probe.send_chunk(np.full((4, 4), 0.3))
    assert wait_until(lambda: probe.command_count() > mark + 60, 5.0)
    assert np.all(probe.commands_since(mark) == 0.0)


def test_estop_latches_until_reset_and_reset_needs_fresh_actions(driver, ros_node, wait_until):
    process, probe = driver
    estop = ros_node.create_client(Trigger, "/arm_driver/estop")
    reset = ros_node.create_client(Trigger, "/arm_driver/reset_estop")
    assert estop.wait_for_service(timeout_sec=10.0) and reset.wait_for_service(timeout_sec=10.0)
    assert call_service(estop, Trigger.Request(), 10.0).success
    mark = probe.command_count()
    for _ in range(5):
        probe.send_chunk(np.full((4, 4), 0.3))
        time.sleep(0.1)
    frozen = probe.commands_since(mark)
    assert len(frozen) > 20 and np.all(frozen == frozen[0]), "the arm moved while the e-stop was latched"
    assert call_service(reset, Trigger.Request(), 10.0).success
    mark = probe.command_count()
    assert wait_until(lambda: probe.command_count() > mark + 40, 5.0)
    still = probe.commands_since(mark)
    assert np.all(still == frozen[0]), "the reset alone moved the arm"
    probe.send_chunk(np.full((4, 4), 0.3))
    assert wait_until(lambda: np.abs(probe.commands_since(mark) - frozen[0]).max(initial=0) > 0.05, 10.0)


@pytest.mark.parametrize("control_loop", ["streamer", "thread"])
def test_500_hz_keeps_the_limits_and_stops_cleanly(start_node, tiny_model_dir, ros_node, wait_until, control_loop):
    """control_rate_hz 500 with a real-time request, on the native streamer (the default) and on the
    Python deadline thread: commands flow within the 500 Hz velocity bound, the scheduling outcome
    is logged, /diagnostics names the loop and counts its periods, SIGINT stops it with code 0."""
    from diagnostic_msgs.msg import DiagnosticArray

    diagnostics: list[dict[str, str]] = []

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if "arm_driver" in status.name:
                diagnostics.append({kv.key: kv.value for kv in status.values})

    ros_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    process = start_node("arm_driver", ["-r", "__node:=arm_driver", "--params-file", str(REPO / "config/sim_arm.yaml"),
                                        "-p", f"model_dir:={tiny_model_dir}", "-p", "control_rate_hz:=500.0",
                                        "-p", "realtime_priority:=10", "-p", f"control_loop:={control_loop}"])
    probe = Probe(ros_node, load_metadata(tiny_model_dir, "tiny_sim"))
    assert wait_until(lambda: probe.command_count() > 50, 20.0), process.output()
    thread = "native command streamer (planned every 20 ms, 20 periods ahead)" if control_loop == "streamer" \
        else "control thread"
    assert f"{thread}: SCHED_FIFO priority 10" in process.output() or (
        f"{thread}: normal scheduling: SCHED_FIFO priority 10 not permitted" in process.output()), process.output()
    assert "joints at 500 Hz" in process.output()
    mark = probe.command_count()
    probe.send_chunk(np.full((4, 4), 0.3))
    assert wait_until(lambda: np.abs(probe.commands_since(mark)).max(initial=0) > 0.1, 10.0), process.output()
    moved = probe.commands_since(mark - 1)
    assert np.all(moved >= LOWER - 1e-9) and np.all(moved <= UPPER + 1e-9)
    assert np.abs(np.diff(moved, axis=0)).max() <= 2.0 / 500.0 + 1e-9  # max_velocity / 500 Hz per command
    assert np.abs(np.diff(moved, n=2, axis=0)).max() <= 20.0 / 500.0**2 + 1e-9  # max_acceleration T^2
    assert wait_until(lambda: any(int(d.get("control_periods", 0)) > 500 for d in diagnostics), 10.0)
    assert diagnostics[-1]["control_loop"] == control_loop
    assert diagnostics[-1]["control_scheduling"].startswith(("SCHED_FIFO", "normal"))
    assert process.stop() == 0, process.output()
