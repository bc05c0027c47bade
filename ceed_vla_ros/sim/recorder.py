"""Demonstration datasets: one HDF5 file per dataset, a writer, a reader, training samples and
the ``ceed-vla record`` subcommand.

HDF5 layout (format version 1; never pickled, strings are UTF-8 variable-length):

``/`` attributes
    ``format`` = ``"ceed_vla_ros.sim.demonstrations"``, ``format_version`` = 1,
    ``env_config`` (JSON of :meth:`TabletopArmEnv.config`), ``package_version``,
    ``num_episodes``.

``/episodes/<k>`` (one group per episode, ``k`` zero-padded to 6 digits, in recording order)
    datasets, ``T`` = number of control steps, row ``t`` = the observation at step ``t`` and the
    action taken from it:

    * ``images`` (T, H, W, 3) uint8 RGB - observation image (chunked per frame, compressed),
    * ``joint_positions`` (T, 4) float64 - MEASURED joint positions in the observation (rad),
    * ``joint_target`` (T, 4) float64 - absolute joint target applied at step t (after the env's
      velocity limit and joint-limit clipping),
    * ``action_delta`` (T, 4) float64 - ``joint_target[t] - joint_positions[t]``: the target
      relative to the joints measured at observation time (``target = joint_positions + delta``),
    * ``target_pixel`` (T, 2) float64 - privileged: (u, v) = (column, row) image position of the
      named cube's centre (auxiliary training target only, never a policy input),
    * ``tool_tip_position`` (T, 3) float64 - privileged: tool tip in world coordinates (m);
    * ``cube_pixels`` (T, 3, 2) float64 - privileged: (u, v) image position of every cube's
      centre, in ``COLOURS`` order (red, green, blue), whatever cube is named (optional),
    * ``goal_pixel`` (T, 2) float64 - privileged: (u, v) of the goal centre; NaN for reach
      (optional),
    * ``tool_tip_pixel`` (T, 2) float64 - privileged: (u, v) of the tool tip (optional);

    * ``executed_target`` (T, 4) float64 - only in noise-injected episodes (``action_noise >
      0``): the absolute joint target the env ACTUALLY applied at step t (noisy expert target
      after the env's velocity limit and joint-limit clipping); row t+1 of ``joint_positions``
      results from it (optional);

    * ``ee_pose`` (T, 6) float64 - end-effector robots (the gripper arm) only: the measured
      ``tool_tip`` pose in ``base_link`` as x, y, z (m) and roll, pitch, yaw (rad, R = Rz Ry Rx),
      by the forward kinematics of the robot's URDF (optional),
    * ``ee_target`` (T, 6) float64 - the same for the label's arm joints ``joint_target[t, :6]``:
      the end-effector target the label means (optional); the gripper label is the last column of
      ``joint_target`` (a finger position, 0 closed .. the robot's open position);

    the optional arrays (auxiliary training targets, ``executed_target``, the ee arrays) were added later within
    format version 1: files written before lack them and read back with ``None`` in their place;

    attributes: ``task``, ``instruction``, ``colour``, ``seed`` (int), ``success`` (bool: the
    episode ended successfully), ``num_steps``, ``dt``, ``image_size``, ``joint_names``,
    ``goal_position`` (3 floats; push only), ``gripper_open`` (float: the last joint is a gripper and
    this is its fully open position; robots with a gripper only), ``action_noise`` (float, rad; 0 = clean expert
    rollout) and ``noise_seed`` (int); the last two were added later, files written before lack
    them and read back as 0.0 / 0.

Noise-injected demonstrations (DART, ``ceed-vla record --action-noise SIGMA``): at every step the
env is stepped with ``expert_target + N(0, SIGMA^2)`` per joint (rad; the env velocity-limits
and clips it as usual), so the rollout drifts off the expert's nominal path, while the LABELS
``joint_target`` / ``action_delta`` are the expert's CLEAN action for the state actually visited:
``joint_target[t] = env.clip_joint_target(expert.act(obs_t), applied_target[t-1])``, i.e. what
the env would have applied had the clean target been sent from that state (``applied_target[t-1]``
= ``executed_target[t-1]``, the home pose at t = 0). The noise of episode seed ``s`` comes from
``numpy.random.default_rng([noise_seed, s])``, so an episode is reproducible from its attributes.
With SIGMA = 0 the recording is exactly the clean one (``joint_target`` = applied target).

Training samples and their action chunks are defined in :mod:`ceed_vla_ros.training.dataset`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ceed_vla_ros import __version__
from ceed_vla_ros.sim.env import COLOURS, TabletopArmEnv
from ceed_vla_ros.sim.expert import Expert, make_expert

FORMAT_NAME = "ceed_vla_ros.sim.demonstrations"
FORMAT_VERSION = 1
_STEP_ARRAYS: tuple[str, ...] = (
    "images",
    "joint_positions",
    "joint_target",
    "action_delta",
    "target_pixel",
    "tool_tip_position",
)
# Privileged auxiliary targets added later within format version 1 (absent in older files).
_OPTIONAL_STEP_ARRAYS: tuple[str, ...] = ("cube_pixels", "goal_pixel", "tool_tip_pixel", "ee_pose", "ee_target")
# Only written for noise-injected (DART) episodes.
_NOISE_STEP_ARRAYS: tuple[str, ...] = ("executed_target",)


@dataclass
class Episode:
    """One demonstration; array row ``t`` = observation ``t`` and the action taken from it."""

    images: np.ndarray  # (T, H, W, 3) uint8
    joint_positions: np.ndarray  # (T, 4) float64, measured
    joint_target: np.ndarray  # (T, 4) float64, applied absolute target
    action_delta: np.ndarray  # (T, 4) float64, joint_target - joint_positions
    target_pixel: np.ndarray  # (T, 2) float64, privileged
    tool_tip_position: np.ndarray  # (T, 3) float64, privileged
    task: str
    instruction: str
    colour: str
    seed: int
    success: bool
    dt: float
    image_size: int
    joint_names: tuple[str, ...]
    goal_position: np.ndarray | None = None  # (3,), push only
    cube_pixels: np.ndarray | None = None  # (T, 3, 2) float64, privileged, COLOURS order
    goal_pixel: np.ndarray | None = None  # (T, 2) float64, privileged, NaN for reach
    tool_tip_pixel: np.ndarray | None = None  # (T, 2) float64, privileged
    executed_target: np.ndarray | None = None  # (T, 4) float64, noisy applied target (DART only)
    ee_pose: np.ndarray | None = None  # (T, 6) float64, measured tool_tip xyz + rpy (end-effector robots)
    ee_target: np.ndarray | None = None  # (T, 6) float64, tool_tip xyz + rpy of the label's arm joints
    gripper_open: float | None = None  # the gripper entry (last joint) when fully open; None: no gripper
    action_noise: float = 0.0  # std (rad) of the Gaussian noise on the executed expert target
    noise_seed: int = 0

    @property
    def num_steps(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class RecordSummary:
    """Outcome of :func:`record_dataset`."""

    path: Path
    episodes: int
    attempts: int
    successes: int
    steps: int
    seconds: float
    file_bytes: int

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0


def record_episode(
    env: TabletopArmEnv,
    expert: Expert,
    seed: int,
    *,
    action_noise: float = 0.0,
    noise_seed: int = 0,
) -> Episode:
    """Roll out ``expert`` in ``env`` for one episode seeded with ``seed`` and record it.

    With ``action_noise > 0`` the env executes the expert target plus Gaussian noise (std
    ``action_noise`` rad per joint, rng ``default_rng([noise_seed, seed])``) while the recorded
    labels stay the expert's clean action for each visited state (see the module docstring).
    """
    if action_noise < 0:
        raise ValueError(f"action_noise must be >= 0, got {action_noise}")
    noisy = action_noise > 0
    rng = np.random.default_rng([int(noise_seed), int(seed)]) if noisy else None
    kinematics = end_effector_kinematics(env)
    arm = env.robot.arm_joints
    noise_mask = (np.arange(len(env.joint_names)) < arm).astype(np.float64)  # never on a gripper
    obs = env.reset(seed=seed)
    info = env.privileged()
    keys = _STEP_ARRAYS + _OPTIONAL_STEP_ARRAYS + (_NOISE_STEP_ARRAYS if noisy else ())
    if kinematics is None:
        keys = tuple(k for k in keys if k not in ("ee_pose", "ee_target"))
    steps: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    done, success = False, False
    while not done:
        steps["images"].append(obs["image"])
        steps["joint_positions"].append(obs["joint_positions"])
        steps["target_pixel"].append(info["target_pixel"])
        steps["tool_tip_position"].append(info["tool_tip_position"])
        steps["cube_pixels"].append(
            np.stack([env.project_to_pixel(info["cube_positions"][c]) for c in COLOURS])
        )
        goal = info["goal_position"]
        steps["goal_pixel"].append(
            np.full(2, np.nan) if goal is None else env.project_to_pixel(goal)
        )
        steps["tool_tip_pixel"].append(env.project_to_pixel(info["tool_tip_position"]))
        clean = expert.act(obs, info)
        if noisy:
            label = env.clip_joint_target(clean, env.joint_target)
            executed = clean + noise_mask * rng.normal(0.0, action_noise, size=clean.shape)
            next_obs, success, done, next_info = env.step(executed)
            steps["executed_target"].append(next_info["joint_target"])
        else:
            next_obs, success, done, next_info = env.step(clean)
            label = next_info["joint_target"]
        steps["joint_target"].append(label)
        steps["action_delta"].append(label - obs["joint_positions"])
        if kinematics is not None:
            steps["ee_pose"].append(pose_vector(kinematics, obs["joint_positions"][:arm]))
            steps["ee_target"].append(pose_vector(kinematics, label[:arm]))
        obs, info = next_obs, next_info
    arrays = {key: np.stack(values) for key, values in steps.items()}
    return Episode(
        **arrays,
        task=env.task,
        instruction=env.instruction,
        colour=env.colour,
        seed=int(seed),
        success=bool(success),
        dt=env.dt,
        image_size=env.image_size,
        joint_names=tuple(env.joint_names),
        goal_position=None if env.goal_position is None else env.goal_position.copy(),
        action_noise=float(action_noise),
        noise_seed=int(noise_seed) if noisy else 0,
        gripper_open=env.robot.gripper_open,
    )


def end_effector_kinematics(env: TabletopArmEnv):
    """The URDF kinematics of an end-effector robot (one with a gripper), else None."""
    if not env.robot.has_gripper:
        return None
    from ceed_vla_ros.kinematics import ArmKinematics
    from ceed_vla_ros.sim.robots import urdf_path

    robot = env.robot
    return ArmKinematics.from_file(urdf_path(robot), robot.joint_names[: robot.arm_joints], "base_link", "tool_tip")


def pose_vector(kinematics, joints: np.ndarray) -> np.ndarray:
    """(6,) x, y, z, roll, pitch, yaw of the tip at ``joints`` (forward kinematics)."""
    from ceed_vla_ros.kinematics import rotation_values

    position, rotation = kinematics.forward(np.asarray(joints, dtype=np.float64))
    return np.concatenate((position, rotation_values(rotation, "rpy")))


class DatasetWriter:
    """Appends episodes to a new HDF5 dataset file (see the module docstring for the layout).

    Args:
        path: output file; parent directories are created.
        env_config: the environment configuration, stored as JSON in the root attributes.
        compression: ``"lzf"`` (fast, default), ``"gzip"`` or ``None`` for the image arrays.
        overwrite: replace an existing file instead of raising ``FileExistsError``.
    """

    def __init__(
        self,
        path: str | Path,
        env_config: dict[str, Any],
        *,
        compression: str | None = "lzf",
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists (pass overwrite=True / --overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.compression = compression
        self._file = h5py.File(self.path, "w")
        self._file.attrs["format"] = FORMAT_NAME
        self._file.attrs["format_version"] = FORMAT_VERSION
        self._file.attrs["env_config"] = json.dumps(env_config, sort_keys=True)
        self._file.attrs["package_version"] = __version__
        self._file.attrs["num_episodes"] = 0
        self._episodes = self._file.create_group("episodes")
        self.num_episodes = 0

    def add_episode(self, episode: Episode) -> int:
        """Write ``episode``; return its index."""
        index = self.num_episodes
        group = self._episodes.create_group(f"{index:06d}")
        frame_chunk = (1, *episode.images.shape[1:])
        group.create_dataset(
            "images", data=episode.images, chunks=frame_chunk, compression=self.compression
        )
        for key in _STEP_ARRAYS[1:] + _OPTIONAL_STEP_ARRAYS + _NOISE_STEP_ARRAYS:
            value = getattr(episode, key)
            if value is not None:
                group.create_dataset(key, data=np.asarray(value, dtype=np.float64))
        attrs = group.attrs
        attrs["task"] = episode.task
        attrs["instruction"] = episode.instruction
        attrs["colour"] = episode.colour
        attrs["seed"] = episode.seed
        attrs["success"] = episode.success
        attrs["num_steps"] = episode.num_steps
        attrs["dt"] = episode.dt
        attrs["image_size"] = episode.image_size
        attrs["joint_names"] = list(episode.joint_names)
        if episode.goal_position is not None:
            attrs["goal_position"] = np.asarray(episode.goal_position, dtype=np.float64)
        if episode.gripper_open is not None:
            attrs["gripper_open"] = float(episode.gripper_open)
        attrs["action_noise"] = float(episode.action_noise)
        attrs["noise_seed"] = int(episode.noise_seed)
        self.num_episodes += 1
        self._file.attrs["num_episodes"] = self.num_episodes
        return index

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class DatasetReader:
    """Random access and iteration over the episodes of a dataset file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = h5py.File(self.path, "r")
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT_NAME:
            raise ValueError(f"{self.path} is not a {FORMAT_NAME} file")
        self.format_version = int(attrs["format_version"])
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"{self.path}: format version {self.format_version}, expected {FORMAT_VERSION}"
            )
        self.env_config: dict[str, Any] = json.loads(attrs["env_config"])
        self._keys = sorted(self._file["episodes"].keys())

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, index: int) -> Episode:
        group = self._file["episodes"][self._keys[index]]
        attrs = group.attrs
        arrays = {key: group[key][()] for key in _STEP_ARRAYS}
        optional = _OPTIONAL_STEP_ARRAYS + _NOISE_STEP_ARRAYS
        arrays |= {key: group[key][()] if key in group else None for key in optional}
        return Episode(
            **arrays,
            task=str(attrs["task"]),
            instruction=str(attrs["instruction"]),
            colour=str(attrs["colour"]),
            seed=int(attrs["seed"]),
            success=bool(attrs["success"]),
            dt=float(attrs["dt"]),
            image_size=int(attrs["image_size"]),
            joint_names=tuple(str(n) for n in attrs["joint_names"]),
            goal_position=np.asarray(attrs["goal_position"]) if "goal_position" in attrs else None,
            action_noise=float(attrs.get("action_noise", 0.0)),
            noise_seed=int(attrs.get("noise_seed", 0)),
            gripper_open=float(attrs["gripper_open"]) if "gripper_open" in attrs else None,
        )

    def __iter__(self) -> Iterator[Episode]:
        for index in range(len(self)):
            yield self[index]

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> DatasetReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def default_robot(task: str) -> str:
    """The robot a task runs on unless one is named: pick needs the gripper arm."""
    return "gripper_arm" if task == "pick" else "arm"


