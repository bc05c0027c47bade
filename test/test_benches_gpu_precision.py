"""bench-gpu's --device cpu smoke mode and bench-precision run end to end and write their reports."""

from __future__ import annotations

import json

from ceed_vla_ros.tools import cli


def test_bench_gpu_smoke_runs_on_cpu(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "gpu"
    assert cli.main(["bench-gpu", "--device", "cpu", "--smoke", "--checkpoint", "tiny_sim", "--model-dir",
                     str(tiny_model_dir), "--out", str(out)]) == 0
    report = json.loads((out / "bench_gpu.json").read_text())
    names = [s["name"] for s in report["sections"]]
    assert names == ["tiny", "llm_smoke"]
    for section in report["sections"]:
        modes = [r["mode"] for r in section["rows"]]
        assert modes == ["ar", "jacobi", "early_exit k=1", "early_exit k=2", "early_exit k=3"]
        rows = {r["mode"]: r for r in section["rows"]}
        assert rows["ar"]["forward_passes"] == section["block_len"]
        for k in (1, 2, 3):
            assert rows[f"early_exit k={k}"]["forward_passes"] <= k + 1
    assert "speed-up vs AR" in (out / "bench_gpu.md").read_text()


def test_bench_precision_compares_float32_and_bfloat16(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "precision"
    assert cli.main(["bench-precision", "--checkpoints", "tiny_sim", "--model-dir", str(tiny_model_dir),
                     "--observations", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "precision.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["ar", "jacobi", "early_exit:2"]
    for row in rows:
        assert 0.0 <= row["tokens_equal"] <= 1.0 and 0 <= row["chunks_equal"] <= 2
        assert row["jacobi_equals_ar_fp32"] == 2  # exact in float32 (ties aside: none on these seeds)
    assert "Jacobi == AR bfloat16" in capsys.readouterr().out
