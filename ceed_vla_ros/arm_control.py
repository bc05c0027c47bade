"""The arm driver's core, free of ROS: chunk scheduling, interpolation and the safety layer.

Times are seconds on one clock (the ROS clock the image and joint-state stamps use).

Chunk timing. A chunk decoded from the image stamped ``s`` holds ``k`` actions ``a_0 .. a_{k-1}``
``dt`` apart. Step ``i`` is active during ``[s + i*dt, s + (i+1)*dt)``: its target is reached at the
end of that window (in the demonstrations a target set at step ``t`` is reached one ``dt`` later).
Between the steps the target follows a cubic Hermite curve (:class:`ceed_vla_ros.motion.CubicChunk`,
Catmull-Rom tangents) that starts at the command in force WITH its velocity and ends at rest on the
last step, so a chunk boundary or a re-plan never steps the commanded velocity. Steps whose window
has passed when the chunk arrives are dropped; a newer chunk replaces the rest of an older one,
starting from the command in force, so the command never jumps. (``motion="linear"``: the former
straight lines between the steps and position + velocity limits only, holds freezing at once; kept
for ``ceed-vla bench-transitions --motion linear``, not a node parameter.)

Action spaces (``CheckpointMetadata.action_space``, :class:`ActionLayout`):

* ``joint_delta``: target_i = (joint positions measured at the image stamp) + a_i;
* ``joint_absolute``: target_i = a_i;
* ``ee_delta`` / ``ee_absolute``: a_i is a tip pose (or a pose change) in the checkpoint's base
  frame; joint targets come from inverse kinematics (:mod:`ceed_vla_ros.kinematics`), one solve
  per chunk step seeded from the joints measured at the image stamp. A step the IK cannot reach
  refuses the chunk AND drops the chunk in force: the arm holds.
* with a ``gripper`` in the metadata the last action dim is the gripper; it becomes an open
  fraction and then a position between the driver's closed and open positions
  (:class:`GripperLimits`), limited like a joint (its own position and velocity limits).

Chunk transitions (``chunk_transition``): ``replace`` (a new chunk replaces the rest of the old
one) or ``temporal_ensemble`` (ACT: where the new chunk's steps overlap the old schedule, the
target is the weighted average of every prediction made for that time, the k-th prediction of a
time weighted ``exp(-ensemble_decay * k)``, the oldest k = 0; the gripper is not averaged).

Joint trajectories: every accepted chunk also gives a :class:`ChunkTrajectory` (stamped with the
image stamp, one point per remaining step): the limited stream the driver would send for it, at the
control tick nearest each step's end, with its velocities, ending where it comes to rest (see
:meth:`ArmDriverCore._planned_trajectory`), so the points keep the position, velocity AND
acceleration limits; for a joint_trajectory_controller: one message per chunk.
:meth:`ArmDriverCore.stop_trajectory` gives the braking as a trajectory for a hold.

Safety, applied to every command whatever its source, in this order:

1. E-stop: latched by :meth:`ArmDriverCore.trigger_estop`, cleared only by
   :meth:`ArmDriverCore.reset_estop`; while latched the arm holds.
2. Watchdog: no accepted chunk for ``watchdog_timeout_s``, or the newest chunk used up: hold.
   After a hold only a chunk that arrives later restarts motion.
3. ``enable_actuation`` false: the driver computes everything but emits no command.
4. Limits: every command goes through one :class:`ceed_vla_ros.motion.MotionLimiter`: within the
   position limits (with room to brake before them), velocity at most ``max_velocity``, velocity
   change per period at most ``max_acceleration * control_period_s`` (joints and gripper).

Holding = braking to rest within the acceleration limits (at rest within ``max_velocity /
max_acceleration`` + one period), then commanding the same command again (a position controller
keeps the arm still). ``estop_stop="immediate"``: the e-stop freezes the command at once instead.
"""

from __future__ import annotations

import bisect
import collections
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from ceed_vla_ros.metadata import ACTION_SPACES, CheckpointMetadata, EndEffectorSpec, GripperSpec
from ceed_vla_ros.motion import CubicChunk, MotionLimiter

CHUNK_TRANSITIONS = ("replace", "temporal_ensemble")
MOTION_PROFILES = ("cubic", "linear")
ESTOP_STOPS = ("decelerate", "immediate")


