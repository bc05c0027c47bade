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
    assert "| temporal_ensemble | cubic |" in (out_dir / "results.md").read_text()
    assert all(row["motion"] == "cubic" for row in rows)


def test_bench_transitions_compares_the_motion_profiles(tmp_path, capsys):
    rc = cli.main(["bench-transitions", "--episodes", "1", "--strategies", "replace", "--motion", "linear", "cubic",
                   "--max-acceleration", "20", "--model-dir", str(REPO / "models"), "--out", str(tmp_path),
                   "--name", "motion"])
    assert rc == 0
    rows = {row["motion"]: row for row in json.loads((tmp_path / "motion.json").read_text())["rows"]}
    assert set(rows) == {"linear", "cubic"}
    # the cubic profile's commanded stream keeps the acceleration limit (float rounding aside)
    assert 0 < rows["cubic"]["peak_acceleration"] <= 20.0 * (1 + 1e-6)
    assert rows["linear"]["peak_jerk"] > 0 and rows["cubic"]["peak_jerk"] > 0
    assert "replace, cubic / linear: peak acceleration x" in (tmp_path / "motion.md").read_text()
