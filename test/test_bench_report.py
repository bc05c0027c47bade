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
         "--observations", "2", "--early-exit-steps", "1", "2", "--pipeline-seconds", "2", "--latency-episodes", "1",
         "--latency-tasks", "reach_moving", "--latencies", "measured", "fixed:450", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (out / "report.md").read_text()
    for heading in ("## Targets", "## How we compare", "## Closed loop", "## Latency-aware closed loop", "## Decoding",
                    "## ROS pipeline"):
        assert heading in report
    assert "| tiny_sim:early_exit:1+fused [fixed:450] | reach_moving | 0/1 (0 %" in report  # stale: all refused
    assert (out / "latency" / "success_vs_policy_hz.png").stat().st_size > 1000
    for plot in (
        "success_vs_speedup.png",
        "closed_loop/success_vs_forward_passes.png",
        "closed_loop/iterations_hist.png",
    ):
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


def test_targets_section_says_met_or_not_met_from_the_figures():
    from ceed_vla_ros.tools.bench_report import targets_section

    def row(setting, task, successes, passes):
        return {
            "setting": setting,
            "task": task,
            "episodes": 50,
            "successes": successes,
            "success_rate": successes / 50,
            "mean_forward_passes": passes,
        }

    per_task = [
        row("t:ar", "reach", 46, 16.0),
        row("t:ar", "push", 20, 16.0),
        row("s:early_exit:3", "reach", 46, 4.0),
        row("s:early_exit:3", "push", 18, 3.99),
        row("s:early_exit:2", "reach", 42, 3.0),
        row("s:early_exit:2", "push", 8, 3.0),
        row("s:early_exit:5", "reach", 46, 6.0),
        row("s:early_exit:5", "push", 20, 6.0),
    ]
    lines = targets_section(per_task, "t", "s").splitlines()
    teacher = next(line for line in lines if "t AR reach" in line)
    assert "92% (46/50)" in teacher and teacher.endswith("| met |")
    verdict = {k: next(line for line in lines if f"s:early_exit:{k}:" in line) for k in (2, 3, 5)}
    assert verdict[3].endswith("| met |") and "4.00x" in verdict[3] and "push -4 pts" in verdict[3]
    assert "NOT met" in verdict[2] and "reach -8 pts" in verdict[2]  # enough passes saved, too much success lost
    assert "NOT met" in verdict[5] and "2.67x" in verdict[5]  # success kept, not enough passes saved
    failing = targets_section([row("t:ar", "reach", 30, 16.0)], "t", "s")
    assert "60% (30/50) | **NOT met**" in failing
