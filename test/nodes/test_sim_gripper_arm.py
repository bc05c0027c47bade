"""The gripper arm over real DDS, between real processes.

* The ``sim_arm`` node with ``robot:=gripper_arm`` (one process for most tests): 7 joints, the
  gripper last, front and wrist cameras, the gripper commanded like a joint (forward command,
  trajectory), the robot's tasks; the pick expert as teleoperator picks the cube.
* ``ceed-vla launch sim_gripper_arm``: an ee_delta + gripper checkpoint closes the loop: /actions,
  the driver's 7-entry commands (IK for the arm, the gripper joint) move the simulated arm and close
  its gripper.

The bring-up runs a tiny random checkpoint built here, whose every gripper action means "closed";
``CEED_VLA_TEST_GRIPPER_MODEL_DIR`` and ``CEED_VLA_TEST_GRIPPER_CHECKPOINT`` point it at another
ee_delta + gripper checkpoint (e.g. the shipped ``sim_gripper_student``), whose gripper is then only
checked to be commanded within its range. Tests with processes of their own (start-up refusals, the
teleoperator, the bring-up) run them on ROS domains of their own, away from the shared node.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

import ceed_vla_ros
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.interfaces import (
    ACTIONS_TOPIC,
    FORWARD_COMMAND_TOPIC,
    JOINT_STATES_TOPIC,
    SIM_RESET_SERVICE,
    SIM_SUCCESS_TOPIC,
    TRAJECTORY_TOPIC,
)
from ceed_vla_ros.sim.gripper_mjcf import ARM_JOINT_NAMES, FINGER_OPEN, HOME_QPOS, JOINT_NAMES
from ceed_vla_ros.srv import ResetEpisode

REPO = Path(__file__).resolve().parents[2]
NODE_COMMAND = [sys.executable, "-P", "-m", "ceed_vla_ros.nodes.sim_arm", "--ros-args",
                "-p", "robot:=gripper_arm"]
STARTUP_TIMEOUT_S = 20.0  # process start (imports, EGL) + DDS discovery
MOTION_TIMEOUT_S = 5.0
WRIST_TOPIC = "/wrist_camera/image_raw"
HOME = np.array(HOME_QPOS)
GRIPPER = JOINT_NAMES.index("gripper")
WaitUntil = Callable[[Callable[[], bool], float], bool]


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _domain(offset: int) -> int:
    """A ROS domain of its own for a test's processes (offsets 1-2: test_sim_arm_node's)."""
    return (int(os.environ["ROS_DOMAIN_ID"]) + offset - 1) % 100 + 1


@contextlib.contextmanager
def probe_in_domain(name: str, domain: int) -> Iterator:
    """An rclpy node of this process on ``domain`` (own context), spun in a background thread."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context, args=[], domain_id=domain)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown()
        thread.join(timeout=5)
        node.destroy_node()
        rclpy.shutdown(context=context)


class Robot:
    """What a probe node sees of the simulated gripper arm, and its command publishers."""

    def __init__(self, node) -> None:
        self.node = node
        self.lock = threading.Lock()
        self.joint_states: list[JointState] = []
        self.front: list[Image] = []
        self.wrist: list[Image] = []
        self.successes: list[bool] = []
        self.commands: list[np.ndarray] = []
        node.create_subscription(JointState, JOINT_STATES_TOPIC, lambda m: self.add(self.joint_states, m), 50)
        node.create_subscription(Image, "/camera/image_raw", lambda m: self.add(self.front, m),
                                 qos_profile_sensor_data)
        node.create_subscription(Image, WRIST_TOPIC, lambda m: self.add(self.wrist, m), qos_profile_sensor_data)
        node.create_subscription(Bool, SIM_SUCCESS_TOPIC, lambda m: self.add(self.successes, m.data), 50)
        node.create_subscription(Float64MultiArray, FORWARD_COMMAND_TOPIC,
                                 lambda m: self.add(self.commands, np.array(m.data)), 200)
        self.forward = node.create_publisher(Float64MultiArray, FORWARD_COMMAND_TOPIC, 10)
        self.trajectory = node.create_publisher(JointTrajectory, TRAJECTORY_TOPIC, 10)
        self.reset_client = node.create_client(ResetEpisode, SIM_RESET_SERVICE)

    def add(self, store: list, item) -> None:
        with self.lock:
            store.append(item)

    def count(self, store: list) -> int:
        with self.lock:
            return len(store)

    def positions(self) -> np.ndarray | None:
        with self.lock:
            return np.array(self.joint_states[-1].position) if self.joint_states else None

    def reset(self, wait_until: WaitUntil, **fields) -> ResetEpisode.Response:
        future = self.reset_client.call_async(ResetEpisode.Request(**fields))
        assert wait_until(future.done, 10.0), "reset_episode did not answer"
        return future.result()

    def wait_for(self, wait_until: WaitUntil, predicate: Callable[[np.ndarray], bool],
                 timeout_s: float = MOTION_TIMEOUT_S) -> bool:
        return wait_until(lambda: self.positions() is not None and predicate(self.positions()), timeout_s)