def read_episodes(path: str | Path) -> Iterator[Episode]:
    """Yield every episode of the dataset at ``path`` in recording order."""
    with DatasetReader(path) as reader:
        yield from reader


def record_dataset(
    task: str,
    episodes: int,
    out: str | Path,
    *,
    seed: int = 0,
    image_size: int = 64,
    horizon: int | None = None,
    only_successful: bool = False,
    compression: str | None = "lzf",
    overwrite: bool = False,
    progress: bool = True,
    action_noise: float = 0.0,
    noise_seed: int = 0,
    robot: str | None = None,
) -> RecordSummary:
    """Record ``episodes`` expert demonstrations into ``out``; attempt ``i`` uses seed ``seed+i``.

    With ``only_successful`` failed attempts are dropped and further seeds are tried until
    ``episodes`` successes are written (at most ``2 * episodes + 10`` attempts). With
    ``action_noise > 0`` the rollouts are noise-injected (DART, see the module docstring; never on a
    gripper). ``robot``: ``arm`` or ``gripper_arm`` (default: ``gripper_arm`` for pick, else ``arm``).
    """
    from tqdm import tqdm

    start = time.perf_counter()
    max_attempts = 2 * episodes + 10 if only_successful else episodes
    attempts = successes = steps = 0
    with (
        TabletopArmEnv(task=task, image_size=image_size, horizon=horizon, robot=robot or default_robot(task)) as env,
        DatasetWriter(out, env.config(), compression=compression, overwrite=overwrite) as writer,
        tqdm(total=episodes, unit="ep", disable=not progress, desc=f"record {task}") as bar,
    ):
        expert = make_expert(env)
        while writer.num_episodes < episodes and attempts < max_attempts:
            episode = record_episode(
                env, expert, seed=seed + attempts, action_noise=action_noise, noise_seed=noise_seed
            )
            attempts += 1
            successes += episode.success
            if only_successful and not episode.success:
                continue
            writer.add_episode(episode)
            steps += episode.num_steps
            bar.update(1)
            bar.set_postfix(success=f"{successes / attempts:.0%}")
        written = writer.num_episodes
    return RecordSummary(
        path=Path(out),
        episodes=written,
        attempts=attempts,
        successes=successes,
        steps=steps,
        seconds=time.perf_counter() - start,
        file_bytes=Path(out).stat().st_size,
    )
