"""Joint motion a real controller accepts (no ROS): limited position, velocity AND acceleration,
smooth interpolation through a chunk's targets, and stops that decelerate.

Industrial and research arms fault on position streams that jump in velocity or acceleration, so
every streamed command goes through a :class:`MotionLimiter`, whose state is the last command
``p`` and its velocity ``v = (p - p_prev) / T`` (``T`` the control period). Each period it picks the
next velocity ``v'`` and commands ``p' = p + v' T``, with, per joint:

* ``|v' - v| <= A T`` (acceleration limit ``A``) and ``|v'| <= V`` (velocity limit);
* position limits kept WITH the room to stop: ``v' T + v'^2 / (2A) <= U - p`` (and the mirror image
  for the lower limit ``L``), so the limiter can always brake in time and never needs a clamp that
  would break the acceleration limit. The bound is the continuous-time stopping distance, which
  is larger than the discrete one, so braking at ``-A`` from any state it allows stays inside.
  These bounds are feasible whenever the previous state was (``v - A T`` always satisfies them):
  the stream respects all three limits from any first command at rest, whatever the targets.

The velocity it aims for tracks a target ``x`` moving at ``x_dot`` (feed-forward) and closes the
error ``e = x - p`` as fast as it can while still able to stop on the target:
``v_goal = x_dot + sign(e) (sqrt((A T)^2 + 2 A |e|) - A T)`` with ``e = x - p - x_dot T`` the error
relative to the moving target (for small ``e`` this is ``x_dot + e / T``: on track, ``p' = x``).

:class:`CubicChunk` gives ``x`` and ``x_dot``: a piecewise cubic Hermite curve that starts at the
command in force WITH its velocity (so a re-plan never steps the velocity), passes through the
chunk's targets at their times with Catmull-Rom tangents, and arrives at the last target at rest.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np


def _sign(value: float) -> float:
    """numpy's sign of a float: -1.0, 0.0 or 1.0 (NaN stays NaN)."""
    if value > 0.0:
        return 1.0
    if value < 0.0:
        return -1.0
    return value * 0.0  # 0.0 (or NaN)


