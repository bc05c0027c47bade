"""Bring your own data: demonstration sources the training pipeline reads.

:func:`open_dataset` opens either the simulator's HDF5 file (:class:`~ceed_vla_ros.sim.recorder.DatasetReader`)
or a LeRobot dataset folder (v3.0 or v2.1, :class:`LeRobotSource`); both give ``len()``, indexing
to :class:`~ceed_vla_ros.sim.recorder.Episode` and ``with``. A :class:`FeatureMapping` says which
LeRobot feature is the image, the state and the action and where the instruction comes from.

How a LeRobot episode becomes an ``Episode`` (exact):

* ``images``: the mapped camera's frames, center-cropped to a square when they are not square,
  then resized to ``image_size`` (default: the frames' own size when square, else 64) with
  :func:`~ceed_vla_ros.image_conversion.crop_and_resize`, the
  camera node's own function (the checkpoint then says ``crop: center_square``, so deployment
  crops the live camera the same way);
* ``joint_positions`` = the state feature; ``joint_target`` = the action feature
  (``action_kind: absolute``, joint position targets as LeRobot robots record them) or
  state + action (``action_kind: delta``); ``dt`` = 1 / fps; ``joint_names`` = the state's names;
* ``instruction``: the frame's ``task_index`` text (``task: task_index``, the default), or one
  fixed text for all (``task: fixed:<text>``);
* privileged auxiliary targets: the ``ceed.*`` features of a dataset exported from the simulator
  (``ceed-vla export-lerobot``); other datasets have none (their losses are masked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ceed_vla_ros.datasets.lerobot import (
    LeRobotDataset,
    LeRobotFormatError,
    LeRobotWriter,
    is_lerobot_dataset,
)

__all__ = [
    "FeatureMapping",
    "LeRobotDataset",
    "LeRobotFormatError",
    "LeRobotSource",
    "LeRobotWriter",
    "is_lerobot_dataset",
    "open_dataset",
    "source_proprio_norm",
]

# privileged (simulator-only) features written by the exporter, and their per-frame shapes
CEED_FEATURES: dict[str, tuple[int, ...]] = {
    "ceed.target_pixel": (2,),
    "ceed.tool_tip_position": (3,),
    "ceed.cube_pixels": (3, 2),
    "ceed.goal_pixel": (2,),
    "ceed.tool_tip_pixel": (2,),
    "ceed.executed_target": (4,),
}


@dataclass(frozen=True)
class FeatureMapping:
    """Which LeRobot features feed training (command line: ``--lerobot-map key=value ...``)."""

    image: str = ""  # empty: observation.image, else the first observation.images.* / image feature
    state: str = "observation.state"
    action: str = "action"
    action_kind: str = "absolute"  # absolute joint targets, or delta (target - state)
    task: str = "task_index"  # or fixed:<instruction text>
    image_size: int = 0  # 0: the frames' own size when they are square, else 64

    def __post_init__(self) -> None:
        if self.action_kind not in ("absolute", "delta"):
            raise ValueError(f"action_kind must be absolute or delta, got {self.action_kind!r}")
        if self.task != "task_index" and not self.task.startswith("fixed:"):
            raise ValueError(f"task must be task_index or fixed:<text>, got {self.task!r}")
        if int(self.image_size) != 0 and not 8 <= int(self.image_size) <= 1024:
            raise ValueError(f"image_size must be 0 (auto) or 8-1024, got {self.image_size}")

    @classmethod
    def parse(cls, items: Sequence[str] | None) -> FeatureMapping:
        names = {f.name: f for f in fields(cls)}
        values: dict[str, object] = {}
        for item in items or ():
            key, sep, value = item.partition("=")
            if not sep or key not in names:
                raise ValueError(f"--lerobot-map {item!r}: expected KEY=VALUE with KEY one of {', '.join(names)}")
            values[key] = int(value) if key == "image_size" else value
        return cls(**values)

    def image_key(self, dataset: LeRobotDataset) -> str:
        keys = dataset.image_keys
        if self.image:
            if self.image not in keys:
                raise LeRobotFormatError(
                    f"{dataset.root / 'meta/info.json'}: no image feature {self.image!r} "
                    f"(images: {', '.join(keys) or 'none'})"
                )
            return self.image
        for preferred in ("observation.image",):
            if preferred in keys:
                return preferred
        if not keys:
            raise LeRobotFormatError(f"{dataset.root / 'meta/info.json'}: no image or video feature")
        return keys[0]


class LeRobotSource:
    """A LeRobot dataset seen as a sequence of :class:`~ceed_vla_ros.sim.recorder.Episode`."""

    def __init__(self, path: str | Path, mapping: FeatureMapping | None = None) -> None:
        self.dataset = LeRobotDataset(path)
        self.path = Path(path)
        self.mapping = mapping or FeatureMapping()
        info = self.dataset.root / "meta/info.json"
        for role, key in (("state", self.mapping.state), ("action", self.mapping.action)):
            if key not in self.dataset.features:
                raise LeRobotFormatError(
                    f"{info}: no {role} feature {key!r} (features: {', '.join(self.dataset.features)})"
                )
        self.image_key = self.mapping.image_key(self.dataset)
        state_dims = len(self.dataset.names(self.mapping.state))
        action_dims = len(self.dataset.names(self.mapping.action))
        if state_dims != action_dims:
            raise LeRobotFormatError(
                f"{info}: state {self.mapping.state!r} has {state_dims} values, action {self.mapping.action!r} "
                f"{action_dims}; joint-position actions need one per joint"
            )
        shape = self.dataset.features[self.image_key].get("shape") or [0, 0, 3]
        if (
            self.dataset.features[self.image_key].get("names", [None])[0] == "channels"
        ):  # (C, H, W) as some datasets say
            shape = list(shape[1:]) + [shape[0]]
        self.image_crop = "none" if shape[0] == shape[1] else "center_square"
        self.image_size = int(self.mapping.image_size) or (int(shape[0]) if shape[0] == shape[1] else 64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __enter__(self) -> LeRobotSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def proprio_norm(self):
        """q01/q99 of the state feature: ``meta/stats.json``'s, computed from the frames where absent."""
        from ceed_vla_ros.action_tokenizer import NormStats

        q01, q99, _ = self.dataset.quantiles(self.mapping.state)
        flat = q99 <= q01
        return NormStats(
            tuple(float(v) for v in np.where(flat, q01 - 0.5, q01)),
            tuple(float(v) for v in np.where(flat, q99 + 0.5, q99)),
            tuple(True for _ in q01),
        )

    def __getitem__(self, index: int):
        from ceed_vla_ros.image_conversion import crop_and_resize
        from ceed_vla_ros.metadata import ImageSpec
        from ceed_vla_ros.sim.recorder import Episode

        if not 0 <= index < len(self):
            raise IndexError(index)
        dataset, mapping = self.dataset, self.mapping
        frames = dataset.episode_frames(index)
        state = frames[mapping.state].reshape(len(frames[mapping.state]), -1).astype(np.float64)
        action = frames[mapping.action].reshape(len(state), -1).astype(np.float64)
        target = action if mapping.action_kind == "absolute" else state + action
        images = dataset.episode_images(index, self.image_key)
        size = self.image_size
        spec = ImageSpec(height=size, width=size, crop=self.image_crop)
        if images.shape[1:3] != (size, size):
            images = np.stack([crop_and_resize(im, spec) for im in images])
        steps = len(state)
        extra = dataset.episodes[index].extra

        def ceed(name: str, required: bool):
            key = f"ceed.{name}"
            if key in frames:
                return frames[key].reshape(steps, *CEED_FEATURES[key]).astype(np.float64)
            return np.full((steps, *CEED_FEATURES[key]), np.nan) if required else None

        instruction = (
            mapping.task[len("fixed:") :] if mapping.task.startswith("fixed:") else dataset.task_text(index, frames)
        )
        goal = extra.get("ceed/goal_position")
        return Episode(
            images=np.ascontiguousarray(images, dtype=np.uint8),
            joint_positions=state,
            joint_target=target,
            action_delta=target - state,
            target_pixel=ceed("target_pixel", True),
            tool_tip_position=ceed("tool_tip_position", True),
            task=str(extra.get("ceed/task") or "lerobot"),
            instruction=instruction,
            colour=str(extra.get("ceed/colour") or ""),
            seed=int(extra.get("ceed/seed", index) if extra.get("ceed/seed") is not None else index),
            success=bool(extra.get("ceed/success", True)),
            dt=1.0 / dataset.fps,
            image_size=size,
            joint_names=tuple(dataset.names(mapping.state)),
            goal_position=None if goal is None else np.asarray(goal, dtype=np.float64),
            cube_pixels=ceed("cube_pixels", False),
            goal_pixel=ceed("goal_pixel", False),
            tool_tip_pixel=ceed("tool_tip_pixel", False),
            executed_target=ceed("executed_target", False),
            action_noise=float(extra.get("ceed/action_noise") or 0.0),
            noise_seed=int(extra.get("ceed/noise_seed") or 0),
        )

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]


