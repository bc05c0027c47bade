"""Streams of camera frames, joint states and commands -> frames at a fixed rate (ROS-free).

The same rule live (the ``episode_recorder`` node, at each tick of its timer) and offline
(``ceed-vla import-bag``, at each tick of a grid ``t0 + k / fps``), and the policy node's rule at
run time:

* **image**: the newest camera frame stamped at or before the tick; a tick whose newest frame is
  older than ``max_image_age_s`` (camera stalled) is dropped, not padded;
* **state**: the joint positions at the IMAGE's stamp, linearly interpolated in the joint-state
  history (:class:`~ceed_vla_ros.arm_control.JointStateHistory`, what the policy uses to look up
  the arm's pose for a frame); no joint state near the stamp: the tick is dropped;
* **action**: the newest command (teleoperation device or driver) received at or before the
  tick, i.e. the joint target in force for the step that starts with this frame; none yet: dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ceed_vla_ros.arm_control import JointStateHistory


@dataclass
class AlignedFrames:
    images: list[np.ndarray] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    image_stamps: list[float] = field(default_factory=list)
    dropped: dict[str, int] = field(
        default_factory=lambda: {"no_image": 0, "stale_image": 0, "no_state": 0, "no_action": 0}
    )

    def __len__(self) -> int:
        return len(self.images)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "images": np.stack(self.images),
            "state": np.stack(self.states),
            "action": np.stack(self.actions),
            "image_stamp": np.asarray(self.image_stamps),
        }


def align_tick(
    tick: float,
    image: tuple[float, np.ndarray] | None,
    history: JointStateHistory,
    command: np.ndarray | None,
    max_image_age_s: float,
    out: AlignedFrames,
) -> bool:
    """Record one tick into ``out`` (see the module docstring); False (and counted) when dropped."""
    if image is None:
        out.dropped["no_image"] += 1
        return False
    stamp, rgb = image
    if tick - stamp > max_image_age_s:
        out.dropped["stale_image"] += 1
        return False
    state = history.at(stamp)
    if state is None:
        out.dropped["no_state"] += 1
        return False
    if command is None:
        out.dropped["no_action"] += 1
        return False
    out.images.append(rgb)
    out.states.append(np.asarray(state, dtype=np.float64))
    out.actions.append(np.asarray(command, dtype=np.float64))
    out.image_stamps.append(stamp)
    return True


def resample(
    images: list[tuple[float, np.ndarray]],
    joints: list[tuple[float, np.ndarray]],
    commands: list[tuple[float, np.ndarray]],
    fps: float,
    max_image_age_s: float = 0.5,
) -> AlignedFrames:
    """Offline: ticks from the first moment all three streams have data to the last image."""
    out = AlignedFrames()
    if not images or not joints or not commands:
        return out
    images = sorted(images, key=lambda x: x[0])
    joints = sorted(joints, key=lambda x: x[0])
    commands = sorted(commands, key=lambda x: x[0])
    history = JointStateHistory(horizon_s=float("inf"))
    for stamp, positions in joints:
        history.add(stamp, positions)
    start = max(images[0][0], joints[0][0], commands[0][0])
    end = images[-1][0]
    image_times = np.array([t for t, _ in images])
    command_times = np.array([t for t, _ in commands])
    ticks = start + np.arange(int(np.floor((end - start) * fps + 1e-9)) + 1) / fps
    for tick in ticks:
        i = int(np.searchsorted(image_times, tick + 1e-9, side="right")) - 1
        c = int(np.searchsorted(command_times, tick + 1e-9, side="right")) - 1
        align_tick(
            float(tick),
            images[i] if i >= 0 else None,
            history,
            commands[c][1] if c >= 0 else None,
            max_image_age_s,
            out,
        )
    return out
