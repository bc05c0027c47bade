"""Latency-aware closed loop: the simulated world keeps moving while the policy decodes.

``ceed-vla eval --latency ...`` (see :mod:`ceed_vla_ros.tools.evaluation`) runs episodes with
:func:`run_realtime_episode` instead of pausing the simulator for every query:

* simulated time advances in control periods (default 10 ms). The arm is commanded by the arm
  driver's own ROS-free core, :class:`~ceed_vla_ros.arm_control.ArmDriverCore`, with the simulator's
  joint limits and velocity limit (``max_joint_step / dt``: 2 rad/s), so chunks are scheduled exactly
  as the ROS arm driver schedules them;
* the policy takes the frame (image + joints) at time ``t`` and is busy for the charged latency
  ``L``; the chunk reaches the driver at ``t + L`` with the image stamp ``t``: chunk step ``i`` is
  meant for ``[t + i*dt, t + (i+1)*dt)``, the steps whose window has ended by ``t + L`` are
  dropped, a chunk with every step past is refused (the arm holds), and until it arrives the
  previous chunk (or a hold) keeps running;
* the policy queries again every ``execute_steps * dt`` seconds (the query period), or as soon as
  it is free when decoding takes longer than that (one decode at a time, as on one accelerator).
  Arrivals are handled at the first control tick at or after ``t + L`` (with the exact ``t + L``
  as the driver's clock, plus 1 ns so that a step ending exactly then counts as past despite
  float rounding), so a latency is resolved to the control period for the motion but not for
  which steps are dropped.

Latency (``--latency``, :class:`LatencySpec`):

* ``none``: the simulator pauses while the policy decodes (the original protocol);
* ``measured``: the wall time of the policy call (image preprocessing + prefill + decoding) on this
  machine, as it happens (so it depends on the machine's load);
* ``model:PREFILL_MS,PER_PASS_MS``: ``PREFILL_MS + PER_PASS_MS x (forward passes - 1)`` per chunk, to
  emulate a large model on an accelerator (forward passes include the prefill; a fused
  prefill + first iteration counts as one pass and is charged ``PREFILL_MS``);
* ``fixed:MS``: the same latency for every chunk (tests, latency sweeps).

Success is tested every control tick; an episode lasts ``horizon x dt`` simulated seconds.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ceed_vla_ros.arm_control import ArmDriverCore, JointLimits
from ceed_vla_ros.sim.env import TabletopArmEnv

LATENCY_KINDS = ("none", "measured", "model", "fixed")
_NUMBER = r"\d+(?:\.\d+)?"
_MODEL = re.compile(rf"^model:(?P<prefill>{_NUMBER}),(?P<per_pass>{_NUMBER})$")
_FIXED = re.compile(rf"^fixed:(?P<ms>{_NUMBER})$")

PAPER_OPENVLA_H100 = "model:58,18"
"""Per-chunk latency of OpenVLA-7B on an H100 derived from the CEED-VLA paper's LIBERO figures:
AR at 54.4 tokens/s is 18.4 ms per single-token pass; AR at 5.95 Hz with 7 tokens per query is
168 ms per query, so the prefill (vision encoder + ~280-position prompt) is 168 - 6 x 18.4 = 58 ms."""


@dataclass(frozen=True)
class LatencySpec:
    """How long a chunk takes from frame to driver; see the module docstring."""

    kind: str = "none"
    prefill_ms: float = 0.0
    per_pass_ms: float = 0.0
    fixed_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LATENCY_KINDS:
            raise ValueError(f"unknown latency kind {self.kind!r}; choose from {', '.join(LATENCY_KINDS)}")
        values = (self.prefill_ms, self.per_pass_ms, self.fixed_ms)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"latencies must be finite and >= 0 ms, got {values}")

    @classmethod
    def parse(cls, text: str) -> LatencySpec:
        text = text.strip()
        if text in ("none", "measured"):
            return cls(text)
        if match := _MODEL.match(text):
            return cls("model", prefill_ms=float(match["prefill"]), per_pass_ms=float(match["per_pass"]))
        if match := _FIXED.match(text):
            return cls("fixed", fixed_ms=float(match["ms"]))
        raise ValueError(
            f"bad latency {text!r}; expected none, measured, model:PREFILL_MS,PER_PASS_MS or fixed:MS"
        )

    @property
    def realtime(self) -> bool:
        """Whether the world keeps moving while the policy decodes."""
        return self.kind != "none"

    @property
    def label(self) -> str:
        if self.kind == "model":
            return f"model:{self.prefill_ms:g},{self.per_pass_ms:g}"
        if self.kind == "fixed":
            return f"fixed:{self.fixed_ms:g}"
        return self.kind

    def charge_ms(self, forward_passes: int, measured_ms: float) -> float:
        """The latency charged for one chunk."""
        if self.kind == "measured":
            return float(measured_ms)
        if self.kind == "model":
            return self.prefill_ms + self.per_pass_ms * max(0, forward_passes - 1)
        if self.kind == "fixed":
            return self.fixed_ms
        return 0.0


@dataclass
class Decision:
    """What one policy call returned: the chunk (k, d), its forward passes and its wall time."""

    actions: np.ndarray
    forward_passes: int
    wall_ms: float
    payload: object = None  # e.g. the policy's DecodeStats


Decide = Callable[[np.ndarray, np.ndarray, str], Decision]
"""(image, joint positions, instruction) -> :class:`Decision`."""


@dataclass
class ChunkEvent:
    """One decoded chunk: frame time, charged latency, how many steps the driver kept (0: refused)."""

    stamp: float
    latency_ms: float
    steps: int
    steps_kept: int
    accepted: bool
    reason: str


@dataclass
class RealtimeEpisode:
    success: bool
    sim_seconds: float
    chunks: list[ChunkEvent] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    held_ticks: int = 0
    ticks: int = 0
    joint_targets: list[np.ndarray] = field(default_factory=list)  # command per tick (with ``record_commands``)

    @property
    def held_fraction(self) -> float:
        return self.held_ticks / self.ticks if self.ticks else 0.0


def env_joint_limits(env: TabletopArmEnv) -> JointLimits:
    """The simulator's joint limits, with its velocity limit ``max_joint_step / dt``."""
    n = len(env.joint_names)
    return JointLimits(
        names=tuple(env.joint_names),
        lower=tuple(float(x) for x in env.joint_limits[:, 0]),
        upper=tuple(float(x) for x in env.joint_limits[:, 1]),
        max_velocity=(env.max_joint_step / env.dt,) * n,
    )