# without an explicit acceleration limit a joint may reach its velocity limit in 0.1 s
DEFAULT_ACCELERATION_PER_VELOCITY = 10.0  # 1/s: max_acceleration = 10/s * max_velocity


@dataclass(frozen=True)
class JointLimits:
    """Position limits (rad), velocity limits (rad/s) and acceleration limits (rad/s^2), one entry
    per joint. ``max_acceleration`` None (or empty): ``10/s * max_velocity`` (full speed in 0.1 s)."""

    names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_velocity: tuple[float, ...]
    max_acceleration: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.names)
        if not self.max_acceleration:
            object.__setattr__(self, "max_acceleration",
                               tuple(DEFAULT_ACCELERATION_PER_VELOCITY * float(v) for v in self.max_velocity))
        if n == 0 or not (len(self.lower) == len(self.upper) == len(self.max_velocity) == len(self.max_acceleration)
                          == n):
            raise ValueError(
                f"joint limits need one lower, upper, max_velocity and max_acceleration per joint ({n} joints); "
                f"got {len(self.lower)}, {len(self.upper)}, {len(self.max_velocity)}, {len(self.max_acceleration)}"
            )
        for name, lo, hi, v, a in zip(self.names, self.lower, self.upper, self.max_velocity, self.max_acceleration):
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"joint {name}: need finite lower < upper, got [{lo}, {hi}]")
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"joint {name}: max_velocity must be finite and > 0, got {v}")
            if not (np.isfinite(a) and a > 0):
                raise ValueError(f"joint {name}: max_acceleration must be finite and > 0, got {a}")

        # arrays once, not per control period (the dataclass is frozen: set them past __setattr__)
        for name in ("lower", "upper", "max_velocity", "max_acceleration"):
            object.__setattr__(self, f"_{name}", np.asarray(getattr(self, name), dtype=np.float64))

    @property
    def dims(self) -> int:
        return len(self.names)

    @property
    def max_velocity_array(self) -> np.ndarray:
        return self._max_velocity

    @property
    def max_acceleration_array(self) -> np.ndarray:
        return self._max_acceleration

    def limiter(self, period_s: float) -> MotionLimiter:
        return MotionLimiter(self._lower, self._upper, self._max_velocity, self._max_acceleration, period_s)

    def clamp(self, positions: np.ndarray) -> np.ndarray:
        # maximum/minimum: the same result as np.clip without its Python-level dispatch, which is
        # most of the cost on 4-element arrays at 500 control periods per second
        return np.minimum(np.maximum(positions, self._lower), self._upper)


@dataclass(frozen=True)
class GripperLimits:
    """The driver's gripper: positions of fully closed / open (either order), a velocity limit and an
    acceleration limit (None: ``10/s * max_velocity``)."""

    closed_position: float
    open_position: float
    max_velocity: float
    max_acceleration: float | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.closed_position) and np.isfinite(self.open_position)
                and self.closed_position != self.open_position):
            raise ValueError(f"gripper closed/open positions must be finite and differ, got "
                             f"{self.closed_position}, {self.open_position}")
        if not (np.isfinite(self.max_velocity) and self.max_velocity > 0):
            raise ValueError(f"gripper max_velocity must be finite and > 0, got {self.max_velocity}")
        if self.max_acceleration is None:
            object.__setattr__(self, "max_acceleration", DEFAULT_ACCELERATION_PER_VELOCITY * self.max_velocity)
        if not (np.isfinite(self.max_acceleration) and self.max_acceleration > 0):
            raise ValueError(f"gripper max_acceleration must be finite and > 0, got {self.max_acceleration}")

    def position(self, open_fraction: np.ndarray) -> np.ndarray:
        return self.closed_position + np.asarray(open_fraction) * (self.open_position - self.closed_position)


@dataclass
class ActionLayout:
    """How a decoded chunk maps to joint targets: the action space, the end-effector frames and
    rotation (ee_*), the gripper dim, and the kinematics that solve ee targets."""

    action_space: str
    end_effector: EndEffectorSpec | None = None
    gripper: GripperSpec | None = None
    kinematics: object | None = None  # ceed_vla_ros.kinematics.ArmKinematics (pinocchio) for ee_*

    @classmethod
    def from_metadata(cls, metadata: CheckpointMetadata, kinematics: object | None = None) -> ActionLayout:
        return cls(metadata.action_space, metadata.end_effector, metadata.gripper, kinematics)

    @property
    def end_effector_space(self) -> bool:
        return self.action_space.startswith("ee_")

    def action_dims(self, joints: int) -> int:
        arm = self.end_effector.dims if self.end_effector_space and self.end_effector is not None else joints
        return arm + (1 if self.gripper is not None else 0)


