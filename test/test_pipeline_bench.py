"""`ceed-vla bench-pipeline`: its arguments, and a short side-by-side run of two control loops over DDS.

The run is a smoke test with a tiny random checkpoint (2 s per loop, no load): it checks that each
loop was measured as the loop the driver reported running, with commands received; it asserts no
speed (the figures come from `results/control_loop/`)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ceed_vla_ros.tools.pipeline_bench import parse_loops, parse_rates


def test_loops_and_rates_parse_and_bad_ones_are_refused():
    assert parse_loops("streamer,thread") == ("streamer", "thread")
    assert parse_loops(" rclpy_timer ") == ("rclpy_timer",)
    for bad in ("stream", "streamer,thred", ",", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_loops(bad)
    assert parse_rates("200,500") == [200.0, 500.0]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_rates("5000")


def test_two_loops_side_by_side_report_the_loop_the_driver_ran(tiny_model_dir, tmp_path):
    out = tmp_path / "pipeline"
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ceed-vla"), "bench-pipeline", "--rates", "500",
         "--loops", "streamer,thread", "--seconds", "2", "--load-processes", "0", "--out", str(out),
         f"model_dir:={tiny_model_dir}", "checkpoint:=tiny_sim"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "WARNING: asked for control_loop" not in result.stdout
    results = json.loads((out / "pipeline.json").read_text())
    assert list(results) == ["500 streamer", "500 thread"]
    for key, runs in results.items():
        idle = runs["idle"]
        assert idle["driver"]["control_loop"] == key.split()[1]
        assert idle["chunks"] > 0 and idle["command_rate_hz"] > 0
        assert idle["command_period_error_p99_ms"] >= 0  # False for NaN: no command intervals received
        assert idle["driver"]["control_periods_missed"].isdigit()  # the driver's count is kept with the window
    report = (out / "pipeline.md").read_text()
    assert "### 500 Hz, control_loop streamer" in report and "### 500 Hz, control_loop thread" in report
    rows = [line for line in report.splitlines() if line.startswith("| 500 ")]
    assert [row.split(" | ")[0] for row in rows] == ["| 500 streamer", "| 500 thread"]
