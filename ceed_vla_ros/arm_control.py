"""The arm driver's core, free of ROS: chunk scheduling, interpolation and the safety layer.

Times are seconds on one clock (the ROS clock the image and joint-state stamps use).

Chunk timing. A chunk decoded from the image stamped ``s`` holds ``k`` actions ``a_0 .. a_{k-1}``
``dt`` apart. Step ``i`` is active during ``[s + i*dt, s + (i+1)*dt)``: the command ramps linearly
from the previous target to the step's target and reaches it at the end of that window (in the
demonstrations a target set at step ``t`` is reached one ``dt`` later). Steps whose window has
passed when the chunk arrives are dropped; a newer chunk replaces the rest of an older one,
starting from the command in force, so the command never jumps.

Action spaces (``CheckpointMetadata.action_space``):

* ``joint_delta``: target_i = (joint positions measured at the image stamp) + a_i;
* ``joint_absolute``: target_i = a_i.

Safety, applied to every command whatever its source, in this order:

1. E-stop: latched by :meth:`ArmDriverCore.trigger_estop`, cleared only by
   :meth:`ArmDriverCore.reset_estop`; while latched the arm holds.
2. Watchdog: no accepted chunk for ``watchdog_timeout_s``, or the newest chunk used up: hold.
   After a hold only a chunk that arrives later restarts motion.
3. ``enable_actuation`` false: the driver computes everything but emits no command.
4. Limits: every command lies within the joint position limits and moves each joint by at most
   ``max_velocity * control_period_s`` from the previous command (:func:`limit_command`).

Holding = commanding the previous command again (a position controller then keeps the arm still).
"""

from __future__ import annotations

import bisect
import collections
import threading
from dataclasses import dataclass, field

import numpy as np

from ceed_vla_ros.metadata import ACTION_SPACES


@dataclass(frozen=True)
class JointLimits:
    """Position limits (rad) and velocity limits (rad/s), one entry per joint."""

    names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_velocity: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0 or not (len(self.lower) == len(self.upper) == len(self.max_velocity) == n):
            raise ValueError(
                f"joint limits need one lower, upper and max_velocity per joint ({n} joints); got "
                f"{len(self.lower)}, {len(self.upper)}, {len(self.max_velocity)}"
            )
        for name, lo, hi, v in zip(self.names, self.lower, self.upper, self.max_velocity):
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"joint {name}: need finite lower < upper, got [{lo}, {hi}]")
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"joint {name}: max_velocity must be finite and > 0, got {v}")

        # arrays once, not per control period (the dataclass is frozen: set them past __setattr__)
        for name in ("lower", "upper", "max_velocity"):
            object.__setattr__(self, f"_{name}", np.asarray(getattr(self, name), dtype=np.float64))

    @property
    def dims(self) -> int:
        return len(self.names)

    @property
    def max_velocity_array(self) -> np.ndarray:
        return self._max_velocity

    def clamp(self, positions: np.ndarray) -> np.ndarray:
        # maximum/minimum: the same result as np.clip without its Python-level dispatch, which is
        # most of the cost on 4-element arrays at 500 control periods per second
        return np.minimum(np.maximum(positions, self._lower), self._upper)


def limit_command(desired: np.ndarray, previous: np.ndarray, limits: JointLimits, period_s: float) -> np.ndarray:
    """``desired`` moved at most ``max_velocity * period_s`` from ``previous``, then clamped to limits.

    With ``previous`` inside the limits the result is inside the limits AND within the velocity
    bound of ``previous`` (clamping towards an interval that holds ``previous`` only shortens the
    step). Non-finite entries of ``desired`` are replaced by ``previous`` (no motion on that joint).
    """
    desired = np.where(np.isfinite(desired), desired, previous)
    max_step = limits.max_velocity_array * period_s
    step = np.minimum(np.maximum(desired - previous, -max_step), max_step)
    return limits.clamp(previous + step)


