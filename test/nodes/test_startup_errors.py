"""A bad start-up value gives one ``cannot start:`` line and exit code 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD_STARTS = [
    ("policy_node", ["-p", "checkpoint:=nope"], "nope"),
    ("policy_node", ["-p", "early_exit_steps:=0"], "early_exit_steps"),
    ("policy_node", ["-p", "early_exit_steps:=many"], "early_exit_steps"),
    ("policy_node", ["-p", "decoding_mode:=fast"], "decoding_mode"),
    ("policy_node", ["-p", "device:=cuda:99"], "cuda:99"),  # CPU torch: no CUDA; a GPU machine: no GPU 99
    ("policy_node", ["-p", "device:=tpu"], "device"),
    ("policy_node", ["-p", "dtype:=int8"], "dtype"),
    ("arm_driver", ["-p", "control_rate_hz:=-1.0"], "control_rate_hz"),
    ("arm_driver", ["-p", "joint_names:=[a, b]", "-p", "position_lower:=[0.0]"], "joint limits"),
    ("camera_subscriber", ["-p", "checkpoint:=nope"], "nope"),
    ("camera_subscriber", ["-p", "image_transport:=theora"], "image_transport"),
    ("sim_arm", ["-p", "task:=fly"], "task"),
]


@pytest.mark.parametrize(("executable", "ros_args", "named"), BAD_STARTS,
                         ids=[f"{e}:{' '.join(a[1::2])}" for e, a, _ in BAD_STARTS])
def test_bad_start_up_value_is_one_clear_line(executable, ros_args, named):
    command = [str(Path(sys.executable).parent / executable), "--ros-args", *ros_args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.startswith("cannot start:")]
    assert len(lines) == 1, output
    assert named in lines[0], output


@pytest.mark.parametrize("executable", ["policy_node", "arm_driver", "camera_subscriber", "sim_arm"])
def test_help_names_the_executable(executable):
    result = subprocess.run([str(Path(sys.executable).parent / executable), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"usage: {executable} [--ros-args" in result.stdout
