"""The sim_arm node over real DDS: the node runs in its own process, a probe node in this one.

One node process serves most tests (module fixture); each test first resets the episode it needs.
Start-up rejection and Ctrl-C get processes of their own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from rcl_interfaces.msg import ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ceed_vla_ros.nodes import rclpy_compat
from ceed_vla_ros.nodes.interfaces import (
    FORWARD_COMMAND_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    SIM_RESET_SERVICE,
    SIM_SUCCESS_TOPIC,
)
from ceed_vla_ros.sim.env import TabletopArmEnv
from ceed_vla_ros.sim.expert import DlsIk
from ceed_vla_ros.sim.mjcf import CUBE_HALF, HOME_QPOS, JOINT_NAMES
from ceed_vla_ros.srv import ResetEpisode

NODE_COMMAND = [sys.executable, "-P", "-m", "ceed_vla_ros.nodes.sim_arm", "--ros-args"]
STARTUP_TIMEOUT_S = 20.0  # process start (imports, EGL) + DDS discovery, which can take seconds
MOTION_TIMEOUT_S = 5.0
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
WaitUntil = Callable[[Callable[[], bool], float], bool]


def _stamp_ns(msg: JointState | Image) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _rate_hz(arrivals: list[float]) -> float:
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


@dataclass
class SimArm:
    """The node process and a probe node (spun in a background thread) that talks to it."""

    process: subprocess.Popen
    log_path: Path
    probe: Node
    joint_states: list[tuple[float, JointState]] = field(default_factory=list)
    images: list[tuple[float, Image]] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        probe = self.probe
        probe.create_subscription(JointState, JOINT_STATES_TOPIC, lambda m: self.joint_states.append(
            (time.monotonic(), m)), 10)
        probe.create_subscription(Image, "/camera/image_raw", lambda m: self.images.append(
            (time.monotonic(), m)), qos_profile_sensor_data)
        probe.create_subscription(String, INSTRUCTION_TOPIC,
                                  lambda m: self.instructions.append(m.data), LATCHED)
        probe.create_subscription(Bool, SIM_SUCCESS_TOPIC,
                                  lambda m: self.successes.append(m.data), 10)
        self.forward = probe.create_publisher(
            Float64MultiArray, FORWARD_COMMAND_TOPIC, 10)
        self.trajectory = probe.create_publisher(
            JointTrajectory, "/joint_trajectory_controller/joint_trajectory", 10)
        self.reset_client = probe.create_client(ResetEpisode, SIM_RESET_SERVICE)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def positions(self) -> np.ndarray:
        return np.array(self.joint_states[-1][1].position)

    def reset(self, wait_until: WaitUntil, task: str = "", seed: int = 0,
              colour: str = "") -> ResetEpisode.Response:
        future = self.reset_client.call_async(
            ResetEpisode.Request(task=task, seed=seed, colour=colour))
        assert wait_until(future.done, 10.0), "reset_episode did not answer"
        return future.result()

    def wait_fresh_joint_states(self, wait_until: WaitUntil, count: int = 5) -> None:
        """Wait until ``count`` more joint states arrived (the node processed earlier input)."""
        target = len(self.joint_states) + count
        assert wait_until(lambda: len(self.joint_states) >= target, 5.0)

    def wait_for_positions(self, wait_until: WaitUntil, target: np.ndarray,
                           atol: float = 0.02) -> bool:
        return wait_until(lambda: bool(self.joint_states) and np.allclose(
            self.positions(), target, atol=atol), MOTION_TIMEOUT_S)


def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def sim(module_ros_node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimArm]:
    """The node with default parameters, once its joint states reach the probe."""
    log_path = tmp_path_factory.mktemp("sim_arm") / "node.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(NODE_COMMAND, stdout=log, stderr=subprocess.STDOUT)
    try:
        sim = SimArm(process, log_path, module_ros_node)
        assert _wait(lambda: bool(sim.joint_states) or process.poll() is not None,
                     STARTUP_TIMEOUT_S), "no /joint_states from sim_arm"
        assert process.poll() is None, sim.log()
        assert _wait(sim.reset_client.service_is_ready, STARTUP_TIMEOUT_S)
        assert _wait(lambda: sim.forward.get_subscription_count() > 0
                     and sim.trajectory.get_subscription_count() > 0, STARTUP_TIMEOUT_S)
        yield sim
        assert process.poll() is None, "sim_arm died during the tests:\n" + sim.log()
    finally:
        _stop(process)


def test_joint_states_carry_the_joint_names_at_the_default_rate(sim, wait_until):
    assert sim.reset(wait_until, task="reach", seed=0).success
    start = len(sim.joint_states)
    assert wait_until(lambda: len(sim.joint_states) >= start + 150, 5.0)
    received = sim.joint_states[start:]
    rate = _rate_hz([t for t, _ in received])
    assert 50.0 <= rate <= 150.0, f"/joint_states at {rate:.1f} Hz, expected about 100"
    for _, msg in received:
        assert tuple(msg.name) == JOINT_NAMES
        assert len(msg.position) == len(msg.velocity) == len(JOINT_NAMES)
    stamps = [_stamp_ns(m) for _, m in received]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    now_ns = sim.probe.get_clock().now().nanoseconds
    assert abs(now_ns - stamps[-1]) < 2e9, "joint state stamps are not the current time"
    np.testing.assert_allclose(sim.positions(), HOME_QPOS, atol=0.01)
    # ~/success goes out with every joint state: false with the arm at home.
    assert len(sim.successes) >= 100 and not any(sim.successes[-20:])


def test_camera_images_are_rgb8_with_frame_id_at_the_default_rate(sim, wait_until):
    start = len(sim.images)
    assert wait_until(lambda: len(sim.images) >= start + 20, 5.0)
    received = sim.images[start:]
    rate = _rate_hz([t for t, _ in received])
    assert 7.0 <= rate <= 25.0, f"camera/image_raw at {rate:.1f} Hz, expected about 15"
    for _, msg in received:
        assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 64, 64, 192)
        assert len(msg.data) == 64 * 64 * 3
        assert msg.header.frame_id == "front_camera"
    stamps = [_stamp_ns(m) for _, m in received]
    assert stamps == sorted(stamps)
    image = np.frombuffer(received[-1][1].data, np.uint8).reshape(64, 64, 3)
    assert image.std() > 10, "the image is blank"
    (info,) = sim.probe.get_publishers_info_by_topic("/camera/image_raw")
    assert info.node_name == "sim_arm"
    assert info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # SensorData QoS
    assert not sim.probe.get_publishers_info_by_topic("/wrist_camera/image_raw")  # the arm has no wrist camera


def test_forward_position_command_moves_the_joints_and_bad_ones_are_ignored(sim, wait_until):
    assert sim.reset(wait_until, task="reach", seed=0).success
    assert sim.wait_for_positions(wait_until, np.array(HOME_QPOS))
    target = np.array(HOME_QPOS) + np.array([0.4, 0.25, -0.3, 0.2])
    sim.forward.publish(Float64MultiArray(data=target.tolist()))
    assert sim.wait_for_positions(wait_until, target), (
        f"joints at {sim.positions()}, commanded {target}")

    sim.forward.publish(Float64MultiArray(data=[0.1, 0.2]))
    sim.forward.publish(Float64MultiArray(data=[0.0, float("nan"), 0.0, 0.0]))
    assert wait_until(lambda: "ignored a message on /forward_position_controller/commands: "
                      "2 values, expected 4" in sim.log(), 5.0), sim.log()
    sim.wait_fresh_joint_states(wait_until, count=20)
    np.testing.assert_allclose(sim.positions(), target, atol=0.02)
    assert sim.process.poll() is None


def test_joint_trajectory_is_executed_in_time_by_joint_name(sim, wait_until):
    assert sim.reset(wait_until, task="reach", seed=0).success
    home = np.array(HOME_QPOS)
    earliest = home + np.array([-0.3, 0.2, -0.25, 0.1])
    names = list(reversed(JOINT_NAMES))

    def point(positions: np.ndarray, seconds: float) -> JointTrajectoryPoint:
        return JointTrajectoryPoint(
            positions=positions[::-1].tolist(),
            time_from_start=Duration(sec=int(np.floor(seconds)),
                                     nanosec=int(round((seconds - np.floor(seconds)) * 1e9))))

    final = earliest + np.array([0.1, 0.0, 0.1, 0.0])
    sim.trajectory.publish(JointTrajectory(joint_names=names, points=[
        point(home - 0.5, -0.5), point(earliest, 0.4), point(final, 1.2)]))
    assert sim.wait_for_positions(wait_until, earliest, atol=0.05), (
        f"joints at {sim.positions()}, expected to pass {earliest}")
    assert sim.wait_for_positions(wait_until, final), f"joints at {sim.positions()}, expected {final}"
    earliest = final

    # An unknown joint name rejects the whole message (base_yaw must not move) ...
    sim.trajectory.publish(JointTrajectory(joint_names=["base_yaw", "gripper"], points=[
        JointTrajectoryPoint(positions=[1.0, 0.0])]))
    # ... while a subset of known joints moves only those joints.
    partial = earliest.copy()
    partial[3] += 0.3
    sim.trajectory.publish(JointTrajectory(joint_names=["wrist_pitch"], points=[
        JointTrajectoryPoint(positions=[partial[3]])]))
    assert sim.wait_for_positions(wait_until, partial), (
        f"joints at {sim.positions()}, expected {partial}")
    assert "ignored a message on /joint_trajectory_controller/joint_trajectory" in sim.log()
    assert "'gripper'" in sim.log()


def _frame_at(sim: SimArm, wait_until: WaitUntil, stamp_ns: int) -> np.ndarray:
    assert wait_until(lambda: any(_stamp_ns(m) == stamp_ns for _, m in sim.images), 5.0), (
        "no camera frame carries the episode start stamp")
    msg = next(m for _, m in sim.images if _stamp_ns(m) == stamp_ns)
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)


def _start_stamp_ns(response: ResetEpisode.Response) -> int:
    match = re.search(r"episode start stamp (\d+)\.(\d{9})", response.message)
    assert match, response.message
    return int(match.group(1)) * 1_000_000_000 + int(match.group(2))


def test_reset_episode_publishes_the_instruction_and_is_deterministic(sim, wait_until):
    published = len(sim.instructions)
    first = sim.reset(wait_until, task="reach", seed=7)
    assert first.success, first.message
    assert re.fullmatch(r"reach the (red|green|blue) cube", first.instruction)
    assert wait_until(lambda: sim.instructions[published:] == [first.instruction], 5.0)
    assert sim.wait_for_positions(wait_until, np.array(HOME_QPOS))
    first_frame = _frame_at(sim, wait_until, _start_stamp_ns(first))

    other = sim.reset(wait_until, task="push", seed=8, colour="blue")
    assert other.success, other.message
    assert other.instruction == "push the blue cube to the goal"
    assert wait_until(lambda: sim.instructions[-1:] == [other.instruction], 5.0)
    other_frame = _frame_at(sim, wait_until, _start_stamp_ns(other))
    assert not np.array_equal(other_frame, first_frame)

    again = sim.reset(wait_until, task="reach", seed=7)
    assert again.success and again.instruction == first.instruction
    np.testing.assert_array_equal(_frame_at(sim, wait_until, _start_stamp_ns(again)), first_frame)

    # Transient local: a subscriber that joins later still gets the current instruction.
    late: list[str] = []
    subscription = sim.probe.create_subscription(
        String, INSTRUCTION_TOPIC, lambda m: late.append(m.data), LATCHED)
    try:
        assert wait_until(lambda: late == [again.instruction], 10.0), late
    finally:
        sim.probe.destroy_subscription(subscription)


@pytest.mark.parametrize(("request_fields", "reason"), [
    ({"task": "lift"}, "unknown task 'lift'"),
    ({"colour": "purple"}, "unknown colour 'purple'"),
    ({"seed": -1}, "seed must be >= 0"),
])
def test_invalid_reset_is_rejected_and_changes_nothing(sim, wait_until, request_fields, reason):
    assert sim.reset(wait_until, task="reach", seed=3).success
    assert sim.wait_for_positions(wait_until, np.array(HOME_QPOS))
    target = np.array(HOME_QPOS) + 0.2
    sim.forward.publish(Float64MultiArray(data=target.tolist()))
    assert sim.wait_for_positions(wait_until, target)
    instructions = len(sim.instructions)

    response = sim.reset(wait_until, **request_fields)
    assert not response.success
    assert reason in response.message and response.instruction == ""
    sim.wait_fresh_joint_states(wait_until, count=20)
    np.testing.assert_allclose(sim.positions(), target, atol=0.02)  # no reset to home
    assert len(sim.instructions) == instructions


def test_success_turns_true_when_the_tool_reaches_the_named_cube_and_ends_the_episode(sim, wait_until):
    response = sim.reset(wait_until, task="reach", seed=3)
    assert response.success
    # The same seed in this process gives the same layout: aim the tool at the cube top.
    with TabletopArmEnv(task="reach") as env:
        env.reset(seed=3)
        assert response.instruction == env.instruction
        top = env.cube_position(env.colour) + np.array([0.0, 0.0, CUBE_HALF + 0.012])
        target = DlsIk(env.model, env.joint_limits).solve(np.array(HOME_QPOS), top)
    sim.wait_fresh_joint_states(wait_until)
    assert not any(sim.successes[-3:])
    sim.forward.publish(Float64MultiArray(data=target.tolist()))
    assert wait_until(lambda: any(sim.successes[-3:]), 10.0), "~/success is not true with the tool on the cube"
    # The episode has ended: the arm holds where it succeeded and ignores commands until a reset.
    sim.wait_fresh_joint_states(wait_until, count=30)
    held = sim.positions()
    sim.forward.publish(Float64MultiArray(data=list(HOME_QPOS)))
    sim.wait_fresh_joint_states(wait_until, count=50)
    np.testing.assert_allclose(sim.positions(), held, atol=0.01)
    assert all(sim.successes[-80:])
    assert sim.reset(wait_until, task="reach", seed=3).success
    sim.wait_fresh_joint_states(wait_until)
    assert not any(sim.successes[-3:])
    away = np.array(HOME_QPOS) + np.array([0.3, 0.0, 0.0, 0.0])  # a new episode obeys again
    sim.forward.publish(Float64MultiArray(data=away.tolist()))
    assert sim.wait_for_positions(wait_until, away)


# rclpy's AsyncParameterClient (Iron and later) and Humble's stand-in, both over DDS
@pytest.mark.parametrize("make_client", [rclpy_compat.parameter_client, rclpy_compat.ParameterServicesClient],
                         ids=["parameter_client", "humble_fallback"])
def test_parameters_are_described_and_read_only(sim, wait_until, make_client):
    client = make_client(sim.probe, "sim_arm")
    assert client.wait_for_services(timeout_sec=10.0)
    names = ["robot", "task", "seed", "colour", "joint_state_rate_hz", "camera_rate_hz", "image_size", "end_on_success"]
    future = client.describe_parameters(names)
    assert wait_until(future.done, 5.0)
    descriptors = {d.name: d for d in future.result().descriptors}
    assert set(descriptors) == set(names)
    assert all(d.description and d.read_only for d in descriptors.values())
    assert descriptors["joint_state_rate_hz"].type == ParameterType.PARAMETER_DOUBLE
    assert descriptors["joint_state_rate_hz"].floating_point_range[0].from_value > 0
    assert descriptors["image_size"].integer_range[0].from_value == 8
    assert descriptors["seed"].integer_range[0].from_value == 0

    future = client.set_parameters([Parameter("camera_rate_hz", value=30.0)])
    assert wait_until(future.done, 5.0)
    (result,) = future.result().results
    assert not result.successful and "read-only" in result.reason


def _node_env(domain_offset: int) -> dict[str, str]:
    """The environment for an extra node process on a domain of its own (no cross-talk)."""
    domain = (int(os.environ["ROS_DOMAIN_ID"]) + domain_offset - 1) % 100 + 1
    return dict(os.environ, ROS_DOMAIN_ID=str(domain))


def test_invalid_start_up_parameter_stops_with_a_reason():
    result = subprocess.run([*NODE_COMMAND, "-p", "task:=lift"], capture_output=True, text=True,
                            timeout=60, env=_node_env(1))
    assert result.returncode == 1
    assert "task: 'lift' is not one of reach, push" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_exit_cleanly(tmp_path, wait_until, signum):
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as log:
        # High rates: a callback is likely to be publishing when Ctrl-C shuts the context down.
        process = subprocess.Popen(
            [*NODE_COMMAND, "-p", "task:=push", "-p", "joint_state_rate_hz:=1000.0",
             "-p", "camera_rate_hz:=60.0"],
            stdout=log, stderr=subprocess.STDOUT, env=_node_env(2))
    try:
        assert wait_until(lambda: "simulated arm ready" in log_path.read_text()
                          or process.poll() is not None, STARTUP_TIMEOUT_S)
        assert process.poll() is None, log_path.read_text()
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0, log_path.read_text()
    finally:
        _stop(process)
    output = log_path.read_text()
    assert "Traceback" not in output and "Exception" not in output, output
    assert re.search(r"real-time factor \d+\.\d+", output), output
