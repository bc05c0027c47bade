"""Smoke test of `ceed-vla bench-all` (make bench) with tiny counts, so the benchmark cannot rot.

It runs every part for real (decoding, closed loop, the ROS pipeline over DDS) on a tiny random
checkpoint and checks that the report holds measured figures; it asserts no speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_all_writes_a_report_with_every_section(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ceed-vla"), "bench-all", "--teacher", "tiny_sim", "--student", "tiny_sim",
         "--model-dir", str(tiny_model_dir), "--episodes", "1", "--tasks", "reach", "--repeats", "2",
         "--observations", "2", "--early-exit-steps", "1", "2", "--pipeline-seconds", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (out / "report.md").read_text()
    for heading in ("## How we compare", "## Closed loop", "## Decoding", "## ROS pipeline"):
        assert heading in report
    for plot in ("success_vs_speedup.png", "closed_loop/success_vs_forward_passes.png", "closed_loop/iterations_hist.png"):
        assert (out / plot).stat().st_size > 1000
    decoding = json.loads((out / "decoding.json").read_text())["tiny_sim"]
    methods = [row["method"] for row in decoding]
    assert methods[:3] == ["HF generate (greedy)", "ours: AR", "ours: Jacobi"]
    assert all(row["median_ms"] > 0 for row in decoding)
    ar = decoding[1]
    assert ar["forward_passes"] == 16 and ar["matches_ar"] == 1.0  # 4 x 4 tokens
    pipeline = json.loads((out / "pipeline.json").read_text())
    for condition in ("idle", f"{os.cpu_count()} busy processes"):
        assert pipeline[condition]["chunks"] > 0 and pipeline[condition]["command_rate_hz"] > 0
        assert set(pipeline[condition]["nodes"]) == {"sim_arm", "camera_subscriber", "policy", "arm_driver"}
