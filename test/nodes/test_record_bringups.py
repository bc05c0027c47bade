"""The recording bring-ups as users start them, over real DDS between real processes.

* ``ceed-vla launch record_sim``: the scripted expert teleoperates the simulated arm, the episode
  recorder records it, the episode runner saves 2 successful reach episodes and ends the bring-up
  with exit code 0; the episodes really end on the named cube (forward kinematics of the recorded
  last state vs the layout of the episode's seed), and ``ceed-vla train`` trains from the folder.
* ``ceed-vla launch record`` (the robot's): camera remap, joint names given as a launch argument,
  episodes started and saved with ``ceed-vla episode``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from ceed_vla_ros.datasets import LeRobotSource
from ceed_vla_ros.datasets.lerobot import LeRobotDataset
from ceed_vla_ros.nodes.interfaces import FORWARD_COMMAND_TOPIC, JOINT_STATES_TOPIC

BIN = Path(sys.executable).parent

TINY_TEACHER = ["--hidden", "32", "--layers", "1", "--heads", "2", "--keypoints", "4", "--image-tokens", "2",
                "--vision-channels", "8", "--vision-strides", "2", "--batch-size", "4", "--threads", "1",
                "--no-progress", "--chunk-len", "2", "--val-episodes", "1"]


def _run(command: list[str], timeout: float, log_path: Path) -> subprocess.CompletedProcess:
    with open(log_path, "w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=20)
        log.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, log.read())


def test_record_sim_saves_successful_expert_episodes_that_train(tmp_path):
    from ceed_vla_ros.sim.env import CUBE_HALF, TabletopArmEnv
    from ceed_vla_ros.sim.expert import DlsIk
    from ceed_vla_ros.tools import cli

    dataset_dir = tmp_path / "sim_demos"
    run = _run([str(BIN / "ceed-vla"), "launch", "record_sim", f"dataset_dir:={dataset_dir}", "episodes:=2",
                "seed:=5", "max_episode_s:=15.0"], timeout=150, log_path=tmp_path / "launch.log")
    assert run.returncode == 0, run.stdout
    assert "sim_episode_runner finished" in run.stdout, run.stdout

    dataset = LeRobotDataset(dataset_dir)
    assert len(dataset) == 2, run.stdout
    source = LeRobotSource(dataset_dir)
    env = TabletopArmEnv(task="reach")
    ik = DlsIk(env.model, env.joint_limits)
    try:
        seeds = sorted(int(s) for s in re.findall(r"seed (\d+) succeeded", run.stdout))
        assert len(seeds) == 2 and seeds[0] >= 5, run.stdout
        for i, seed in enumerate(seeds):
            episode = source[i]
            env.reset(seed=seed)
            assert episode.instruction == env.instruction
            assert episode.num_steps >= 5 and episode.images.shape[1:] == (64, 64, 3)
            # the arm really went where the expert sent it: the last recorded state puts the tool
            # tip on the named cube of this seed's layout (reach threshold 3 cm, + 1 cm slack)
            top = env.cube_position(env.colour) + np.array([0.0, 0.0, CUBE_HALF])
            assert np.linalg.norm(ik.tip_position(episode.joint_positions[-1]) - top) < 0.04
            first = ik.tip_position(episode.joint_positions[0])
            assert np.linalg.norm(first - top) > 0.06  # it started away from the cube
            # the action is the expert's velocity-limited absolute target (<= 0.2 rad per 0.1 s step)
            assert np.all(np.abs(episode.joint_target - episode.joint_positions) < 0.45)
    finally:
        env.close()

    models = tmp_path / "models"
    assert cli.main(["train", "--data", str(dataset_dir), "--name", "recorded_teacher", "--model-dir", str(models),
                     "--run-dir", str(tmp_path / "run"), "--steps", "2", *TINY_TEACHER]) == 0
    from ceed_vla_ros.checkpoint import load_checkpoint

    teacher = load_checkpoint(models, "recorded_teacher")
    assert teacher.metadata.joint_names == ["base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch"]
    assert abs(teacher.metadata.dt - 0.1) < 1e-9


class Robot:
    """A camera on /test_record/cam (pixel = frame count), joints j2, j1 and a teleop device's commands."""

    def __init__(self, node) -> None:
        self.node, self.count = node, 0
        self.camera = node.create_publisher(Image, "/test_record/cam", 10)
        self.joints = node.create_publisher(JointState, JOINT_STATES_TOPIC, 10)
        self.commands = node.create_publisher(Float64MultiArray, FORWARD_COMMAND_TOPIC, 10)
        node.create_timer(1 / 30, self._image)
        node.create_timer(0.02, self._joint_state)
        node.create_timer(0.05, lambda: self.commands.publish(Float64MultiArray(data=[0.5, -0.5])))

    def _image(self) -> None:
        self.count += 1
        msg = Image(height=6, width=8, encoding="rgb8", step=24, data=bytes([self.count % 256]) * 144)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.camera.publish(msg)

    def _joint_state(self) -> None:
        msg = JointState(name=["j2", "j1", "gripper"], position=[2.0, 1.0, 0.0])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.joints.publish(msg)


def test_record_bringup_with_launch_arguments_and_the_episode_command(ros_node, tmp_path, wait_until):
    robot = Robot(ros_node)
    dataset_dir = tmp_path / "robot_demos"
    log = open(tmp_path / "record.log", "w+")
    runner = subprocess.Popen(
        [str(BIN / "ceed-vla"), "launch", "record", f"dataset_dir:={dataset_dir}", "camera_topic:=/test_record/cam",
         "joint_names:=[j1, j2]", "instruction:=wipe the table", "fps:=20"],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )

    def episode(action: str) -> subprocess.CompletedProcess:
        command = [str(BIN / "ceed-vla"), "episode", action, "--wait", "30", "--timeout", "30"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    try:
        # the recorder has subscribed to the three streams (DDS discovery takes seconds under load)
        publishers = (robot.camera, robot.joints, robot.commands)
        assert wait_until(lambda: all(p.get_subscription_count() >= 1 for p in publishers), 60.0)
        time.sleep(0.5)
        t_start = time.monotonic()
        started = episode("start")
        assert started.returncode == 0 and "ok: recording" in started.stdout, started.stdout + started.stderr
        t_started = time.monotonic()
        time.sleep(1.0)
        t_stop = time.monotonic()
        stopped = episode("stop")
        t_stopped = time.monotonic()
        assert stopped.returncode == 0 and "saved" in stopped.stdout, stopped.stdout + stopped.stderr
        again = episode("stop")
        assert again.returncode == 1 and "refused: no episode running" in again.stdout
    finally:
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=30)
    log.seek(0)
    output = log.read()
    assert runner.returncode == 0, output
    dataset = LeRobotDataset(dataset_dir)
    assert len(dataset) == 1 and dataset.tasks == ["wipe the table"] and dataset.fps == 20
    recorded = LeRobotSource(dataset_dir)[0]
    assert list(recorded.joint_names) == ["j1", "j2"]
    # recording ran at least from the start's answer to the stop call, at most from the start call to
    # the stop's answer (each `ceed-vla episode` takes seconds to start up on a busy machine), at 20 Hz
    assert 0.8 * 20 * (t_stop - t_started) <= recorded.num_steps <= 20 * (t_stopped - t_start) + 2, output
    np.testing.assert_allclose(recorded.joint_positions, np.tile([1.0, 2.0], (recorded.num_steps, 1)))
    np.testing.assert_allclose(recorded.joint_target, np.tile([0.5, -0.5], (recorded.num_steps, 1)))