def run_realtime_episode(
    env: TabletopArmEnv,
    decide: Decide,
    latency: LatencySpec,
    *,
    seed: int,
    action_space: str,
    step_dt: float,
    query_period_s: float,
    control_period_s: float = 0.01,
    watchdog_timeout_s: float = 0.5,
    horizon_s: float | None = None,
    record_commands: bool = False,
) -> RealtimeEpisode:
    """One episode in which simulated time runs on while the policy decodes (module docstring)."""
    if not latency.realtime:
        raise ValueError("run_realtime_episode needs a latency other than 'none'")
    if not (query_period_s > 0 and control_period_s > 0 and step_dt > 0):
        raise ValueError("query period, control period and step_dt must be > 0")
    obs = env.reset(seed=seed)
    instruction = obs["instruction"]
    # the former linear profile (straight ramps, position + velocity limits): the latency figures in
    # results/latency were measured with it and its tests check the ramps exactly; the current cubic +
    # acceleration-limited driver is compared with it in `ceed-vla bench-transitions --motion`
    driver = ArmDriverCore(
        env_joint_limits(env), control_period_s, watchdog_timeout_s, enable_actuation=True, motion="linear",
        plan_trajectories=False,
    )
    horizon_s = env.horizon * env.dt if horizon_s is None else horizon_s
    total_ticks = int(round(horizon_s / control_period_s))
    episode = RealtimeEpisode(success=False, sim_seconds=0.0)
    pending: tuple[float, float, Decision, float] | None = None  # (stamp, arrival, decision, latency ms)
    next_query = 0.0
    eps = 1e-9

    def deliver() -> None:
        nonlocal pending
        stamp, arrival, decision, latency_ms = pending
        # A step whose window ends exactly at the arrival is past: the nanosecond keeps the float sum
        # t + 3 x 0.1 (0.30000000000000004) from counting as later than t + 0.3.
        arrival += 1e-9
        accepted, reason = driver.on_chunk(stamp, decision.actions, action_space, step_dt, now=arrival)
        kept = int(np.sum(stamp + step_dt * np.arange(1, len(decision.actions) + 1) > arrival)) if accepted else 0
        episode.chunks.append(ChunkEvent(stamp, latency_ms, len(decision.actions), kept, accepted, reason))
        pending = None

    for tick in range(total_ticks):
        now = tick * control_period_s
        driver.on_joint_state(now, env.joint_positions)
        if pending is not None and now >= pending[1] - eps:
            deliver()
        if pending is None and now >= next_query - eps:
            image = env.render_current()
            decision = decide(image, env.joint_positions, instruction)
            episode.decisions.append(decision)
            latency_ms = latency.charge_ms(decision.forward_passes, decision.wall_ms)
            pending = (now, now + latency_ms / 1000.0, decision, latency_ms)
            next_query = now + query_period_s
            if now >= pending[1] - eps:
                deliver()
        command = driver.step(now)
        if command.positions is not None:
            env.set_joint_command(command.positions)
        episode.ticks += 1
        episode.held_ticks += int(command.holding)
        if record_commands:
            episode.joint_targets.append(env.joint_target)
        env.advance(control_period_s)
        if env.success():
            episode.success = True
            break
    episode.sim_seconds = env.sim_time
    return episode


def policy_decider(policy, settings, execute_steps: int) -> Decide:
    """A :data:`Decide` over a :class:`~ceed_vla_ros.policy.CeedVlaPolicy` with ``settings``."""

    def decide(image: np.ndarray, joints: np.ndarray, instruction: str) -> Decision:
        start = time.perf_counter()
        out = policy.predict(image, joints, instruction, settings, steps_executed=execute_steps)
        wall_ms = (time.perf_counter() - start) * 1000.0
        return Decision(out.actions, out.stats.forward_passes, wall_ms, out.stats)

    return decide
