"""bench-kinematics and bench-transitions run and report what they measure (figures: README)."""

from __future__ import annotations

import json
from pathlib import Path

from ceed_vla_ros.tools import cli

REPO = Path(__file__).resolve().parents[1]


def test_bench_kinematics_reports_both_arms(capsys):
    assert cli.main(["bench-kinematics", "--solves", "30"]) == 0
    out = capsys.readouterr().out
    assert "| sim arm, 4 joints, position only |" in out and "| 6-joint arm, position + rotation |" in out
    assert "/30 (" in out


def test_bench_transitions_runs_every_strategy_on_the_shipped_student(tmp_path, capsys):
    out_dir = tmp_path / "transitions"
    rc = cli.main(["bench-transitions", "--episodes", "1", "--model-dir", str(REPO / "models"), "--out", str(out_dir)])
    assert rc == 0
    rows = json.loads((out_dir / "results.json").read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["replace", "warm_start", "temporal_ensemble", "pin"]
    for row in rows:
        assert row["episodes"] == 1 and row["iterations_mean"] <= 2.0  # early exit k=2
        assert row["jerk_rms"] > 0 and row["boundaries"] > 0
    assert "| temporal_ensemble |" in (out_dir / "results.md").read_text()