def open_dataset(path: str | Path, mapping: FeatureMapping | None = None):
    """The simulator's HDF5 file or a LeRobot dataset folder, as a sequence of episodes."""
    path = Path(path)
    if path.is_dir():
        if not is_lerobot_dataset(path):
            raise LeRobotFormatError(f"{path / 'meta/info.json'}: missing (a folder must be a LeRobot dataset)")
        return LeRobotSource(path, mapping)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such demonstration file or LeRobot dataset folder")
    from ceed_vla_ros.sim.recorder import DatasetReader

    return DatasetReader(path)


def source_proprio_norm(paths: Sequence[str | Path], mapping: FeatureMapping | None = None):
    """The proprio statistics a single LeRobot dataset brings (None for HDF5 or several sources:
    those are computed from the training frames)."""
    if len(paths) != 1 or not Path(paths[0]).is_dir():
        return None
    return LeRobotSource(paths[0], mapping).proprio_norm()


def source_crop(paths: Sequence[str | Path], mapping: FeatureMapping | None = None) -> str:
    """``center_square`` when the LeRobot sources' frames are not square (they are cropped), else ``none``."""
    crops = {LeRobotSource(p, mapping).image_crop for p in paths if Path(p).is_dir()}
    if len(crops) > 1:
        raise ValueError("LeRobot datasets with square and non-square frames cannot train one checkpoint")
    return crops.pop() if crops else "none"


def count_episodes(path: str | Path) -> int:
    """Episodes in an HDF5 file or a LeRobot dataset folder."""
    if Path(path).is_dir():
        return len(LeRobotDataset(path))
    from ceed_vla_ros.sim.recorder import DatasetReader

    with DatasetReader(path) as reader:
        return len(reader)


def add_data_arguments(parser, *, data: bool = True) -> None:
    """``--data`` (HDF5 files or LeRobot folders) and ``--lerobot-map``, as train, collect-trajectories
    and distill take them (``data=False``: only ``--lerobot-map``, where ``--data`` means more)."""
    if data:
        parser.add_argument(
            "--data", type=Path, nargs="+", required=True,
            help="HDF5 demonstration files or LeRobot dataset folders (v3.0, v2.1)",
        )
    parser.add_argument(
        "--lerobot-map",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="which LeRobot features to use: image=<feature> (default observation.image or the first camera), "
        "state=observation.state, action=action, action_kind=absolute|delta, task=task_index|fixed:<text>, "
        "image_size=64 (train only; later steps use the teacher's size)",
    )