def chunk_targets(actions: np.ndarray, action_space: str, reference_positions: np.ndarray | None) -> np.ndarray:
    """Absolute joint targets (k, d) of a decoded action chunk (k, d)."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2:
        raise ValueError(f"an action chunk is (steps, dims), got shape {actions.shape}")
    if action_space == "joint_absolute":
        return actions.copy()
    if action_space == "joint_delta":
        if reference_positions is None:
            raise ValueError("joint_delta actions need the joint positions at the image stamp")
        reference = np.asarray(reference_positions, dtype=np.float64)
        if reference.shape != (actions.shape[1],):
            raise ValueError(f"reference positions {reference.shape} do not match {actions.shape[1]} action dims")
        return reference[None, :] + actions
    raise ValueError(f"unknown action space {action_space!r}; choose from {', '.join(ACTION_SPACES)}")


class JointStateHistory:
    """Recent measured joint positions, to look up the arm's state at an image stamp.

    Thread-safe: one thread may :meth:`add` while another calls :meth:`at`. Samples stay sorted by
    stamp; a sample slightly older than the newest (reordered delivery) is dropped. A sample more
    than ``clock_step_s`` older than the newest means the clock stepped back (or the newest was
    stamped in the future by mistake): the history restarts from that sample, so one bad stamp
    cannot stop the lookups for good. ``clock_resets`` counts those restarts. Samples with
    non-finite positions are refused.
    """

    def __init__(self, horizon_s: float = 5.0, clock_step_s: float = 1.0) -> None:
        self.horizon_s = horizon_s
        self.clock_step_s = clock_step_s
        self.clock_resets = 0
        self.last_reset: tuple[float, float] | None = None  # (newest stamp before, stamp after)
        self._lock = threading.Lock()
        self._times: collections.deque[float] = collections.deque()
        self._positions: collections.deque[np.ndarray] = collections.deque()

    def add(self, stamp: float, positions: np.ndarray) -> bool:
        """Store one sample; False if it was refused (non-finite, or reordered by < clock_step_s)."""
        positions = np.array(positions, dtype=np.float64)
        if not (np.isfinite(stamp) and np.all(np.isfinite(positions))):
            return False
        with self._lock:
            if self._times and stamp < self._times[-1]:
                if self._times[-1] - stamp <= self.clock_step_s:
                    return False  # out of order: the history stays sorted
                self.clock_resets += 1
                self.last_reset = (self._times[-1], stamp)
                self._times.clear()
                self._positions.clear()
            self._times.append(stamp)
            self._positions.append(positions)
            while self._times[0] < stamp - self.horizon_s:
                self._times.popleft()
                self._positions.popleft()
        return True

    def latest(self) -> np.ndarray | None:
        with self._lock:
            return self._positions[-1].copy() if self._positions else None

    def at(self, stamp: float, max_gap_s: float = 0.5) -> np.ndarray | None:
        """Positions at ``stamp``, linearly interpolated; None if no sample lies within ``max_gap_s``."""
        with self._lock:
            if not self._times:
                return None
            times = self._times
            index = bisect.bisect_left(times, stamp)
            if index == 0:
                return self._positions[0].copy() if times[0] - stamp <= max_gap_s else None
            if index == len(times):
                return self._positions[-1].copy() if stamp - times[-1] <= max_gap_s else None
            t0, t1 = times[index - 1], times[index]
            if t1 - t0 > 2 * max_gap_s:
                return None
            w = 0.0 if t1 == t0 else (stamp - t0) / (t1 - t0)
            return (1 - w) * self._positions[index - 1] + w * self._positions[index]


@dataclass
class ScheduledChunk:
    """Knots of the piecewise-linear target trajectory: ``positions[j]`` is reached at ``times[j]``."""

    times: np.ndarray  # (m,) increasing
    positions: np.ndarray  # (m, d)
    received_at: float

    def sample(self, now: float) -> np.ndarray:
        if now >= self.times[-1]:
            return self.positions[-1].copy()
        index = int(np.searchsorted(self.times, now, side="right"))
        if index == 0:
            return self.positions[0].copy()
        t0, t1 = self.times[index - 1], self.times[index]
        w = (now - t0) / (t1 - t0)
        return (1 - w) * self.positions[index - 1] + w * self.positions[index]

    def finished(self, now: float) -> bool:
        return now >= self.times[-1]


@dataclass
class DriverCommand:
    """What one control cycle decided. ``positions`` is None when nothing is to be sent."""

    positions: np.ndarray | None
    holding: bool
    reason: str


@dataclass
class ArmDriverCore:
    """Chunk scheduler + safety layer; the ROS node feeds it messages and calls :meth:`step`."""

    limits: JointLimits
    control_period_s: float
    watchdog_timeout_s: float
    enable_actuation: bool = False
    _chunk: ScheduledChunk | None = field(default=None, init=False)
    _last_command: np.ndarray | None = field(default=None, init=False)
    _chunk_stamp: float = field(default=-np.inf, init=False)
    _estopped: bool = field(default=False, init=False)
    _idle_reason: str = field(default="no actions yet", init=False)  # why there is no chunk in force
    joint_states: JointStateHistory = field(default_factory=JointStateHistory, init=False)

    def __post_init__(self) -> None:
        if not self.control_period_s > 0:
            raise ValueError(f"control period must be > 0 s, got {self.control_period_s}")
        if not self.watchdog_timeout_s > 0:
            raise ValueError(f"watchdog timeout must be > 0 s, got {self.watchdog_timeout_s}")

    # -- inputs ---------------------------------------------------------------------------------
    def on_joint_state(self, stamp: float, positions: np.ndarray) -> None:
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (self.limits.dims,) or not np.all(np.isfinite(positions)):
            raise ValueError(f"joint state must be {self.limits.dims} finite positions, got {positions}")
        self.joint_states.add(stamp, positions)

    def on_chunk(self, image_stamp: float, actions: np.ndarray, action_space: str, step_dt: float,
                 now: float) -> tuple[bool, str]:
        """Schedule a decoded chunk; return (accepted, reason). Rejected chunks change nothing."""
        if self._estopped:
            return False, "e-stop latched"
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != self.limits.dims or actions.shape[0] < 1:
            return False, f"chunk shape {actions.shape} does not fit {self.limits.dims} joints"
        if not np.all(np.isfinite(actions)):
            return False, "chunk holds non-finite actions"
        if not step_dt > 0:
            return False, f"step_dt must be > 0, got {step_dt}"
        if image_stamp > now + self.control_period_s:
            return False, f"image stamp {image_stamp - now:.3f} s in the future"
        if image_stamp <= self._chunk_stamp:
            return False, "not newer than the last accepted chunk (duplicate or out of order)"
        ends = image_stamp + step_dt * np.arange(1, len(actions) + 1)
        keep = ends > now
        if not np.any(keep):
            return False, f"stale: all {len(actions)} steps already past ({now - image_stamp:.3f} s after the image)"
        reference = None
        if action_space == "joint_delta":
            reference = self.joint_states.at(image_stamp)
            if reference is None:
                return False, "no joint state near the image stamp"
        try:
            targets = chunk_targets(actions, action_space, reference)
        except ValueError as error:
            return False, str(error)
        start = self.current_command()
        if start is None:
            return False, "no joint state yet"
        times = np.concatenate(([now], ends[keep]))
        positions = np.vstack((start, targets[keep]))
        self._chunk = ScheduledChunk(times=times, positions=positions, received_at=now)
        self._chunk_stamp = image_stamp
        return True, f"scheduled {int(keep.sum())} of {len(targets)} steps"

    def trigger_estop(self) -> None:
        self._estopped = True
        self._chunk = None

    def reset_estop(self) -> None:
        """Clear the latch; motion resumes only with a chunk received after the reset."""
        self._estopped = False
        self._chunk = None
        self._idle_reason = "e-stop reset: waiting for fresh actions"

    @property
    def estopped(self) -> bool:
        return self._estopped

    def current_command(self) -> np.ndarray | None:
        """The command in force (or the measured pose clamped into the limits before any command)."""
        if self._last_command is not None:
            return self._last_command.copy()
        latest = self.joint_states.latest()
        return None if latest is None else self.limits.clamp(latest)

    # -- control cycle ----------------------------------------------------------------------------
    def step(self, now: float) -> DriverCommand:
        previous = self.current_command()
        if previous is None:
            return DriverCommand(None, True, "waiting for joint states")
        if self._estopped:
            desired, holding, reason = previous, True, "e-stop latched"
        elif self._chunk is None:
            desired, holding, reason = previous, True, self._idle_reason
        elif now - self._chunk.received_at > self.watchdog_timeout_s:
            self._chunk = None
            self._idle_reason = f"watchdog: no fresh actions for {self.watchdog_timeout_s:g} s"
            desired, holding, reason = previous, True, self._idle_reason
        elif self._chunk.finished(now):
            desired, holding, reason = self._chunk.sample(now), True, "chunk used up"
        else:
            desired, holding, reason = self._chunk.sample(now), False, "following actions"
        command = limit_command(desired, previous, self.limits, self.control_period_s)
        if not self.enable_actuation:
            return DriverCommand(None, holding, reason + " (actuation disabled)")
        self._last_command = command
        return DriverCommand(command.copy(), holding, reason)
