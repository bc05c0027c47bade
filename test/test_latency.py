"""Latency-aware closed loop: the world keeps moving while the policy decodes (tools/latency.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ceed_vla_ros.sim.env import TabletopArmEnv
from ceed_vla_ros.tools.latency import Decision, LatencySpec, run_realtime_episode

DT = 0.1
PERIOD = 0.01
# Chunk-relative deltas small enough that the 2 rad/s velocity limit never binds (0.2 rad per step).
CHUNK = np.array([[0.03 * (i + 1), -0.02 * (i + 1), 0.01 * (i + 1), 0.0] for i in range(4)])


class ScriptedPolicy:
    """Always decodes CHUNK; remembers the joints it saw per query (a stand-in for the model)."""

    def __init__(self, passes: int = 16, wall_ms: float = 1.0) -> None:
        self.passes, self.wall_ms = passes, wall_ms
        self.joints: list[np.ndarray] = []

    def __call__(self, image, joints, instruction) -> Decision:
        assert image.dtype == np.uint8 and image.ndim == 3
        self.joints.append(np.array(joints))
        return Decision(CHUNK.copy(), self.passes, self.wall_ms)


@pytest.fixture(scope="module")
def env():
    with TabletopArmEnv(task="reach") as env:
        yield env


def episode(env, latency: str, query_period_s: float = 4 * DT, horizon_s: float = 1.2, policy=None):
    policy = policy or ScriptedPolicy()
    result = run_realtime_episode(
        env, policy, LatencySpec.parse(latency), seed=3, action_space="joint_delta", step_dt=DT,
        query_period_s=query_period_s, control_period_s=PERIOD, horizon_s=horizon_s, record_commands=True,
    )
    return result, policy


def test_latency_syntax_and_charges():
    assert LatencySpec.parse("none") == LatencySpec() and not LatencySpec().realtime
    model = LatencySpec.parse("model:58,18")
    assert model.charge_ms(16, measured_ms=3.0) == 58 + 15 * 18  # AR: prefill + 15 single-token passes
    assert model.charge_ms(1, measured_ms=3.0) == 58  # a fused prefill + first iteration: one pass
    assert LatencySpec.parse("measured").charge_ms(16, measured_ms=7.5) == 7.5
    assert LatencySpec.parse("fixed:120").charge_ms(16, measured_ms=7.5) == 120
    assert model.label == "model:58,18" and LatencySpec.parse("fixed:2.5").label == "fixed:2.5"
    for bad in ("model:58", "model:-1,2", "fixed:", "slow", "measured:3"):
        with pytest.raises(ValueError):
            LatencySpec.parse(bad)


@pytest.mark.parametrize("latency_ms, dropped", [(0, 0), (50, 0), (100, 1), (150, 1), (200, 2), (300, 3)])
def test_a_chunk_loses_exactly_the_steps_its_latency_covers(env, latency_ms, dropped):
    result, policy = episode(env, f"fixed:{latency_ms}")
    first = result.chunks[0]
    assert first.accepted and first.stamp == 0.0 and first.latency_ms == latency_ms
    assert first.steps_kept == 4 - dropped
    commands = np.array(result.joint_targets)
    home = commands[0]
    arrival_tick = int(np.ceil(latency_ms / 1000 / PERIOD - 1e-9))
    # Until the chunk arrives the arm holds (at the arrival tick the new ramp starts from the hold); then it
    # follows the kept steps.
    assert np.all(commands[: arrival_tick + 1] == home)
    assert not np.allclose(commands[arrival_tick + 1], home)
    targets = policy.joints[0] + CHUNK  # joint_delta: relative to the joints at the image
    for step in range(dropped, 3):  # (at 0.4 s the next chunk takes over)
        end_tick = int(round((step + 1) * DT / PERIOD))  # the command reaches target i at the end of window i
        np.testing.assert_allclose(commands[end_tick], targets[step], atol=1e-6)
    # The dropped steps' targets are never commanded on their own: the first command after arrival lies on
    # the ramp from the hold towards the first kept step.
    if dropped:
        first_moving = commands[arrival_tick + 1]
        direction = targets[dropped] - home
        along = (first_moving - home) @ direction / (direction @ direction)
        np.testing.assert_allclose(first_moving, home + along * direction, atol=1e-9)


def test_a_latency_longer_than_the_chunk_holds_the_arm(env):
    result, _ = episode(env, "fixed:450")  # the 4-step chunk covers 400 ms
    assert result.chunks and all(not c.accepted and c.steps_kept == 0 for c in result.chunks)
    assert all("stale" in c.reason for c in result.chunks)
    commands = np.array(result.joint_targets)
    assert np.all(commands == commands[0]) and result.held_fraction == 1.0 and not result.success


def test_the_previous_chunk_keeps_running_while_the_next_decodes(env):
    # Re-plan every step: the policy queries again as soon as it is free (every 250 ms here).
    result, policy = episode(env, "fixed:250", query_period_s=DT, horizon_s=1.0)
    stamps = [c.stamp for c in result.chunks]
    np.testing.assert_allclose(stamps[:3], [0.0, 0.25, 0.5])
    assert [c.steps_kept for c in result.chunks[:3]] == [2, 2, 2]  # steps ending after t + 250 ms
    commands = np.array(result.joint_targets)
    # 0.25-0.4 s: chunk 0 (from the frame at 0) still runs, reaching its last target at 0.4 s.
    np.testing.assert_allclose(commands[40], policy.joints[0] + CHUNK[3], atol=1e-9)
    # 0.4-0.5 s: chunk 0 used up, chunk 1 not there yet: hold.
    assert np.all(commands[40:51] == commands[40])
    assert not np.allclose(commands[51], commands[40])


def test_zero_latency_runs_whole_chunks_back_to_back(env):
    result, policy = episode(env, "fixed:0", horizon_s=0.8)
    assert [c.steps_kept for c in result.chunks] == [4, 4]
    assert [c.stamp for c in result.chunks] == [0.0, 0.4]
    commands = np.array(result.joint_targets)
    targets = policy.joints[0] + CHUNK
    # 0.39 s: 90 % of the way from step 2's target to step 3's; at 0.4 s the next chunk takes over.
    np.testing.assert_allclose(commands[39], targets[2] + 0.9 * (targets[3] - targets[2]), atol=1e-9)


def test_modelled_latency_charges_forward_passes(env):
    slow, _ = episode(env, "model:58,18", policy=ScriptedPolicy(passes=16))  # 328 ms: 3 steps lost
    fast, _ = episode(env, "model:58,18", policy=ScriptedPolicy(passes=2))  # 76 ms: none lost
    assert slow.chunks[0].latency_ms == 328 and slow.chunks[0].steps_kept == 1
    assert fast.chunks[0].latency_ms == 76 and fast.chunks[0].steps_kept == 4
    assert slow.held_fraction > fast.held_fraction
