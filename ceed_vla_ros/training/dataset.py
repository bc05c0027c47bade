"""HDF5 demonstrations -> in-memory training tensors for the teacher (and later the student).

Definitions (exact):

* **Chunk-relative joint deltas** (action space ``joint_delta``). For the observation at step ``t``
  of an episode of ``T`` steps, chunk action ``i`` (``i = 0 .. k-1``) is::

      actions[t, i] = joint_target[min(t + i, T - 1)] - joint_positions[t]

  i.e. every target of the chunk relative to the joints MEASURED at the image time (the arm
  driver computes ``target_i = joints_at_image_stamp + a_i``); past the episode end the last
  applied ``joint_target`` is repeated (the arm holds the final pose). ``actions[t, 0]`` equals
  the recorder's ``action_delta[t]``.
* **Chunk-relative end-effector deltas + gripper** (action space ``ee_delta``: episodes of a robot
  with a gripper, which carry ``ee_pose`` / ``ee_target``; the metadata's ``delta_frame: base``,
  ``delta_reference: image_pose``, rotation ``rpy``). With ``j = min(t + i, T - 1)``::

      actions[t, i, 0:3] = ee_target[j, :3] - ee_pose[t, :3]                 (m, base frame)
      actions[t, i, 3:6] = rpy(R(ee_target[j, 3:]) @ R(ee_pose[t, 3:])^T)    (R' = dR R)
      actions[t, i, 6]   = joint_target[j, -1] / gripper_open                (1 open, 0 closed)

  so the driver's ``target_i = (p_t + dp_i, dR_i R_t)`` through its IK reproduces the label.
* **Statistics**: ``action_norm`` = per-dimension q01/q99 over ALL chunk positions of all samples
  (``NormStats.from_data(actions.reshape(-1, 4))``); ``proprio_norm`` = q01/q99 of the measured
  joint positions. Both go into the checkpoint metadata.
* **Prompt**: ``checkpoint.encode_prompt`` (image/proprio placeholders + templated instruction);
  prompts are LEFT-padded with the pad id to the longest prompt (see ``model.py``).
* **Auxiliary targets** (privileged, training only, never a policy input), image coordinates
  normalised like the spatial-softmax grid of the vision encoder (pixel centres at -1 .. 1)::

      x = 2 * (u - 0.5) / (W - 1) - 1,  y = 2 * (v - 0.5) / (H - 1) - 1

  ``aux_points`` (N, 5, 2) = red, green, blue cube centres, goal centre, tool tip;
  ``aux_mask`` (N, 5) = which are defined (the goal only for push; older files without the
  optional recorder arrays give only the named cube via ``target_pixel``: mask 0 elsewhere);
  ``target_point`` (N, 2) = the NAMED cube's centre (``target_pixel``), ``target_mask`` (N,) = 1
  where it is known (datasets from real robots have no privileged targets: 0, the loss skips them).
* **Sources**: the simulator's HDF5 files or LeRobot dataset folders
  (:func:`ceed_vla_ros.datasets.open_dataset`); a single LeRobot dataset brings its own proprio
  statistics (``meta/stats.json``'s q01/q99 of the state), which then replace the computed ones.

Images are kept as uint8 (N, H, W, 3) in the recorder's size; they must already have the
checkpoint's ``ImageSpec`` size (64 x 64 RGB here), the policy's ``preprocess_images`` does the
rest on each batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ceed_vla_ros.action_tokenizer import ActionTokenizer, NormStats
from ceed_vla_ros.sim.recorder import Episode

AUX_POINT_NAMES: tuple[str, ...] = ("red", "green", "blue", "goal", "tool_tip")


def chunk_relative_actions(episode: Episode, chunk_len: int) -> np.ndarray:
    """``(T, chunk_len, 4)`` chunk-relative deltas (see module docstring), last target held."""
    if chunk_len < 1:
        raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
    steps = episode.num_steps
    index = np.minimum(np.arange(steps)[:, None] + np.arange(chunk_len)[None, :], steps - 1)
    return episode.joint_target[index] - episode.joint_positions[:, None, :]


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """(..., 3) roll, pitch, yaw -> (..., 3, 3) ``Rz(yaw) Ry(pitch) Rx(roll)`` (pinocchio's convention)."""
    r, p, y = np.moveaxis(np.asarray(rpy, dtype=np.float64), -1, 0)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    rows = [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def matrix_to_rpy(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rpy_to_matrix` (pitch in [-pi/2, pi/2])."""
    m = np.asarray(matrix, dtype=np.float64)
    pitch = np.arcsin(np.clip(-m[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(m[..., 2, 1], m[..., 2, 2])
    yaw = np.arctan2(m[..., 1, 0], m[..., 0, 0])
    return np.stack((roll, pitch, yaw), axis=-1)


def chunk_relative_ee_actions(episode: Episode, chunk_len: int) -> np.ndarray:
    """``(T, chunk_len, 7)`` chunk-relative end-effector deltas + gripper (see module docstring)."""
    if episode.ee_pose is None or episode.ee_target is None or episode.gripper_open is None:
        raise ValueError("ee_delta actions need an episode with ee_pose, ee_target and a gripper")
    steps = episode.num_steps
    index = np.minimum(np.arange(steps)[:, None] + np.arange(chunk_len)[None, :], steps - 1)
    pose, target = episode.ee_pose, episode.ee_target[index]  # (T, 6), (T, k, 6)
    translation = target[..., :3] - pose[:, None, :3]
    delta = rpy_to_matrix(target[..., 3:]) @ np.swapaxes(rpy_to_matrix(pose[:, 3:]), -1, -2)[:, None]
    gripper = episode.joint_target[index, -1:] / episode.gripper_open
    return np.concatenate((translation, matrix_to_rpy(delta), gripper), axis=-1)


def pixels_to_unit(uv: np.ndarray, image_size: int) -> np.ndarray:
    """(u, v) continuous pixel coordinates -> the vision encoder's [-1, 1] grid (pixel centres)."""
    return 2.0 * (np.asarray(uv, dtype=np.float64) - 0.5) / (image_size - 1) - 1.0


@dataclass
class TeacherData:
    """All samples of a set of episodes, one row per control step (numpy, not yet tokenised)."""

    images: np.ndarray  # (N, H, W, 3) uint8
    joint_positions: np.ndarray  # (N, 4) float64, measured
    actions: np.ndarray  # (N, k, 4) float64, chunk-relative deltas
    instruction_index: np.ndarray  # (N,) int64 into ``instructions``
    instructions: list[str]
    task_index: np.ndarray  # (N,) int64 into ``tasks``
    tasks: list[str]
    episode_index: np.ndarray  # (N,) int64, running over all loaded episodes
    aux_points: np.ndarray  # (N, 5, 2) float32 in [-1, 1] (AUX_POINT_NAMES order)
    aux_mask: np.ndarray  # (N, 5) float32, 1 where defined
    target_point: np.ndarray  # (N, 2) float32, named cube
    chunk_len: int
    image_size: int
    num_episodes: int
    target_mask: np.ndarray | None = None  # (N,) float32, 1 where target_point is known (None: all)
    joint_names: tuple[str, ...] = ()
    dt: float = 0.1
    image_crop: str = "none"  # how the source frames were cropped before resizing (the checkpoint's ImageSpec.crop)
    proprio_norm: NormStats | None = None  # the dataset's own statistics, else computed
    action_space: str = "joint_delta"  # or ee_delta (episodes of a robot with a gripper)
    arm_joints: int | None = None  # ee_delta: the first arm_joints of joint_names are the arm's

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def action_stats(self) -> NormStats:
        """q01/q99 per joint over all chunk positions."""
        return NormStats.from_data(self.actions.reshape(-1, self.actions.shape[-1]))

    def proprio_stats(self) -> NormStats:
        if self.proprio_norm is not None:
            return self.proprio_norm
        return NormStats.from_data(self.joint_positions)


def build_teacher_data(
    episodes: Iterable[Episode],
    chunk_len: int,
    *,
    proprio_norm: NormStats | None = None,
    image_crop: str = "none",
) -> TeacherData:
    """Stack every step of ``episodes`` into a :class:`TeacherData` (see module docstring)."""
    images, joints, actions, instr, task, epi, points, masks, targets = ([] for _ in range(9))
    joint_names: tuple[str, ...] | None = None
    dt = None
    action_space: str | None = None
    instructions: list[str] = []
    tasks: list[str] = []
    image_size = None
    count = 0
    for episode in episodes:
        steps = episode.num_steps
        if image_size is None:
            image_size = episode.image_size
        elif episode.image_size != image_size:
            raise ValueError(f"episode image size {episode.image_size} differs from {image_size}")
        if joint_names is None:
            joint_names, dt = tuple(episode.joint_names), float(episode.dt)
        elif tuple(episode.joint_names) != joint_names:
            raise ValueError(f"episode joints {list(episode.joint_names)} differ from {list(joint_names)}")
        if episode.instruction not in instructions:
            instructions.append(episode.instruction)
        if episode.task not in tasks:
            tasks.append(episode.task)
        space = "ee_delta" if episode.ee_target is not None else "joint_delta"
        if action_space is None:
            action_space = space
        elif space != action_space:
            raise ValueError(f"episodes mix {action_space} and {space} actions (robots with and without a gripper)")
        images.append(episode.images)
        joints.append(episode.joint_positions)
        if space == "ee_delta":
            actions.append(chunk_relative_ee_actions(episode, chunk_len))
        else:
            actions.append(chunk_relative_actions(episode, chunk_len))
        instr.append(np.full(steps, instructions.index(episode.instruction)))
        task.append(np.full(steps, tasks.index(episode.task)))
        epi.append(np.full(steps, count))
        pts = np.zeros((steps, len(AUX_POINT_NAMES), 2))
        mask = np.zeros((steps, len(AUX_POINT_NAMES)))
        if episode.cube_pixels is not None:
            pts[:, :3] = episode.cube_pixels
            mask[:, :3] = 1.0
        if episode.goal_pixel is not None:
            defined = np.isfinite(episode.goal_pixel).all(axis=1)
            pts[defined, 3] = episode.goal_pixel[defined]
            mask[:, 3] = defined
        if episode.tool_tip_pixel is not None:
            pts[:, 4] = episode.tool_tip_pixel
            mask[:, 4] = 1.0
        points.append(np.where(mask[..., None] > 0, pixels_to_unit(np.nan_to_num(pts), episode.image_size), 0.0))
        masks.append(mask)
        targets.append(pixels_to_unit(episode.target_pixel, episode.image_size))
        count += 1
    if count == 0:
        raise ValueError("no episodes")
    target_point = np.concatenate(targets)
    known = np.isfinite(target_point).all(axis=1)
    return TeacherData(
        images=np.concatenate(images).astype(np.uint8, copy=False),
        joint_positions=np.concatenate(joints),
        actions=np.concatenate(actions),
        instruction_index=np.concatenate(instr).astype(np.int64),
        instructions=instructions,
        task_index=np.concatenate(task).astype(np.int64),
        tasks=tasks,
        episode_index=np.concatenate(epi).astype(np.int64),
        aux_points=np.concatenate(points).astype(np.float32),
        aux_mask=np.concatenate(masks).astype(np.float32),
        target_point=np.where(known[:, None], target_point, 0.0).astype(np.float32),
        chunk_len=int(chunk_len),
        image_size=int(image_size),
        num_episodes=count,
        target_mask=known.astype(np.float32),
        joint_names=joint_names,
        dt=dt,
        image_crop=image_crop,
        proprio_norm=proprio_norm,
        action_space=action_space,
        arm_joints=len(joint_names) - 1 if action_space == "ee_delta" else None,
    )


def load_teacher_data(
    paths: Sequence[str | Path], chunk_len: int, max_episodes: int | None = None, mapping=None
) -> TeacherData:
    """Read HDF5 files or LeRobot datasets (at most ``max_episodes`` episodes from EACH) into
    :class:`TeacherData`; ``mapping``: the :class:`~ceed_vla_ros.datasets.FeatureMapping` of LeRobot sources."""
    from ceed_vla_ros.datasets import open_dataset, source_crop, source_proprio_norm

    def episodes():
        for path in paths:
            with open_dataset(path, mapping) as source:
                for i in range(len(source)):
                    if max_episodes is not None and i >= max_episodes:
                        break
                    yield source[i]

    return build_teacher_data(
        episodes(),
        chunk_len,
        proprio_norm=source_proprio_norm(paths, mapping),
        image_crop=source_crop(paths, mapping),
    )


@dataclass
class TrainingTensors:
    """Tokenised, normalised torch tensors ready for batching (all CPU)."""

    images: torch.Tensor  # (N, H, W, 3) uint8
    proprio: torch.Tensor  # (N, 4) float32, normalised (not clipped, as the policy does)
    prompt_ids: torch.Tensor  # (P, L) int64, left-padded, one row per instruction
    prompt_mask: torch.Tensor  # (P, L) int64 attention mask
    instruction_index: torch.Tensor  # (N,) int64
    action_tokens: torch.Tensor  # (N, k * 4) int64 token ids
    aux_points: torch.Tensor  # (N, 5, 2) float32
    aux_mask: torch.Tensor  # (N, 5) float32
    target_point: torch.Tensor  # (N, 2) float32
    task_index: torch.Tensor  # (N,) int64
    target_mask: torch.Tensor | None = None  # (N,) float32, 1 where target_point is known
    vision_features: torch.Tensor | None = None  # (N, F) float32: a frozen CNN's output per image

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather rows ``index``: uint8 ``images`` (or, once cached, ``vision_features``) and the
        full (prompt + action) ``input_ids``."""
        instr = self.instruction_index[index]
        prompts = self.prompt_ids[instr]
        actions = self.action_tokens[index]
        mask = torch.cat((self.prompt_mask[instr], torch.ones_like(actions)), dim=1)
        if self.vision_features is None:
            pixels = {"images": self.images[index]}
        else:
            pixels = {"vision_features": self.vision_features[index]}
        return {
            **pixels,
            "proprio": self.proprio[index],
            "input_ids": torch.cat((prompts, actions), dim=1),
            "attention_mask": mask,
            "action_tokens": actions,
            "aux_points": self.aux_points[index],
            "aux_mask": self.aux_mask[index],
            "target_point": self.target_point[index],
            "target_mask": (
                torch.ones(len(index)) if self.target_mask is None else self.target_mask[index]
            ),
            "task_index": self.task_index[index],
        }


def tokenize_teacher_data(
    data: TeacherData,
    prompt_ids: Sequence[Sequence[int]],
    action_tokenizer: ActionTokenizer,
    proprio_norm: NormStats | None,
    pad_id: int,
) -> TrainingTensors:
    """Tokenise ``data``: ``prompt_ids[j]`` are the full prompt ids of ``data.instructions[j]``
    (``proprio_norm`` None: a model without proprio input, ``proprio`` is (N, 0))."""
    if len(prompt_ids) != len(data.instructions):
        raise ValueError("need one prompt per instruction")
    if action_tokenizer.chunk_len != data.chunk_len:
        raise ValueError(f"action tokenizer chunk_len {action_tokenizer.chunk_len} != data {data.chunk_len}")
    length = max(len(p) for p in prompt_ids)
    padded = torch.full((len(prompt_ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), length), dtype=torch.long)
    for j, ids in enumerate(prompt_ids):
        padded[j, length - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        mask[j, length - len(ids) :] = 1
    tokens = action_tokenizer.encode(data.actions)  # (N, k * d)
    return TrainingTensors(
        images=torch.from_numpy(np.ascontiguousarray(data.images)),
        proprio=torch.from_numpy(
            proprio_norm.normalize(data.joint_positions, clip=False).astype(np.float32)
            if proprio_norm is not None
            else np.zeros((len(data.joint_positions), 0), np.float32)
        ),
        prompt_ids=padded,
        prompt_mask=mask,
        instruction_index=torch.from_numpy(data.instruction_index),
        action_tokens=torch.from_numpy(tokens.astype(np.int64)),
        aux_points=torch.from_numpy(data.aux_points),
        aux_mask=torch.from_numpy(data.aux_mask),
        target_point=torch.from_numpy(data.target_point),
        task_index=torch.from_numpy(data.task_index),
        target_mask=None if data.target_mask is None else torch.from_numpy(data.target_mask),
    )


def random_shift(
    images: torch.Tensor, max_shift: int, generator: torch.Generator | None, offsets: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift each uint8 image (B, H, W, 3) by a random integer offset in [-max_shift, max_shift]
    (edge pixels replicated). Returns the shifted images and the offsets (B, 2) as (dx, dy) pixels,
    so that a point at (u, v) moves to (u + dx, v + dy). ``offsets`` given: those, not drawn."""
    batch, height, width, _ = images.shape
    if offsets is None:
        offsets = torch.randint(-max_shift, max_shift + 1, (batch, 2), generator=generator)
    if max_shift == 0:
        return images, offsets
    rows = (torch.arange(height)[None, :] - offsets[:, 1:2]).clamp(0, height - 1)  # (B, H)
    cols = (torch.arange(width)[None, :] - offsets[:, 0:1]).clamp(0, width - 1)  # (B, W)
    b = torch.arange(batch)[:, None, None]
    return images[b, rows[:, :, None], cols[:, None, :]], offsets