@dataclass
class MotionLimiter:
    """The limited command stream. Its state, the last command :attr:`position` and its
    :attr:`velocity`, is kept as lists of Python floats (the arrays those properties give are
    copies): the control thread calls :meth:`step_floats` on lists once per period, where numpy's
    per-call overhead on 4-7 joints would cost several times the arithmetic, more so with the
    caches cold between periods. :meth:`step` is the same on arrays."""

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray
    period_s: float
    _position: list[float] | None = field(default=None, init=False, repr=False)
    _velocity: list[float] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("lower", "upper", "max_velocity", "max_acceleration"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if not (self.lower.shape == self.upper.shape == self.max_velocity.shape == self.max_acceleration.shape):
            raise ValueError("motion limits need one lower, upper, max_velocity and max_acceleration per joint")
        if not np.all(np.isfinite(self.max_acceleration) & (self.max_acceleration > 0)):
            raise ValueError(f"max_acceleration must be finite and > 0, got {self.max_acceleration.tolist()}")
        if not self.period_s > 0:
            raise ValueError(f"control period must be > 0 s, got {self.period_s}")
        # per joint (lower, upper, V, A T, (A T)^2, 2 A) as Python floats (see step_floats)
        a_t = self.max_acceleration * self.period_s
        self._joint_constants = tuple(zip(self.lower.tolist(), self.upper.tolist(), self.max_velocity.tolist(),
                                          a_t.tolist(), (a_t * a_t).tolist(), (2.0 * self.max_acceleration).tolist()))

    @property
    def position(self) -> np.ndarray | None:
        """The last command (a copy; None before :meth:`reset`)."""
        return None if self._position is None else np.array(self._position)

    @position.setter
    def position(self, value) -> None:
        self._position = None if value is None else np.asarray(value, dtype=np.float64).tolist()

    @property
    def velocity(self) -> np.ndarray | None:
        """The last command's velocity (a copy; None before :meth:`reset`)."""
        return None if self._velocity is None else np.array(self._velocity)

    @velocity.setter
    def velocity(self, value) -> None:
        self._velocity = None if value is None else np.asarray(value, dtype=np.float64).tolist()

    @property
    def position_floats(self) -> list[float] | None:
        """The last command as the limiter's own list (no copy: read it, never write it)."""
        return self._position

    def reset(self, position: np.ndarray) -> np.ndarray:
        """Start at ``position`` (clamped into the limits), at rest."""
        clamped = np.clip(np.asarray(position, dtype=np.float64), self.lower, self.upper)
        self._position = clamped.tolist()
        self._velocity = [0.0] * len(self._position)
        return clamped

    def stop_moving(self) -> None:
        """Set the velocity to 0 and keep the position (nothing was sent: a later start is at rest)."""
        if self._position is not None:
            self._velocity = [0.0] * len(self._position)

    def step(self, target: np.ndarray | None, target_velocity: np.ndarray | None = None,
             stop_at: np.ndarray | None = None) -> np.ndarray:
        """:meth:`step_floats` on arrays (or anything ``np.asarray`` takes); returns the command."""
        targets = None if target is None else np.asarray(target, dtype=np.float64).tolist()
        feed_forward = None if target_velocity is None else np.asarray(target_velocity, dtype=np.float64).tolist()
        stops = None if stop_at is None else np.asarray(stop_at, dtype=np.float64).tolist()
        return np.array(self.step_floats(targets, feed_forward, stops))

    def step_floats(self, targets: list[float] | None, feed_forward: list[float] | None = None,
                    stops: list[float] | None = None) -> list[float]:
        """The next command toward ``targets`` (None: brake to rest where the arm is), as the
        limiter's own list (read it, never write it).

        ``feed_forward``: the target's velocity (None: 0). ``stops``: where the motion ends at rest
        (the chunk's last target; NaN for a joint: no cap): the speed toward it is capped so that
        braking at A stops on it, so a curve that stops more sharply than A allows is not overshot
        (the goal only, feasibility is kept).

        Per joint, with ``b(r) = sqrt((A T)^2 + 2 A max(r, 0)) - A T`` (the largest speed from which
        braking at A stops within ``r``): ``x = clip(target)``, ``e = x - p - x_dot T``,
        ``goal = x_dot + sign(e) b(|e|)`` (capped by ``b`` toward ``stop_at``), then ``v'`` = goal
        clipped to ``v +- A T``, to ``+-V``, to ``b(U - p)`` and ``-b(p - L)``; ``p' = clip(p + v' T)``.
        The same IEEE operations in the same order as these formulas on arrays (bitwise the same
        commands; test_motion checks it)."""
        if self._position is None:
            raise RuntimeError("MotionLimiter.step before reset")
        period = self.period_s
        positions, velocities = self._position, self._velocity
        sqrt, isfinite = math.sqrt, math.isfinite
        new_positions, new_velocities = [], []
        for j, (lower, upper, max_velocity, a_t, a_t_squared, two_a) in enumerate(self._joint_constants):
            p, v = positions[j], velocities[j]
            x = None
            if targets is None:
                goal = 0.0
            else:
                x = min(max(targets[j], lower), upper)
                # the target is where the command should be at the end of this period, moving on at
                # target_velocity: close the error relative to the moving target (on track: v' = x_dot
                # and p' = target exactly, no lead of one period)
                error = x - p
                if feed_forward is not None:
                    error -= feed_forward[j] * period
                goal = _sign(error) * (sqrt(a_t_squared + two_a * max(abs(error), 0.0)) - a_t)
                if feed_forward is not None:
                    goal += feed_forward[j]
                if stops is not None and isfinite(stops[j]):
                    room = min(max(stops[j], lower), upper) - p
                    bound = sqrt(a_t_squared + two_a * max(abs(room), 0.0)) - a_t  # toward the stop, either side
                    goal = min(goal, bound) if room >= 0 else max(goal, -bound)
            new_v = min(max(goal, v - a_t), v + a_t)
            new_v = min(max(new_v, -max_velocity), max_velocity)
            new_v = min(new_v, sqrt(a_t_squared + two_a * max(upper - p, 0.0)) - a_t)
            new_v = max(new_v, -(sqrt(a_t_squared + two_a * max(p - lower, 0.0)) - a_t))
            position = min(max(new_v * period + p, lower), upper)  # the clip is a no-op but for rounding
            if x is not None and abs(position - x) <= 1e-12 * max(1.0, abs(x)):
                position = x  # on the target but for rounding: exactly on it (an exact hold, no dither)
            new_positions.append(position)
            new_velocities.append((position - p) / period)
        self._position, self._velocity = new_positions, new_velocities
        return new_positions

    def hold(self) -> np.ndarray:
        """Freeze where the command is (an immediate stop: the velocity drops to 0 in one period,
        which breaks the acceleration limit on purpose)."""
        if self._position is None:
            raise RuntimeError("MotionLimiter.hold before reset")
        self.stop_moving()
        return np.array(self._position)

    def set_state(self, position: np.ndarray, velocity: np.ndarray) -> None:
        """Take over a command stream made elsewhere (its last position and velocity)."""
        self.position, self.velocity = position, velocity

    def copy(self) -> MotionLimiter:
        """An independent limiter in the same state (to plan ahead without moving this one)."""
        twin = MotionLimiter(self.lower, self.upper, self.max_velocity, self.max_acceleration, self.period_s)
        if self._position is not None:  # the lists are replaced, never written: sharing them is safe
            twin._position, twin._velocity = self._position, self._velocity
        return twin

    def state(self) -> tuple[list[float] | None, list[float] | None]:
        """The stream's state (position, velocity), to :meth:`restore` later (shared lists: safe,
        they are replaced, never written)."""
        return self._position, self._velocity

    def restore(self, state: tuple[list[float] | None, list[float] | None]) -> None:
        """Go back to a :meth:`state`."""
        self._position, self._velocity = state

    def braking_time_bound(self) -> float:
        """Longest time braking from any allowed speed takes: max over joints of V / A (+ one period)."""
        return float(np.max(self.max_velocity / self.max_acceleration)) + self.period_s

    def at_rest(self, tolerance: float = 1e-9) -> bool:
        return self._velocity is not None and all(abs(v) <= tolerance for v in self._velocity)

    def at(self, goal: list[float], tolerance: float = 1e-9) -> bool:
        """Whether every joint of the command is within ``tolerance`` of ``goal``."""
        return self._position is not None and all(abs(p - g) <= tolerance for p, g in zip(self._position, goal))


@dataclass
class CubicChunk:
    """Cubic Hermite knots: ``positions[j]`` with slope ``slopes[j]`` at ``times[j]``."""

    times: np.ndarray  # (m,) increasing
    positions: np.ndarray  # (m, d)
    slopes: np.ndarray  # (m, d)

    @classmethod
    def through(cls, start_time: float, start_position: np.ndarray, start_velocity: np.ndarray,
                times: np.ndarray, targets: np.ndarray) -> CubicChunk:
        """From the command in force (position, velocity) through ``targets`` at ``times``, ending at
        rest; inner tangents are Catmull-Rom ``(x[j+1] - x[j-1]) / (t[j+1] - t[j-1])``."""
        knot_times = np.concatenate(([start_time], np.asarray(times, dtype=np.float64)))
        knots = np.vstack((np.asarray(start_position, dtype=np.float64), np.asarray(targets, dtype=np.float64)))
        slopes = np.zeros_like(knots)
        slopes[0] = start_velocity
        if len(knots) > 2:
            slopes[1:-1] = (knots[2:] - knots[:-2]) / (knot_times[2:] - knot_times[:-2])[:, None]
        return cls(knot_times, knots, slopes)

    def __post_init__(self) -> None:
        # per segment j and joint k: (p_jk, h m_jk, p_j+1,k, h m_j+1,k) as Python floats, so a sample
        # is a few float operations per joint (see sample_floats)
        widths = np.diff(self.times)
        self._widths = widths.tolist()
        self._times = np.asarray(self.times, dtype=np.float64).tolist()
        segments = np.stack((self.positions[:-1], self.slopes[:-1] * widths[:, None], self.positions[1:],
                             self.slopes[1:] * widths[:, None]), axis=2)  # (m - 1, d, 4)
        self._segments = [[tuple(joint) for joint in segment] for segment in segments.tolist()]
        self._first = (self.positions[0].tolist(), self.slopes[0].tolist())
        self._last = self.positions[-1].tolist()

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(position, velocity) of the curve at ``now`` as arrays (see :meth:`sample_floats`)."""
        position, velocity = self.sample_floats(now)
        return np.array(position), np.array(velocity)

    def sample_floats(self, now: float) -> tuple[list[float], list[float]]:
        """(position, velocity) of the curve at ``now`` (held at the ends), as new lists. On segment
        j of width h, with s = (now - t_j) / h: position = h00 p_j + h10 h m_j + h01 p_j+1 + h11 h m_j+1
        (the cubic Hermite basis h00 = 2s^3 - 3s^2 + 1, h10 = s^3 - 2s^2 + s, h01 = -2s^3 + 3s^2,
        h11 = s^3 - s^2), velocity = the same with the basis' derivatives, divided by h."""
        times = self._times
        if now >= times[-1]:
            return list(self._last), [0.0] * len(self._last)
        if now <= times[0]:
            return list(self._first[0]), list(self._first[1])
        j = bisect.bisect_right(times, now) - 1
        h = self._widths[j]
        s = (now - times[j]) / h
        s2 = s * s
        s3 = s2 * s
        b0, b1, b2, b3 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s, -2 * s3 + 3 * s2, s3 - s2
        d0, d1, d2, d3 = (6 * s2 - 6 * s) / h, (3 * s2 - 4 * s + 1) / h, (-6 * s2 + 6 * s) / h, (3 * s2 - 2 * s) / h
        segment = self._segments[j]
        return ([b0 * p0 + b1 * m0 + b2 * p1 + b3 * m1 for p0, m0, p1, m1 in segment],
                [d0 * p0 + d1 * m0 + d2 * p1 + d3 * m1 for p0, m0, p1, m1 in segment])

    def finished(self, now: float) -> bool:
        return now >= self.times[-1]