@dataclass
class ChunkTrajectory:
    """One joint trajectory per chunk: point j at ``stamp + time_from_stamp[j]``."""

    stamp: float
    time_from_stamp: np.ndarray  # (m,)
    positions: np.ndarray  # (m, d) (+ the gripper column when the driver has a gripper)
    velocities: np.ndarray  # (m, d)
    targets: np.ndarray | None = None  # (m, d) the chunk's steps the points aim at (after ensembling)


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
    """Knots of the target trajectory: ``positions[j]`` is reached at ``times[j]``; the first knot is
    the command in force when the chunk arrived. Between knots: the cubic ``curve`` (which starts
    with the command's velocity), or straight lines without one (the ``linear`` motion profile)."""

    times: np.ndarray  # (m,) increasing
    positions: np.ndarray  # (m, d)
    received_at: float
    weights: np.ndarray | None = None  # (m,) temporal ensemble: summed weights of the predictions
    counts: np.ndarray | None = None  # (m,) and how many predictions were averaged
    curve: CubicChunk | None = None
    _tail_start: list[float] | None = field(default=None, init=False, repr=False)
    _tail_all_from: float = field(default=np.inf, init=False, repr=False)
    _last_target: list[float] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._end_time = float(self.times[-1])

    def sample_with_velocity(self, now: float) -> tuple[np.ndarray, np.ndarray | None]:
        """(target, its velocity) at ``now``; the velocity is None on straight lines."""
        if self.curve is not None:
            return self.curve.sample(now)
        return self.sample(now), None

    def sample_with_velocity_floats(self, now: float) -> tuple[list[float], list[float] | None]:
        """:meth:`sample_with_velocity` as lists of floats (the control period's path)."""
        if self.curve is not None:
            return self.curve.sample_floats(now)
        return self.sample(now).tolist(), None

    def _find_tail(self) -> None:
        steps = np.diff(self.positions, axis=0)
        start = np.zeros(self.positions.shape[1])
        for j in range(self.positions.shape[1]):
            k = len(steps)
            while k > 0 and (np.all(steps[k - 1:, j] >= 0) or np.all(steps[k - 1:, j] <= 0)):
                k -= 1
            start[j] = self.times[k]
        self._tail_start = start.tolist()
        self._tail_all_from = float(start.max())
        self._last_target = self.positions[-1].tolist()

    def stop_at_floats(self, now: float) -> list[float] | None:
        """Where the motion comes to rest (the last target), per joint once the targets left run
        monotonically to it (NaN before: a chunk that passes the last target on the way and comes
        back is followed as it is); None on straight lines. From the tail on, the same list every
        period (read it, never write it)."""
        if self.curve is None:
            return None
        if self._tail_start is None:  # per joint: the first knot of the monotone run to the end
            self._find_tail()
        if now >= self._tail_all_from:
            return self._last_target
        return [last if now >= start else math.nan for last, start in zip(self._last_target, self._tail_start)]

    def stop_at(self, now: float) -> np.ndarray | None:
        """:meth:`stop_at_floats` as an array."""
        stops = self.stop_at_floats(now)
        return None if stops is None else np.array(stops)

    def sample(self, now: float) -> np.ndarray:
        if self.curve is not None:
            return self.curve.sample(now)[0]
        if now >= self.times[-1]:
            return self.positions[-1].copy()
        index = int(np.searchsorted(self.times, now, side="right"))
        if index == 0:
            return self.positions[0].copy()
        t0, t1 = self.times[index - 1], self.times[index]
        w = (now - t0) / (t1 - t0)
        return (1 - w) * self.positions[index - 1] + w * self.positions[index]

    def sample_floats(self, now: float) -> list[float]:
        if self.curve is not None:
            return self.curve.sample_floats(now)[0]
        return self.sample(now).tolist()

    def finished(self, now: float) -> bool:
        return now >= self._end_time


