"""Closed-loop evaluation: settings syntax, chunk execution, end-to-end report on a tiny checkpoint."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ceed_vla_ros.action_tokenizer import NormStats
from ceed_vla_ros.checkpoint import build_tiny_checkpoint
from ceed_vla_ros.decoding import DecodeSettings, DecodeStats
from ceed_vla_ros.metadata import CheckpointMetadata
from ceed_vla_ros.sim.env import COLOURS, DEFAULT_INSTRUCTIONS, TabletopArmEnv
from ceed_vla_ros.sim.mjcf import JOINT_NAMES
from ceed_vla_ros.tools import cli
from ceed_vla_ros.tools.evaluation import Setting, SettingTaskResult, run_episode


def test_setting_syntax():
    s = Setting.parse("sim_teacher:ar")
    assert (s.checkpoint, s.decode.mode, s.decode.early_exit_steps, s.label) == (
        "sim_teacher",
        "ar",
        None,
        "sim_teacher:ar",
    )
    s = Setting.parse("stu:early_exit:2@warm_start")
    assert s.decode == DecodeSettings("early_exit", 2, "warm_start") and s.label == "stu:early_exit:2@warm_start"
    assert Setting.parse("stu:jacobi", default_init="warm_start").decode.init == "warm_start"
    s = Setting.parse("stu:early_exit:1@warm_start+fused")
    assert s.decode == DecodeSettings("early_exit", 1, "warm_start", fused_prefill=True)
    assert s.label == "stu:early_exit:1@warm_start+fused"
    s = Setting.parse("stu:jacobi+keep+fused")
    assert s.decode.fused_prefill and s.decode.keep_final_prefix and s.label == "stu:jacobi+fused+keep"
    for bad in (
        "stu:ar+fused",
        "stu:jacobi+fast",
        "stu:jacobi+keep+keep",
        "stu",
        "stu:fast",
        "stu:early_exit",
        "stu:early_exit:0",
        "stu:jacobi:3",
        "stu:ar@warm_start",
        "stu:jacobi@hot",
        "../x:ar",
    ):
        with pytest.raises(ValueError):
            Setting.parse(bad)


class _ConstantPolicy:
    """Stub policy: always the same chunk-relative chunk; records the joints it was queried with."""

    def __init__(self, chunk: np.ndarray) -> None:
        self.chunk = chunk
        self.metadata = SimpleNamespace(action_space="joint_delta", name="recorded", joint_names=list(JOINT_NAMES))
        self.queries: list[np.ndarray] = []

    def reset(self) -> None:
        pass

    def predict(self, image, joints, instruction, settings=None, **kwargs):
        self.queries.append(joints.copy())
        stats = DecodeStats(mode="ar", block_len=8, forward_passes=8, iterations=7, converged=True, wall_time_ms=1.0)
        return SimpleNamespace(actions=self.chunk, stats=stats)


def test_chunk_is_executed_relative_to_the_joints_at_the_image():
    chunk = np.array([[0.05, 0.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0]])
    with TabletopArmEnv(task="reach", horizon=6) as env:
        policy = _ConstantPolicy(chunk)
        record = SettingTaskResult("stub", "reach")
        result = run_episode(env, policy, Setting.parse("stub:ar"), seed=0, execute_steps=2, record=record)
        assert result.steps == 6 and result.chunks == 3 and not result.success
        # After a chunk, the last applied target = joints at the image time + the last chunk action.
        np.testing.assert_allclose(env.joint_target, policy.queries[-1] + chunk[-1])
        assert len(record.forward_passes) == 3
        policy = _ConstantPolicy(chunk)
        result = run_episode(env, policy, Setting.parse("stub:ar"), seed=0, execute_steps=1, record=record)
        assert result.chunks == 6
        np.testing.assert_allclose(env.joint_target, policy.queries[-1] + chunk[0])


def test_eval_end_to_end_on_a_tiny_checkpoint(tmp_path):
    norm = NormStats((-0.5,) * 4, (0.5,) * 4, (True,) * 4)
    proprio = NormStats((-2.0,) * 4, (2.0,) * 4, (True,) * 4)
    metadata = CheckpointMetadata(
        name="tiny",
        action_space="joint_delta",
        joint_names=list(JOINT_NAMES),
        action_dims=4,
        chunk_len=2,
        dt=0.1,
        action_norm=norm,
        proprio_names=list(JOINT_NAMES),
        proprio_norm=proprio,
    )
    instructions = [t.format(colour=c) for t in DEFAULT_INSTRUCTIONS.values() for c in COLOURS]
    build_tiny_checkpoint(
        tmp_path / "models" / "tiny",
        metadata,
        instructions=instructions,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        num_keypoints=4,
        num_image_tokens=1,
        vision_channels=(4,),
        vision_strides=(4,),
        vision_mlp_hidden=16,
    )
    out = tmp_path / "results"
    argv = [
        "eval",
        "--model-dir",
        str(tmp_path / "models"),
        "--settings",
        "tiny:ar",
        "tiny:jacobi",
        "tiny:early_exit:1@warm_start",
        "--episodes",
        "2",
        "--tasks",
        "reach",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    rows = {r["setting"]: r for r in report["per_task"]}
    assert set(rows) == {"tiny:ar", "tiny:jacobi", "tiny:early_exit:1@warm_start"}
    assert all(r["episodes"] == 2 and 0 <= r["successes"] <= 2 for r in rows.values())
    assert rows["tiny:ar"]["mean_forward_passes"] == 8  # AR: one forward per token (2 x 4 tokens)
    assert 2 <= rows["tiny:jacobi"]["mean_forward_passes"] <= 8
    assert rows["tiny:early_exit:1@warm_start"]["mean_forward_passes"] <= 2
    assert rows["tiny:ar"]["policy_hz"] > 0 and report["execute_steps"] == 2
    # The same seeds for every setting.
    assert report["episodes"] == 2  # episodes per task and setting, as asked for
    seeds = {label: [e["seed"] for e in eps] for label, eps in report["episode_results"].items()}
    assert len({tuple(v) for v in seeds.values()}) == 1
    for name in ("results.md", "success_vs_forward_passes.png", "iterations_hist.png"):
        assert (out / name).stat().st_size > 0
    assert "| tiny:jacobi | reach |" in (out / "results.md").read_text()
    assert cli.main([*argv[:-3], "--execute-steps", "3", "--out", str(tmp_path / "bad")]) == 2

    # Latency-aware: the same settings with the world moving on; rows labelled by latency.
    late = tmp_path / "late"
    argv_late = [*argv[:4], "tiny:early_exit:1", "--episodes", "2", "--tasks", "reach_moving", "--latency", "none",
                 "measured", "fixed:250", "--out", str(late), "--no-progress"]
    assert cli.main(argv_late) == 0
    report = json.loads((late / "results.json").read_text())
    rows = {r["setting"]: r for r in report["per_task"]}
    assert set(rows) == {"tiny:early_exit:1 [none]", "tiny:early_exit:1 [measured]", "tiny:early_exit:1 [fixed:250]"}
    assert "latency" not in rows["tiny:early_exit:1 [none]"]
    fixed = rows["tiny:early_exit:1 [fixed:250]"]
    assert fixed["median_latency_ms"] == 250 and fixed["mean_steps_dropped"] == 2  # 2-step chunks of 100 ms
    assert fixed["refused_fraction"] == 1.0 and fixed["held_fraction"] == 1.0 and fixed["successes"] == 0
    measured = rows["tiny:early_exit:1 [measured]"]
    assert 0 < measured["median_latency_ms"] < 250 and measured["refused_fraction"] == 0.0
    assert 0 <= measured["wilson_low"] <= measured["success_rate"] <= measured["wilson_high"] <= 1
    assert (late / "success_vs_policy_hz.png").stat().st_size > 0
    assert "| tiny:early_exit:1 [fixed:250] | reach_moving | 0/2 (0 %, 95 % CI 0-66 %) |" in (
        late / "results.md").read_text()
    with pytest.raises(SystemExit, match="bad latency 'model:5'"):
        cli.main([*argv_late[:-3], "--latency", "model:5", "--no-progress"])
