"""Bring your own robot, over real DDS: an ee_delta checkpoint drives the simulated arm through IK,
one multi-point JointTrajectory per chunk, the gripper channel, and the chunk transitions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from ceed_vla_ros.kinematics import ArmKinematics
from ceed_vla_ros.metadata import EndEffectorSpec, GripperSpec, load_metadata
from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.interfaces import ACTIONS_TOPIC, JOINT_STATES_TOPIC, TRAJECTORY_TOPIC

REPO = Path(__file__).resolve().parents[2]
JOINTS = ["base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch"]
GRIPPER_TOPIC = "/gripper_controller/commands"


@pytest.fixture(scope="module")
def robot_model_dir(tmp_path_factory) -> Path:
    """Checkpoints for the sim arm with a gripper: ee_delta (position-only, in base_link) and joint_absolute."""
    from ceed_vla_ros.action_tokenizer import NormStats
    from ceed_vla_ros.checkpoint import build_tiny_checkpoint
    from ceed_vla_ros.metadata import CheckpointMetadata

    model_dir = tmp_path_factory.mktemp("robot_models")
    words = ["reach the red cube"]
    ee = CheckpointMetadata(
        name="tiny_ee", action_space="ee_delta", joint_names=list(JOINTS), action_dims=4, chunk_len=4, dt=0.1,
        action_norm=NormStats(q01=(-0.06, -0.06, -0.06, 0.0), q99=(0.8, 0.06, 0.06, 1.0), mask=(True,) * 4),
        end_effector=EndEffectorSpec("base_link", "tool_tip", "none", "base", "image_pose"),
        gripper=GripperSpec("binary", 0.0, 1.0, 0.5))
    joint = CheckpointMetadata(
        name="tiny_joint", action_space="joint_absolute", joint_names=list(JOINTS), action_dims=5, chunk_len=4,
        dt=0.1, action_norm=NormStats(q01=(-0.5,) * 5, q99=(0.5,) * 5, mask=(True,) * 5),
        gripper=GripperSpec("continuous", 0.0, 1.0))
    for metadata in (ee, joint):
        build_tiny_checkpoint(model_dir / metadata.name, metadata, seed=0, instructions=words, hidden_size=16,
                              num_layers=1)
    return model_dir


class Probe:
    """Sends chunks (and, without a sim arm, joint states); records trajectories and gripper commands."""

    def __init__(self, node, publish_joint_states: bool) -> None:
        self.node = node
        self.lock = threading.Lock()
        self.trajectories: list[JointTrajectory] = []
        self.gripper: list[float] = []
        self.joint_states: list[np.ndarray] = []
        self.sequence = 0
        self.actions = node.create_publisher(ActionTokens, ACTIONS_TOPIC, 10)
        node.create_subscription(JointTrajectory, TRAJECTORY_TOPIC, self._on_trajectory, 50)
        node.create_subscription(Float64MultiArray, GRIPPER_TOPIC, self._on_gripper, 200)
        node.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, 50)
        if publish_joint_states:
            self.joint_publisher = node.create_publisher(JointState, JOINT_STATES_TOPIC, 10)
            node.create_timer(0.02, self._publish_joint_state)

    def _publish_joint_state(self) -> None:
        msg = JointState(name=JOINTS, position=[0.0] * 4)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.joint_publisher.publish(msg)

    def _on_trajectory(self, msg) -> None:
        with self.lock:
            self.trajectories.append(msg)

    def _on_gripper(self, msg) -> None:
        with self.lock:
            self.gripper.append(msg.data[0])

    def _on_joint_state(self, msg) -> None:
        if list(msg.name) == JOINTS:
            with self.lock:
                self.joint_states.append(np.array(msg.position))

    def latest_joints(self) -> np.ndarray | None:
        with self.lock:
            return self.joint_states[-1].copy() if self.joint_states else None

    def send(self, metadata, actions: np.ndarray, stamp_ns: int | None = None) -> int:
        self.sequence += 1
        msg = ActionTokens()
        stamp = self.node.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        msg.sequence = self.sequence
        msg.checkpoint_id = metadata.checkpoint_id
        msg.token_ids = [int(t) for t in metadata.action_tokenizer().encode(actions)]
        msg.chunk_length, msg.action_dims, msg.step_dt = metadata.chunk_len, metadata.action_dims, metadata.dt
        msg.decoding_mode = "early_exit"
        self.actions.publish(msg)
        return stamp


def driver_args(model_dir: Path, *extra: str) -> list[str]:
    return ["-r", "__node:=arm_driver", "--params-file", str(REPO / "config/sim_arm.yaml"),
            "-p", f"model_dir:={model_dir}", "-p", "command_interface:=joint_trajectory", *extra]


def test_ee_delta_checkpoint_drives_the_sim_arm_through_ik_one_trajectory_per_chunk(
        robot_model_dir, start_node, ros_node, wait_until):
    sim = start_node("sim_arm", ["-r", "__node:=sim_arm", "-p", "seed:=3", "-p", "camera_rate_hz:=2.0"])
    driver = start_node("arm_driver", driver_args(robot_model_dir, "-p", "gripper_interface:=topic",
                                                  "-p", "gripper_max_velocity:=0.5"))
    probe = Probe(ros_node, publish_joint_states=False)
    metadata = load_metadata(robot_model_dir, "tiny_ee")
    assert wait_until(lambda: probe.actions.get_subscription_count() > 0 and len(probe.gripper) > 20
                      and probe.latest_joints() is not None, 30.0), driver.output() + sim.output()
    assert probe.gripper[-1] == pytest.approx(0.04)  # no gripper joint state: assumed open
    # the default control_loop (streamer) sends a command per period: not what joint_trajectory does
    assert "control_loop streamer unavailable (joint_trajectory publishes one trajectory per chunk" \
        in driver.output(), driver.output()
    kinematics = ArmKinematics.from_file(REPO / "config/sim_arm.urdf", JOINTS, "base_link", "tool_tip")
    start_tip, _ = kinematics.forward(probe.latest_joints())
    steps = np.linspace(0.25, 1.0, 4)[:, None] * np.array([0.05, 0.03, -0.05])  # ramp to (+5, +3, -5) cm
    actions = np.column_stack((steps, np.zeros(4)))  # the gripper closes
    stamp = probe.send(metadata, actions)
    assert wait_until(lambda: len(probe.trajectories) >= 1, 10.0), driver.output()
    trajectory = probe.trajectories[0]
    assert trajectory.joint_names == JOINTS
    assert trajectory.header.stamp.sec * 10**9 + trajectory.header.stamp.nanosec == stamp
    times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in trajectory.points]
    # at the ends of the steps' windows (on the control period's grid: step_dt is float32), the last
    # one where the limited stream comes to rest (later if the acceleration limits make it arrive late)
    np.testing.assert_allclose(times[:-1], [0.1, 0.2, 0.3, 0.4][4 - len(times):-1], atol=0.0025 + 1e-6)
    assert times[-1] >= 0.4 - 0.0025 - 1e-6
    assert len(times) >= 3 and all(len(p.velocities) == 4 for p in trajectory.points)
    velocities = np.array([p.velocities for p in trajectory.points])
    assert np.all(velocities[-1] == 0.0)
    assert np.all(np.abs(np.diff(velocities, axis=0)) <= 20.0 * np.diff(times)[:, None] + 1e-9)  # max_acceleration
    last = np.array(trajectory.points[-1].positions)
    decoded = metadata.action_tokenizer().decode(metadata.action_tokenizer().encode(actions))
    np.testing.assert_allclose(kinematics.forward(last)[0], start_tip + decoded[-1, :3], atol=0.0025)
    # the simulated arm follows the trajectory: its tool tip ends at the commanded end-effector pose
    assert wait_until(lambda: np.linalg.norm(kinematics.forward(probe.latest_joints())[0] - start_tip - steps[-1])
                      < 0.01, 10.0), (kinematics.forward(probe.latest_joints())[0], start_tip + steps[-1])
    assert wait_until(lambda: probe.gripper[-1] == pytest.approx(0.0), 5.0), probe.gripper[-5:]
    assert np.all(np.abs(np.diff(probe.gripper)) <= 0.5 / 200 + 1e-12)  # gripper_max_velocity / rate
    with probe.lock:
        count = len(probe.trajectories)
    assert count == 1  # the chunk's one trajectory; a used-up chunk is not re-sent (the controller holds)
    # an unreachable target (0.8 m further out) is refused with a reason and the arm holds
    probe.send(metadata, np.column_stack((np.full((4, 3), 0.8) * [1, 0, 0], np.ones(4))))
    assert wait_until(lambda: "unreachable" in driver.output(), 10.0), driver.output()
    assert driver.alive() and sim.alive()


@pytest.mark.parametrize("transition", ["replace", "temporal_ensemble"])
def test_chunk_transition_changes_the_boundary_and_the_gripper_joint_is_in_the_trajectory(
        transition, robot_model_dir, start_node, ros_node, wait_until):
    driver = start_node("arm_driver", driver_args(
        robot_model_dir, "-p", f"chunk_transition:={transition}", "-p", "ensemble_decay:=0.0",
        "-p", "gripper_interface:=joint", "-p", "max_velocity:=[5.0, 5.0, 5.0, 5.0]",
        "-p", "gripper_max_velocity:=10.0", "-p", "max_acceleration:=[1e6, 1e6, 1e6, 1e6]",
        "-p", "gripper_max_acceleration:=1e4"))  # limits that hardly bind: the points are the targets
    probe = Probe(ros_node, publish_joint_states=True)
    metadata = load_metadata(robot_model_dir, "tiny_joint")
    assert wait_until(lambda: probe.actions.get_subscription_count() > 0 and "joints at" in driver.output(),
                      20.0), driver.output()
    first = np.column_stack((np.full((4, 4), 0.05), np.full(4, 1.0)))
    second = np.column_stack((np.full((4, 4), -0.05), np.full(4, 0.0)))
    now = ros_node.get_clock().now().nanoseconds
    # wait for joint states to reach the driver, then two chunks 0.1 s apart, stamped in the future of
    # neither: the second one's first three steps overlap the first one's last three
    assert wait_until(lambda: "no joint state" not in driver.output(), 2.0)
    base = now + 300_000_000
    while ros_node.get_clock().now().nanoseconds < base:
        time.sleep(0.005)
    probe.send(metadata, first, stamp_ns=base)
    assert wait_until(lambda: len(probe.trajectories) >= 1, 10.0), driver.output()
    while ros_node.get_clock().now().nanoseconds < base + 105_000_000:
        time.sleep(0.005)
    probe.send(metadata, second, stamp_ns=base + 100_000_000)
    assert wait_until(lambda: len(probe.trajectories) >= 2, 10.0), driver.output()
    with probe.lock:
        trajectory = probe.trajectories[1]
    assert trajectory.joint_names == JOINTS + ["gripper"]
    joints = np.array([p.positions[:4] for p in trajectory.points])
    gripper = np.array([p.positions[4] for p in trajectory.points])
    decoded_first = metadata.action_tokenizer().decode(metadata.action_tokenizer().encode(first))[0, 0]
    decoded_second = metadata.action_tokenizer().decode(metadata.action_tokenizer().encode(second))[0, 0]
    times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in trajectory.points]
    # relative to the second image: steps end 0.1 .. 0.4 s later; those ending by 0.3 s overlap the first chunk
    overlapping = np.array(times) <= 0.3 + 0.0025 + 1e-6  # points on the control period's grid (200 Hz)
    assert overlapping.sum() >= 1 and not overlapping[-1]
    # the points are the limited stream at the control ticks nearest the steps' ends, up to half a control
    # period (2.5 ms at 200 Hz) off: within (fastest target change per second) x 2.5 ms of the targets
    # (~2.5e-3 rad here; which tick is nearest depends on when the chunk lands), where replace and the
    # ensemble differ by 0.05 rad
    half_period, dt = 0.5 / 200.0, metadata.dt
    decoded_gripper = metadata.action_tokenizer().decode(metadata.action_tokenizer().encode(second))[0, 4]
    decoded_first_gripper = metadata.action_tokenizer().decode(metadata.action_tokenizer().encode(first))[0, 4]
    joint_tolerance = np.abs(decoded_first - decoded_second) / dt * half_period + 1e-4
    gripper_tolerance = 0.04 * abs(decoded_first_gripper - decoded_gripper) / dt * half_period + 1e-4
    assert joint_tolerance < 0.01  # still far below the 0.05 rad that tells the transitions apart
    if transition == "replace":
        np.testing.assert_allclose(joints, decoded_second, atol=joint_tolerance)
    else:  # equal weights: halfway between the two chunks where they overlap
        np.testing.assert_allclose(joints[overlapping], (decoded_first + decoded_second) / 2, atol=joint_tolerance)
        np.testing.assert_allclose(joints[~overlapping], decoded_second, atol=joint_tolerance)
    np.testing.assert_allclose(gripper, 0.04 * decoded_gripper, atol=gripper_tolerance)  # continuous; never averaged
    assert driver.alive()