def _start(command: list[str], log_path: Path, domain: int | None = None) -> subprocess.Popen:
    env = dict(os.environ) if domain is None else dict(os.environ, ROS_DOMAIN_ID=str(domain))
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _stop(process: subprocess.Popen, timeout_s: float = 10.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@pytest.fixture(scope="module")
def sim(module_ros_node, tmp_path_factory) -> Iterator[tuple[Robot, Callable[[], str]]]:
    """One gripper-arm node (task pick) for the module, once it talks to the probe."""
    log_path = tmp_path_factory.mktemp("sim_gripper_arm") / "node.log"
    process = _start([*NODE_COMMAND, "-p", "task:=pick"], log_path)
    robot = Robot(module_ros_node)

    def log() -> str:
        return log_path.read_text(errors="replace")

    try:
        assert _poll(lambda: robot.positions() is not None or process.poll() is not None,
                     STARTUP_TIMEOUT_S), "no /joint_states from sim_arm"
        assert process.poll() is None, log()
        assert _poll(lambda: robot.reset_client.service_is_ready() and robot.forward.get_subscription_count() > 0
                     and robot.trajectory.get_subscription_count() > 0, STARTUP_TIMEOUT_S), log()
        yield robot, log
        assert process.poll() is None, "sim_arm died during the tests:\n" + log()
    finally:
        _stop(process)


def _poll(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def test_joint_states_carry_seven_joints_and_both_cameras_publish(sim, wait_until):
    robot, log = sim
    response = robot.reset(wait_until, task="pick", seed=0)
    assert response.success, response.message
    assert re.fullmatch(r"pick up the (red|green|blue) cube", response.instruction)
    start_ns = int(re.search(r"episode start stamp (\d+)\.(\d{9})", response.message).expand(r"\1\2"))
    states, fronts, wrists = (robot.count(s) for s in (robot.joint_states, robot.front, robot.wrist))
    assert wait_until(lambda: robot.count(robot.joint_states) >= states + 50 and robot.count(robot.front) >= fronts + 8
                      and robot.count(robot.wrist) >= wrists + 8, 5.0), log()
    with robot.lock:
        received = robot.joint_states[states:]
        front, wrist = list(robot.front), list(robot.wrist)
    for msg in received:
        assert tuple(msg.name) == JOINT_NAMES and len(msg.position) == len(msg.velocity) == 7
    np.testing.assert_allclose(robot.positions(), HOME, atol=0.01)  # the gripper open: 0.055 m
    for msg in front[fronts:] + wrist[wrists:]:
        assert (msg.encoding, msg.height, msg.width, msg.step, len(msg.data)) == ("rgb8", 64, 64, 192, 64 * 64 * 3)
    assert {m.header.frame_id for m in front} == {"front_camera"}
    assert {m.header.frame_id for m in wrist} == {"wrist_camera"}
    # every wrist frame pairs with the front frame of the same state (same stamp), the reset frame included
    front_by_stamp = {_stamp_ns(m): m for m in front}
    assert all(_stamp_ns(m) in front_by_stamp for m in wrist[wrists:])
    assert start_ns in {_stamp_ns(m) for m in wrist}, "no wrist frame at the episode start"
    last = wrist[-1]
    wrist_image = np.frombuffer(last.data, np.uint8).reshape(64, 64, 3).astype(int)
    front_image = np.frombuffer(front_by_stamp[_stamp_ns(last)].data, np.uint8).reshape(64, 64, 3)
    assert wrist_image.std() > 10 and np.abs(wrist_image - front_image).mean() > 10, "the wrist camera is not its own"
    (info,) = robot.node.get_publishers_info_by_topic(WRIST_TOPIC)
    assert info.node_name == "sim_arm" and info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT


def test_a_forward_command_closes_the_gripper_and_a_trajectory_opens_it(sim, wait_until):
    robot, log = sim
    assert robot.reset(wait_until, task="pick", seed=1).success
    assert robot.wait_for(wait_until, lambda q: np.allclose(q, HOME, atol=0.01))
    closed = HOME.copy()
    closed[GRIPPER] = 0.0
    robot.forward.publish(Float64MultiArray(data=closed.tolist()))
    # the fingers close (nothing between them above the base) and the arm joints stay where they were
    assert robot.wait_for(wait_until, lambda q: q[GRIPPER] < 0.003), f"gripper at {robot.positions()[GRIPPER]}"
    np.testing.assert_allclose(robot.positions()[:GRIPPER], HOME[:GRIPPER], atol=0.01)

    robot.forward.publish(Float64MultiArray(data=HOME[:GRIPPER].tolist()))  # the arm joints only: ignored
    assert wait_until(lambda: "6 values, expected 7" in log(), 5.0), log()
    robot.trajectory.publish(JointTrajectory(joint_names=["gripper"], points=[
        JointTrajectoryPoint(positions=[FINGER_OPEN])]))
    assert robot.wait_for(wait_until, lambda q: q[GRIPPER] > FINGER_OPEN - 0.003), robot.positions()
    np.testing.assert_allclose(robot.positions()[:GRIPPER], HOME[:GRIPPER], atol=0.01)


def test_resets_take_the_gripper_arms_tasks_only(sim, wait_until):
    robot, _ = sim
    refused = robot.reset(wait_until, task="push", seed=0)
    assert not refused.success and "unknown task 'push' for robot gripper_arm" in refused.message
    assert "pick, reach" in refused.message
    reach = robot.reset(wait_until, task="reach", seed=2, colour="green")
    assert reach.success and reach.instruction == "reach the green cube", reach.message
    pick = robot.reset(wait_until, task="pick", seed=2, colour="blue")
    assert pick.success and pick.instruction == "pick up the blue cube", pick.message
    assert robot.wait_for(wait_until, lambda q: len(q) == 7 and np.allclose(q, HOME, atol=0.01))


@pytest.mark.parametrize(("arguments", "reason"), [
    (["-p", "task:=push"], "task: 'push' is not one of pick, reach (robot gripper_arm)"),
    (["-p", "robot:=hand"], "robot: 'hand' is not one of arm, gripper_arm"),
], ids=["task", "robot"])
def test_a_task_or_robot_that_does_not_exist_stops_the_node_with_a_reason(arguments, reason):
    result = subprocess.run([*NODE_COMMAND, *arguments], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, ROS_DOMAIN_ID=str(_domain(3))))
    assert result.returncode == 1, result.stderr
    assert reason in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_expert_teleop_picks_up_the_cube(tmp_path, wait_until):
    """The pick expert publishes 7-entry targets; the node follows them until the cube is lifted."""
    domain = _domain(4)
    with probe_in_domain(f"test_teleop_{os.getpid()}", domain) as node:
        robot = Robot(node)
        process = _start([*NODE_COMMAND, "-p", "task:=pick", "-p", "seed:=2", "-p", "expert_teleop:=true"],
                         tmp_path / "node.log", domain)
        try:
            assert wait_until(lambda: any(robot.successes) or process.poll() is not None, 30.0), (
                (tmp_path / "node.log").read_text())
            with robot.lock:
                commands = np.array(robot.commands)
            assert commands.shape[1] == 7
            assert commands[0, GRIPPER] == pytest.approx(FINGER_OPEN) and np.any(commands[:, GRIPPER] == 0.0)
            # it holds the cube: the fingers stop on its faces (cube 6 cm: 3 cm each), not closed
            assert 0.02 < robot.positions()[GRIPPER] < 0.04, robot.positions()
        finally:
            assert _stop(process) == 0, (tmp_path / "node.log").read_text()


# -- the bring-up ------------------------------------------------------------------------------------
ARM_HOME = HOME[:GRIPPER]


@pytest.fixture(scope="module")
def gripper_checkpoint(tmp_path_factory) -> tuple[Path, str, bool]:
    """(model_dir, checkpoint, is the tiny one): the tiny ee_delta + gripper checkpoint built here, or
    the one the environment names. Every action of the tiny one moves the tool 1-4 cm along +x from
    the image pose and closes the gripper (gripper actions decode within [-1, 0.4], below 0.5)."""
    model_dir = os.environ.get("CEED_VLA_TEST_GRIPPER_MODEL_DIR")
    if model_dir:
        return Path(model_dir), os.environ.get("CEED_VLA_TEST_GRIPPER_CHECKPOINT", "sim_gripper_student"), False
    from ceed_vla_ros.action_tokenizer import NormStats
    from ceed_vla_ros.checkpoint import build_tiny_checkpoint
    from ceed_vla_ros.metadata import CheckpointMetadata, EndEffectorSpec, GripperSpec

    model_dir = tmp_path_factory.mktemp("gripper_models")
    metadata = CheckpointMetadata(
        name="tiny_pick", action_space="ee_delta", joint_names=list(ARM_JOINT_NAMES), action_dims=7, chunk_len=4,
        dt=0.1,
        action_norm=NormStats(q01=(0.01, -0.01, -0.01, -0.02, -0.02, -0.02, -1.0),
                              q99=(0.04, 0.01, 0.01, 0.02, 0.02, 0.02, 0.4), mask=(True,) * 7),
        proprio_names=list(JOINT_NAMES),
        proprio_norm=NormStats(q01=(-2.0,) * 6 + (0.0,), q99=(2.0,) * 6 + (0.055,), mask=(True,) * 7),
        end_effector=EndEffectorSpec("base_link", "tool_tip", "rpy", "base", "image_pose"),
        gripper=GripperSpec("binary", 0.0, 1.0, 0.5))
    build_tiny_checkpoint(model_dir / "tiny_pick", metadata, seed=0, hidden_size=32, num_layers=2,
                          instructions=[f"pick up the {c} cube" for c in ("red", "green", "blue")])
    return model_dir, "tiny_pick", True


@pytest.fixture(scope="module")
def launch_env(tmp_path_factory) -> dict[str, str]:
    """The runner's environment. Run from the source tree (PYTHONPATH), the nodes find config/ there
    too: a prefix whose share/ceed_vla_ros is the source tree goes first on AMENT_PREFIX_PATH (the
    installed share may predate this setup). The installed package (make test) uses its own share."""
    env = dict(os.environ)
    if Path(ceed_vla_ros.__file__).resolve().parent == REPO / "ceed_vla_ros":
        prefix = tmp_path_factory.mktemp("source_share")
        index = prefix / "share/ament_index/resource_index/packages"
        index.mkdir(parents=True)
        (index / "ceed_vla_ros").touch()
        (prefix / "share/ceed_vla_ros").mkdir()
        for folder in ("config", "launch", "models"):
            (prefix / "share/ceed_vla_ros" / folder).symlink_to(REPO / folder)
        env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH")) if p)
    return env


def test_bringup_drives_the_gripper_arm_with_an_ee_delta_gripper_checkpoint(
        gripper_checkpoint, launch_env, tmp_path, wait_until):
    from ceed_vla_ros.metadata import load_metadata

    model_dir, checkpoint, tiny = gripper_checkpoint
    checkpoint_id = load_metadata(model_dir, checkpoint).checkpoint_id
    domain = _domain(5)
    log_path = tmp_path / "launch.log"
    with probe_in_domain(f"test_gripper_bringup_{os.getpid()}", domain) as node:
        robot = Robot(node)
        actions: list[ActionTokens] = []
        node.create_subscription(ActionTokens, ACTIONS_TOPIC, lambda m: robot.add(actions, m), 10)
        with log_path.open("wb") as log:
            runner = subprocess.Popen(
                [str(Path(sys.executable).parent / "ceed-vla"), "launch", "sim_gripper_arm", f"model_dir:={model_dir}",
                 f"checkpoint:={checkpoint}", "seed:=4"],
                stdout=log, stderr=subprocess.STDOUT, env=dict(launch_env, ROS_DOMAIN_ID=str(domain)))

        def output() -> str:
            return log_path.read_text(errors="replace")

        try:
            assert wait_until(lambda: robot.count(actions) >= 3 or runner.poll() is not None, 90.0), output()
            with robot.lock:
                chunk = actions[-1]
            assert chunk.checkpoint_id == checkpoint_id and chunk.action_dims == 7, output()
            assert chunk.decoding_mode == "early_exit" and chunk.iterations <= 2  # the setup's early exit k = 2
            # the driver's commands: the 6 arm joints + the gripper; the arm leaves home
            assert wait_until(lambda: robot.count(robot.commands) > 50, 10.0), output()
            assert robot.wait_for(wait_until, lambda q: np.abs(q[:GRIPPER] - ARM_HOME).max() > 0.05, 20.0), (
                robot.positions(), output())
            with robot.lock:
                commands = np.array(robot.commands[-200:])
            assert commands.shape[1] == 7
            assert np.all((commands[:, GRIPPER] >= 0.0) & (commands[:, GRIPPER] <= FINGER_OPEN))
            if tiny:  # the checkpoint closes the gripper: commanded to 0.0, the sim's fingers follow
                assert wait_until(lambda: robot.commands[-1][GRIPPER] == 0.0, 10.0), robot.commands[-1]
                assert robot.wait_for(wait_until, lambda q: q[GRIPPER] < 0.01), robot.positions()
            assert runner.poll() is None, output()
        finally:
            code = _stop(runner, timeout_s=30.0)
        assert code == 0, output()
    assert "Traceback" not in output(), output()
