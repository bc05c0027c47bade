"""Shared test set-up: real DDS kept on this machine, one ROS domain per test run."""

from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every test run talks over real DDS; keep discovery on localhost and give the run its own domain
# (make test sets one; a bare `pytest` gets a random one here). Child processes inherit both.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def wait_until() -> Callable[[Callable[[], bool], float], bool]:
    """Bounded polling (DDS discovery between processes can take seconds): never a fixed sleep."""
    return _wait_until


# -- ROS node processes -----------------------------------------------------------------------------
SIM_JOINTS = ["base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model dir with one small random checkpoint, ``tiny_sim``, shaped like the sim arm's."""
    from ceed_vla_ros.action_tokenizer import NormStats
    from ceed_vla_ros.checkpoint import build_tiny_checkpoint
    from ceed_vla_ros.metadata import CheckpointMetadata

    model_dir = tmp_path_factory.mktemp("models")
    metadata = CheckpointMetadata(
        name="tiny_sim",
        action_space="joint_delta",
        joint_names=list(SIM_JOINTS),
        action_dims=4,
        chunk_len=4,
        dt=0.1,
        action_norm=NormStats(q01=(-0.3,) * 4, q99=(0.3,) * 4, mask=(True,) * 4),
        proprio_names=list(SIM_JOINTS),
        proprio_norm=NormStats(q01=(-2.0,) * 4, q99=(2.0,) * 4, mask=(True,) * 4),
    )
    build_tiny_checkpoint(model_dir / "tiny_sim", metadata, seed=0,
                          instructions=["reach the red cube", "reach the green cube", "reach the blue cube",
                                        "push the red cube to the goal"],
                          hidden_size=32, num_layers=2)
    return model_dir


@pytest.fixture(scope="session")
def spec_model_dir(tmp_path_factory):
    """Checkpoints whose image specs differ: rgb without crop, bgr with a centre-square crop."""
    import dataclasses

    from ceed_vla_ros.action_tokenizer import NormStats
    from ceed_vla_ros.checkpoint import build_tiny_checkpoint
    from ceed_vla_ros.metadata import CheckpointMetadata, ImageSpec

    model_dir = tmp_path_factory.mktemp("spec_models")
    base = CheckpointMetadata(name="rgb_plain", action_space="joint_absolute", joint_names=["j"], action_dims=1,
                              chunk_len=1, dt=0.1, action_norm=NormStats((-1.0,), (1.0,), (True,)),
                              image=ImageSpec(height=32, width=32))
    for name, image in (("rgb_plain", ImageSpec(height=32, width=32)),
                        ("bgr_crop", ImageSpec(height=32, width=32, crop="center_square", channel_order="bgr"))):
        build_tiny_checkpoint(model_dir / name, dataclasses.replace(base, name=name, image=image), hidden_size=16,
                              num_layers=1, num_heads=2, num_keypoints=2, num_image_tokens=1, vision_channels=(4,),
                              vision_strides=(2,), vision_mlp_hidden=8, instructions=["go"])
    return model_dir


class NodeProcess:
    """An installed node executable in its own process; output kept for assertions."""

    def __init__(self, executable: str, ros_args: list[str], env: dict | None = None) -> None:
        import subprocess
        import sys
        import tempfile

        self.log = tempfile.TemporaryFile(mode="w+")
        command = [str(Path(sys.executable).parent / executable), "--ros-args", *ros_args]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, **(env or {})})

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig=None) -> int:
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(sig or signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextlib.contextmanager
def _node_starter():
    started: list[NodeProcess] = []

    def start(executable: str, ros_args: list[str], env: dict | None = None) -> NodeProcess:
        node = NodeProcess(executable, ros_args, env)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def start_node():
    """start_node(executable, ros_args) -> NodeProcess; every process is stopped after the test."""
    with _node_starter() as start:
        yield start


@pytest.fixture(scope="module")
def module_start_node():
    """Like start_node, for processes shared by the tests of one module."""
    with _node_starter() as start:
        yield start


def spinning_probe_node(name: str):
    """An rclpy node in the test process (own context), spun by a background executor."""
    from ceed_vla_ros.nodes.interfaces import probe_node

    return probe_node(name)


@pytest.fixture
def ros_node():
    with spinning_probe_node(f"test_probe_{os.getpid()}") as node:
        yield node


@pytest.fixture(scope="module")
def module_ros_node():
    """Like ros_node, shared by the tests of one module (with a node process started once)."""
    with spinning_probe_node(f"test_probe_{os.getpid()}") as node:
        yield node