@dataclass
class DriverCommand:
    """What one control cycle decided. ``positions`` is None when nothing is to be sent."""

    positions: np.ndarray | None
    holding: bool
    reason: str
    gripper: float | None = None  # gripper position command (drivers with a gripper)


@dataclass
class ArmDriverCore:
    """Chunk scheduler + safety layer; the ROS node feeds it messages and calls :meth:`step`."""

    limits: JointLimits
    control_period_s: float
    watchdog_timeout_s: float
    enable_actuation: bool = False
    gripper: GripperLimits | None = None
    chunk_transition: str = "replace"
    ensemble_decay: float = 0.5
    motion: str = "cubic"  # "linear": the former interpolation and limits, kept for bench-transitions
    estop_stop: str = "decelerate"  # or "immediate": freeze the command at once (a velocity step)
    plan_trajectories: bool = True  # compute last_trajectory per chunk (joint_trajectory interface)
    _chunk: ScheduledChunk | None = field(default=None, init=False)
    _gripper_measured: float | None = field(default=None, init=False)
    last_trajectory: ChunkTrajectory | None = field(default=None, init=False)
    ik_refusals: int = field(default=0, init=False)
    _chunk_stamp: float = field(default=-np.inf, init=False)
    _estopped: bool = field(default=False, init=False)
    _idle_reason: str = field(default="no actions yet", init=False)  # why there is no chunk in force
    joint_states: JointStateHistory = field(default_factory=JointStateHistory, init=False)

    def __post_init__(self) -> None:
        if not self.control_period_s > 0:
            raise ValueError(f"control period must be > 0 s, got {self.control_period_s}")
        if not self.watchdog_timeout_s > 0:
            raise ValueError(f"watchdog timeout must be > 0 s, got {self.watchdog_timeout_s}")
        if self.chunk_transition not in CHUNK_TRANSITIONS:
            raise ValueError(f"chunk_transition must be one of {CHUNK_TRANSITIONS}, got {self.chunk_transition!r}")
        if not (np.isfinite(self.ensemble_decay) and self.ensemble_decay >= 0):
            raise ValueError(f"ensemble_decay must be finite and >= 0, got {self.ensemble_decay}")
        if self.motion not in MOTION_PROFILES:
            raise ValueError(f"motion must be one of {MOTION_PROFILES}, got {self.motion!r}")
        if self.estop_stop not in ESTOP_STOPS:
            raise ValueError(f"estop_stop must be one of {ESTOP_STOPS}, got {self.estop_stop!r}")
        self._limits = self.limits
        if self.gripper is not None:
            g = self.gripper
            self._limits = JointLimits(
                names=self.limits.names + ("<gripper>",),
                lower=self.limits.lower + (min(g.closed_position, g.open_position),),
                upper=self.limits.upper + (max(g.closed_position, g.open_position),),
                max_velocity=self.limits.max_velocity + (g.max_velocity,),
                max_acceleration=self.limits.max_acceleration + (g.max_acceleration,))
        # the command stream: its last command and velocity (position None until the first command)
        self._motion = self._limits.limiter(self.control_period_s)

    # -- inputs ---------------------------------------------------------------------------------
    def on_joint_state(self, stamp: float, positions: np.ndarray) -> None:
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (self.limits.dims,) or not np.all(np.isfinite(positions)):
            raise ValueError(f"joint state must be {self.limits.dims} finite positions, got {positions}")
        self.joint_states.add(stamp, positions)

    def on_gripper_state(self, position: float) -> None:
        """The measured gripper position (starts the gripper command there instead of open)."""
        if np.isfinite(position):
            self._gripper_measured = float(position)

    def on_chunk(self, image_stamp: float, actions: np.ndarray, action_space: str | ActionLayout, step_dt: float,
                 now: float) -> tuple[bool, str]:
        """Schedule a decoded chunk; return (accepted, reason). Rejected chunks change nothing, but
        for an end-effector target the IK cannot reach, which also stops the chunk in force."""
        if self._estopped:
            return False, "e-stop latched"
        layout = action_space if isinstance(action_space, ActionLayout) else ActionLayout(action_space)
        if layout.action_space not in ACTION_SPACES:
            return False, f"unknown action space {layout.action_space!r}; choose from {', '.join(ACTION_SPACES)}"
        actions = np.asarray(actions, dtype=np.float64)
        dims = layout.action_dims(self.limits.dims)
        if actions.ndim != 2 or actions.shape[1] != dims or actions.shape[0] < 1:
            return False, f"chunk shape {actions.shape} does not fit {dims} action dims ({layout.action_space})"
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
        start = self._command_in_force()
        if start is None:
            return False, "no joint state yet"
        arm_actions = actions[:, : dims - 1] if layout.gripper is not None else actions
        reference = None
        if layout.action_space != "joint_absolute":
            reference = self.joint_states.at(image_stamp)
            if reference is None:
                return False, "no joint state near the image stamp"
        if layout.end_effector_space:
            if layout.kinematics is None or layout.end_effector is None:
                return False, f"{layout.action_space} actions need the robot's URDF (urdf_file or robot_description)"
            from ceed_vla_ros.kinematics import ee_chunk_targets

            targets, reason = ee_chunk_targets(arm_actions, layout.end_effector, layout.action_space,
                                               layout.kinematics, reference)
            if targets is None:
                self.ik_refusals += 1
                self._chunk = None
                self._idle_reason = f"IK refused the last chunk: {reason}"
                return False, f"IK: {reason}"
        else:
            try:
                targets = chunk_targets(arm_actions, layout.action_space, reference)
            except ValueError as error:
                return False, str(error)
        if self.gripper is not None:
            if layout.gripper is not None:
                column = self.gripper.position(layout.gripper.open_fraction(actions[:, -1]))
            else:
                column = np.full(len(targets), start[-1])  # a checkpoint without a gripper: it holds
            targets = np.column_stack((targets, column))
        targets = targets[keep]
        times = ends[keep]
        weights = np.ones(len(times))
        counts = np.ones(len(times))
        old = self._chunk
        if (self.chunk_transition == "temporal_ensemble" and old is not None and not old.finished(now)
                and old.weights is not None):
            targets, weights, counts = self._ensemble(old, times, targets)
        # the stream follows the targets through the per-period limiter (it catches up after the last
        # step); the trajectory's points are limited themselves, as a controller executes them as given
        curve = None
        if self.motion == "cubic":  # from the command in force WITH its velocity: no velocity step
            curve = CubicChunk.through(now, start, self._command_velocity(), times, targets)
        chunk = ScheduledChunk(times=np.concatenate(([now], times)), positions=np.vstack((start, targets)),
                               received_at=now, weights=np.concatenate(([1.0], weights)),
                               counts=np.concatenate(([1.0], counts)), curve=curve)
        self._chunk = chunk
        self._chunk_stamp = image_stamp
        if self.plan_trajectories:
            if self.motion == "cubic":
                self.last_trajectory = self._planned_trajectory(image_stamp, now, chunk, times)
                self.last_trajectory.targets = targets
            else:
                positions, velocities = self._limited_knots(now, start, times, targets)
                self.last_trajectory = ChunkTrajectory(image_stamp, times - image_stamp, positions, velocities,
                                                       targets)
        return True, f"scheduled {int(keep.sum())} of {len(keep)} steps"

    def _ensemble(self, old: ScheduledChunk, times: np.ndarray, targets: np.ndarray):
        """ACT temporal ensembling of the new chunk's targets with the old schedule where they overlap."""
        targets = targets.copy()
        weights, counts = np.ones(len(times)), np.ones(len(times))
        arm = self.limits.dims
        for j, t in enumerate(times):
            if t > old.times[-1]:
                break
            index = min(int(np.searchsorted(old.times, t)), len(old.times) - 1)
            w_old, n_old = float(old.weights[index]), float(old.counts[index])
            w_new = float(np.exp(-self.ensemble_decay * n_old))
            previous = old.sample(t)
            targets[j, :arm] = (w_old * previous[:arm] + w_new * targets[j, :arm]) / (w_old + w_new)
            weights[j], counts[j] = w_old + w_new, n_old + 1
        return targets, weights, counts

    def _planned_trajectory(self, stamp: float, now: float, chunk: ScheduledChunk, times: np.ndarray
                            ) -> ChunkTrajectory:
        """The chunk's trajectory as the stream would run it if no other chunk came: a copy of the
        limiter follows the curve from the command in force, and point j is that stream's (position,
        velocity) at the control tick nearest step j's end (re-timed by at most half a period; a step
        shorter than a period moves to the next tick). The last point is where the stream comes to
        rest on the last target: later than the last step's end when the limits make it arrive late.
        So consecutive points differ in velocity by at most ``max_acceleration`` x their time apart,
        and lie within the position and velocity limits, like the stream."""
        period = self.control_period_s
        twin = self._motion.copy()
        if twin.position is None:
            twin.reset(chunk.positions[0])
        ticks = np.maximum(1, np.rint((times - now) / period).astype(np.int64))
        for j in range(1, len(ticks)):
            ticks[j] = max(ticks[j], ticks[j - 1] + 1)
        positions, velocities = np.empty((len(ticks), self._limits.dims)), np.empty((len(ticks), self._limits.dims))
        tick = 0
        for j, until in enumerate(ticks):
            while tick < until:
                tick += 1
                t = now + tick * period
                twin.step_floats(*chunk.sample_with_velocity_floats(t), chunk.stop_at_floats(t))
            positions[j], velocities[j] = twin.position, twin.velocity
        # run on to rest at the last target (bounded: a full stroke at the velocity limit and a stop)
        last = chunk.sample_floats(np.inf)
        goal = np.clip(last, twin.lower, twin.upper).tolist()
        limit = tick + int(np.ceil(self._stroke_time_bound() / period)) + 2
        while tick < limit and not (twin.at_rest(1e-9) and twin.at(goal, 1e-9)):
            tick += 1
            twin.step_floats(last, None, last)
        if tick > ticks[-1]:
            ticks[-1] = tick
        positions[-1], velocities[-1] = twin.position, 0.0
        return ChunkTrajectory(stamp, now + ticks * period - stamp, positions, velocities)

    def _stroke_time_bound(self) -> float:
        span = self._limits._upper - self._limits._lower
        return float(np.max(span / self._limits.max_velocity_array)) + 2 * self._motion.braking_time_bound()

    def stop_trajectory(self) -> ChunkTrajectory:
        """The stop from the command in force, as the stream brakes (one point per control period
        until at rest, times from now; one point a period ahead when already at rest or for an
        immediate e-stop), for a joint_trajectory_controller when the driver starts holding."""
        period = self.control_period_s
        command = self._command_in_force()
        if command is None:
            raise RuntimeError("stop_trajectory before any joint state")
        twin = self._motion.copy()
        if twin.position is None or self.motion == "linear" or (self._estopped and self.estop_stop == "immediate"):
            return ChunkTrajectory(0.0, np.array([period]), command[None, :], np.zeros((1, len(command))))
        positions, velocities = [], []
        limit = int(np.ceil(twin.braking_time_bound() / period)) + 2
        while len(positions) < limit and not (positions and twin.at_rest(1e-9)):
            positions.append(twin.step(None))
            velocities.append(twin.velocity.copy())
        velocities[-1] = np.zeros(len(command))
        return ChunkTrajectory(0.0, period * np.arange(1, len(positions) + 1), np.array(positions),
                               np.array(velocities))

    def _limited_knots(self, now: float, start: np.ndarray, times: np.ndarray, targets: np.ndarray):
        """(The linear motion profile's trajectory) knots within the limits (each reachable from the
        one before at max velocity) and their velocities: cubic Hermite (Catmull-Rom) tangents from
        the command's velocity, capped, 0 at the end; no acceleration limit."""
        positions = np.empty_like(targets)
        previous, previous_time = start, now
        for j, (t, target) in enumerate(zip(times, targets)):
            previous = positions[j] = limit_command(target, previous, self._limits, max(t - previous_time, 1e-9))
            previous_time = t
        start_velocity = self._command_velocity()
        curve = CubicChunk.through(now, start, start_velocity, times, positions)
        velocities = np.clip(curve.slopes[1:], -self._limits.max_velocity_array, self._limits.max_velocity_array)
        velocities[-1] = 0.0
        return positions, velocities

    def _command_velocity(self) -> np.ndarray:
        if self._motion.velocity is None:
            return np.zeros(self._limits.dims)
        return self._motion.velocity.copy()

    def command_velocity(self) -> np.ndarray | None:
        """The velocity of the command in force (joints + gripper), None before any command."""
        return None if self._motion.velocity is None else self._motion.velocity.copy()

    def braking_time_bound(self) -> float:
        """Longest a decelerating stop takes: max over joints (and gripper) of max_velocity /
        max_acceleration, plus one period."""
        return self._motion.braking_time_bound()

    def trigger_estop(self) -> None:
        self._estopped = True
        self._chunk = None
        if self.estop_stop == "immediate" and self._motion.position is not None:
            self._motion.hold()

    def reset_estop(self) -> None:
        """Clear the latch; motion resumes only with a chunk received after the reset."""
        self._estopped = False
        self._chunk = None
        self._idle_reason = "e-stop reset: waiting for fresh actions"

    @property
    def estopped(self) -> bool:
        return self._estopped

    def current_command(self) -> np.ndarray | None:
        """The joint command in force (or the measured pose clamped into the limits before any command)."""
        command = self._command_in_force()
        return None if command is None else command[: self.limits.dims]

    def current_gripper(self) -> float | None:
        """The gripper command in force (None without a gripper)."""
        command = self._command_in_force()
        return None if command is None or self.gripper is None else float(command[-1])

    def _command_in_force(self) -> np.ndarray | None:
        """Joints (+ gripper) in force: the last command, else the measured state clamped into the limits
        (the gripper at its measured position, else open)."""
        if self._motion.position is not None:
            return self._motion.position.copy()
        latest = self.joint_states.latest()
        if latest is None:
            return None
        if self.gripper is not None:
            measured = self._gripper_measured if self._gripper_measured is not None else self.gripper.open_position
            latest = np.append(latest, measured)
        return self._limits.clamp(latest)

    # -- control cycle ----------------------------------------------------------------------------
    def stream_state(self) -> tuple:
        """Everything :meth:`step` changes (the command stream, the chunk in force, why there is
        none), to :meth:`restore_stream_state` when commands planned ahead are taken back."""
        return self._motion.state(), self._chunk, self._idle_reason

    def restore_stream_state(self, state: tuple) -> None:
        motion, self._chunk, self._idle_reason = state
        self._motion.restore(motion)

    def step(self, now: float) -> DriverCommand:
        """One control period at ``now``: the command to send (or None) and why. Runs on the control
        thread every period, so it works on lists of floats (no numpy but the returned array)."""
        motion = self._motion
        if motion.position_floats is None:
            measured = self._command_in_force()
            if measured is None:
                return DriverCommand(None, True, "waiting for joint states")
        chunk = self._chunk
        desired = velocity = None  # the target and its velocity (feed-forward); desired None: brake to rest
        if self._estopped:
            holding, reason = True, "e-stop latched"
        elif chunk is None:
            holding, reason = True, self._idle_reason
        elif now - chunk.received_at > self.watchdog_timeout_s:
            self._chunk = chunk = None
            self._idle_reason = f"watchdog: no fresh actions for {self.watchdog_timeout_s:g} s"
            holding, reason = True, self._idle_reason
        elif chunk.finished(now):
            desired, holding, reason = chunk.sample_floats(now), True, "chunk used up"
        else:
            (desired, velocity), holding, reason = chunk.sample_with_velocity_floats(now), False, "following actions"
        if not self.enable_actuation:
            motion.stop_moving()  # nothing is sent: a later start begins at rest
            return DriverCommand(None, holding, reason + " (actuation disabled)")
        if motion.position_floats is None:
            motion.reset(measured)
        previous = motion.position_floats
        if self.motion == "linear":  # the former profile: position + velocity limits, holds freeze
            previous = np.array(previous)
            command = limit_command(previous if desired is None else np.array(desired), previous, self._limits,
                                    self.control_period_s)
            motion.set_state(command, (command - previous) / self.control_period_s)
            command = command.tolist()
        elif self._estopped and self.estop_stop == "immediate":
            motion.stop_moving()
            command = previous
        else:
            if desired is not None and not all(map(math.isfinite, desired)):
                desired = [d if math.isfinite(d) else p for d, p in zip(desired, previous)]
            command = motion.step_floats(desired, velocity, None if desired is None else chunk.stop_at_floats(now))
        gripper = command[-1] if self.gripper is not None else None
        return DriverCommand(np.array(command[: self.limits.dims]), holding, reason, gripper)
