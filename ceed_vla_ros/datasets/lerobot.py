"""LeRobot datasets on disk, without the ``lerobot`` package: a reader (v3.0 and v2.1) and a v3.0 writer.

Only pyarrow (parquet) and PyAV (mp4) are used. The layouts, as ``lerobot`` writes them:

v3.0 (``codebase_version`` ``"v3.0"``)
    ``meta/info.json``        fps, features (``dtype``, ``shape``, ``names``; images as ``image`` or
                              ``video``), totals, ``chunks_size``, path templates
    ``meta/stats.json``       per feature ``min``/``max``/``mean``/``std``/``count`` (newer: ``q01``... ``q99``)
    ``meta/tasks.parquet``    ``task_index`` per task text (the text is the index, or a ``task`` column)
    ``meta/episodes/chunk-XXX/file-XXX.parquet``  one row per episode: ``episode_index``, ``tasks``,
                              ``length``, ``data/chunk_index``, ``data/file_index``,
                              ``dataset_from_index``/``dataset_to_index`` and per video key
                              ``videos/<key>/chunk_index``, ``file_index``, ``from_timestamp``, ``to_timestamp``
    ``data/chunk-XXX/file-XXX.parquet``           frames of one or more episodes: the features plus
                              ``timestamp``, ``frame_index``, ``episode_index``, ``index``, ``task_index``;
                              ``image`` features as structs ``{bytes, path}`` of PNG/JPEG bytes
    ``videos/<key>/chunk-XXX/file-XXX.mp4``       one or more episodes back to back; episode frame
                              ``t`` is at ``from_timestamp + timestamp[t]`` in the file

v2.1 (and v2.0)
    ``meta/episodes.jsonl`` (``episode_index``, ``tasks``, ``length``), ``meta/tasks.jsonl``,
    ``meta/stats.json`` or ``meta/episodes_stats.jsonl``; one parquet and one mp4 per episode at
    ``data_path`` / ``video_path`` (``episode_chunk`` = episode // ``chunks_size``), videos from 0 s.

The writer (:class:`LeRobotWriter`) keeps a dataset readable at every moment: files are written
under a temporary name and renamed, and ``meta/info.json`` is renamed last; it is the commit point
(a reader uses the first ``total_episodes`` rows of the episode table). An episode in progress
exists only in memory: killing the writing process loses that episode and nothing else.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_FEATURES: dict[str, dict] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
VIDEO_CODECS = {"h264": "libx264", "av1": "libsvtav1"}
STAT_QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


class LeRobotFormatError(ValueError):
    """A missing, corrupt or inconsistent LeRobot dataset; the message names the file."""


def is_lerobot_dataset(path: str | Path) -> bool:
    return (Path(path) / INFO_PATH).is_file()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _read_parquet(path: Path, columns: Sequence[str] | None = None):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing")
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise LeRobotFormatError(f"{path}: unreadable parquet ({error})") from None


def _column_array(table, name: str, path: Path) -> np.ndarray:
    """A numeric column (scalars, lists or fixed-size lists) as a (rows, ...) numpy array."""
    import pyarrow as pa

    if name not in table.column_names:
        raise LeRobotFormatError(f"{path}: no column {name!r} (columns: {', '.join(table.column_names)})")
    column = table.column(name).combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type):
        rows = len(column)
        values = column.flatten()
        while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
            values = values.flatten()
        flat = values.to_numpy(zero_copy_only=False)
        return flat.reshape(rows, -1) if rows else flat.reshape(0, 0)
    return column.to_numpy(zero_copy_only=False)


# ----------------------------------------------------------------------------------------------
# video


def decode_video_frames(path: Path, timestamps: np.ndarray, tolerance_s: float) -> np.ndarray:
    """RGB frames (len(timestamps), H, W, 3) uint8 of the mp4 at ``path`` nearest each timestamp (s)."""
    import av

    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing video file")
    wanted = np.asarray(timestamps, dtype=np.float64)
    if wanted.size == 0:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    first, last = float(wanted.min()), float(wanted.max())
    times: list[float] = []
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if first > 1.0:
                container.seek(int(max(0.0, first - 1.0) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                if t < first - tolerance_s:
                    continue
                if t > last + tolerance_s:
                    break
                times.append(t)
                frames.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as error:
        raise LeRobotFormatError(f"{path}: unreadable video ({error})") from None
    if not frames:
        raise LeRobotFormatError(f"{path}: no video frames at {first:.3f}-{last:.3f} s (video shorter than its frames)")
    decoded = np.asarray(times)
    nearest = np.abs(decoded[None, :] - wanted[:, None]).argmin(axis=1)
    off = np.abs(decoded[nearest] - wanted)
    if (off > tolerance_s).any():
        bad = int(np.flatnonzero(off > tolerance_s)[0])
        raise LeRobotFormatError(
            f"{path}: no video frame at {wanted[bad]:.4f} s (nearest {decoded[nearest[bad]]:.4f} s; "
            f"decoded {len(frames)} frames up to {decoded.max():.4f} s): video shorter than its frames"
        )
    return np.stack([frames[i] for i in nearest])


def encode_video(path: Path, frames: np.ndarray, fps: int, codec: str = "h264", crf: int = 18) -> dict:
    """Write (T, H, W, 3) uint8 RGB frames as an mp4 (``codec`` h264 or av1, yuv420p, 2-frame GOP)."""
    import av

    if codec not in VIDEO_CODECS:
        raise ValueError(f"video codec must be one of {sorted(VIDEO_CODECS)}, got {codec!r}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p video needs even frame sizes, got {width}x{height}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    options = {"crf": str(crf), "g": "2"}
    if codec == "av1":
        options["preset"] = "12"
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream(VIDEO_CODECS[codec], rate=Fraction(int(fps), 1), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, int(fps))
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return {
        "video.fps": int(fps),
        "video.codec": codec,
        "video.pix_fmt": "yuv420p",
        "video.is_depth_map": False,
        "has_audio": False,
    }


def decode_image_bytes(data: bytes, where: str) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise LeRobotFormatError(f"{where}: an image that does not decode")
    return image[:, :, ::-1].copy()


def encode_png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


# ----------------------------------------------------------------------------------------------
# statistics


def feature_stats(values: np.ndarray) -> dict[str, list]:
    """min, max, mean, std, count and q01 ... q99 over the rows of ``values`` (N, dims); NaN
    entries (an undefined privileged target) are skipped, an all-NaN dimension gets ``null``."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)

    def clean(array: np.ndarray) -> list:
        return [float(v) if np.isfinite(v) else None for v in np.ravel(array)]

    defined = np.isfinite(values).any(axis=0)
    safe = np.where(defined[None, :], values, 0.0)
    with np.errstate(all="ignore"):
        stats = {
            "min": clean(np.where(defined, np.nanmin(safe, axis=0), np.nan)),
            "max": clean(np.where(defined, np.nanmax(safe, axis=0), np.nan)),
            "mean": clean(np.where(defined, np.nanmean(safe, axis=0), np.nan)),
            "std": clean(np.where(defined, np.nanstd(safe, axis=0), np.nan)),
            "count": [int(len(values))],
        }
        for q in STAT_QUANTILES:
            stats[f"q{round(q * 100):02d}"] = clean(np.where(defined, np.nanquantile(safe, q, axis=0), np.nan))
    return stats


def image_stats(images: np.ndarray) -> dict[str, list]:
    """Per-channel min/max/mean/std in [0, 1] as (3, 1, 1) lists (LeRobot's layout)."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    out = {}
    for name, value in (
        ("min", pixels.min(0)),
        ("max", pixels.max(0)),
        ("mean", pixels.mean(0)),
        ("std", pixels.std(0)),
    ):
        out[name] = value.reshape(-1, 1, 1).tolist()
    out["count"] = [int(images.shape[0])]
    return out


def _merge_image_stats(parts: list[dict]) -> dict:
    counts = np.array([np.ravel(p["count"])[0] for p in parts], dtype=np.float64)
    means = np.array([np.asarray(p["mean"]).ravel() for p in parts])
    stds = np.array([np.asarray(p["std"]).ravel() for p in parts])
    w = counts / counts.sum()
    mean = (w[:, None] * means).sum(0)
    var = (w[:, None] * (stds**2 + (means - mean) ** 2)).sum(0)
    return {
        "min": np.min([np.ravel(p["min"]) for p in parts], axis=0).reshape(-1, 1, 1).tolist(),
        "max": np.max([np.ravel(p["max"]) for p in parts], axis=0).reshape(-1, 1, 1).tolist(),
        "mean": mean.reshape(-1, 1, 1).tolist(),
        "std": np.sqrt(var).reshape(-1, 1, 1).tolist(),
        "count": [int(counts.sum())],
    }


# ----------------------------------------------------------------------------------------------
# reader


@dataclass
class EpisodeRecord:
    """Where one episode lives."""

    index: int
    length: int
    tasks: list[str]
    data_path: Path
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # key -> (file, from_timestamp)
    extra: dict[str, Any] = field(default_factory=dict)  # other columns of the episode table


class LeRobotDataset:
    """A LeRobot v3.0 or v2.1 dataset folder: metadata, episodes, frames, images and statistics.

    ``episode_frames(i)`` returns the episode's columns as numpy arrays (frames in ``frame_index``
    order), ``episode_images(i, key)`` its images of one camera (T, H, W, 3) uint8, decoded from
    the parquet image structs or the mp4 at the frames' timestamps. Every inconsistency found
    (missing file, a frame count that disagrees with the episode table, a video shorter than its
    frames) raises one :class:`LeRobotFormatError` naming the file.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not info_path.is_file():
            raise LeRobotFormatError(f"{info_path}: missing (is {self.root} a LeRobot dataset?)")
        try:
            self.info: dict = json.loads(info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LeRobotFormatError(f"{info_path}: not valid JSON ({error})") from None
        self.version = str(self.info.get("codebase_version", ""))
        for key in ("fps", "features"):
            if key not in self.info:
                raise LeRobotFormatError(f"{info_path}: no {key!r}")
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict] = self.info["features"]
        self.chunks_size = int(self.info.get("chunks_size", DEFAULT_CHUNK_SIZE))
        if self.version.startswith("v3"):
            self.tasks, self.episodes = self._load_v3()
        elif self.version in ("v2.0", "v2.1"):
            self.tasks, self.episodes = self._load_v2()
        else:
            raise LeRobotFormatError(
                f"{info_path}: codebase_version {self.version!r}; this reader knows v2.0, v2.1, v3.0"
            )
        self.stats = self._load_stats()
        self._cache: tuple[Path, Any] | None = None

    # -- metadata ------------------------------------------------------------------------------
    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") in ("image", "video")]

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "video"]

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def names(self, key: str) -> list[str]:
        feature = self.features[key]
        shape = feature.get("shape") or [1]
        size = int(np.prod(shape))
        names = feature.get("names")
        if isinstance(names, dict):  # {"motors": [...]} in some datasets
            names = next(iter(names.values()), None)
        if isinstance(names, list) and len(names) == size and all(isinstance(n, str) for n in names):
            return list(names)
        return [f"{key}_{i}" for i in range(size)]

    def _load_v3(self) -> tuple[list[str], list[EpisodeRecord]]:
        import pyarrow as pa

        tasks_path = self.root / TASKS_PATH
        table = _read_parquet(tasks_path)
        if "task_index" not in table.column_names:
            raise LeRobotFormatError(f"{tasks_path}: no task_index column")
        text_column = (
            "task" if "task" in table.column_names else next((c for c in table.column_names if c != "task_index"), None)
        )
        if text_column is None:
            raise LeRobotFormatError(f"{tasks_path}: no task text column")
        task_index = table.column("task_index").to_pylist()
        texts = table.column(text_column).to_pylist()
        tasks = [""] * (max(task_index) + 1 if task_index else 0)
        for i, text in zip(task_index, texts):
            tasks[int(i)] = str(text)
        meta_files = sorted((self.root / "meta/episodes").glob("chunk-*/file-*.parquet"))
        if not meta_files:
            raise LeRobotFormatError(f"{self.root / 'meta/episodes'}: no episode parquet files")
        tables = [_read_parquet(p) for p in meta_files]
        episodes_table = pa.concat_tables(tables, promote_options="default")
        rows = episodes_table.to_pylist()
        total = self.info.get("total_episodes")
        rows.sort(key=lambda r: int(r["episode_index"]))
        if total is not None and len(rows) > int(total):
            rows = rows[: int(total)]  # rows past info.json's count were never committed
        if total is not None and len(rows) < int(total):
            raise LeRobotFormatError(
                f"{meta_files[0].parent.parent}: {len(rows)} episodes, {self.root / INFO_PATH} says {total}"
            )
        data_template = self.info.get("data_path", DATA_PATH.replace("{chunk_index:03d}", "{chunk_index:03d}"))
        video_template = self.info.get("video_path") or VIDEO_PATH
        episodes = []
        for expected, row in enumerate(rows):
            index = int(row["episode_index"])
            if index != expected:
                raise LeRobotFormatError(
                    f"{meta_files[0]}: episode indices are not 0..N-1 (found {index} at {expected})"
                )
            for key in ("length", "data/chunk_index", "data/file_index"):
                if key not in row:
                    raise LeRobotFormatError(f"{meta_files[0]}: no column {key!r}")
            data_path = self.root / data_template.format(
                chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
            )
            videos = {}
            for key in self.video_keys:
                video_path = self.root / video_template.format(
                    video_key=key,
                    chunk_index=int(row[f"videos/{key}/chunk_index"]),
                    file_index=int(row[f"videos/{key}/file_index"]),
                )
                videos[key] = (video_path, float(row[f"videos/{key}/from_timestamp"]))
            extra = {k: v for k, v in row.items() if k.startswith("ceed/")}
            episodes.append(
                EpisodeRecord(
                    index, int(row["length"]), [str(t) for t in row.get("tasks") or []], data_path, videos, extra
                )
            )
        return tasks, episodes

    def _load_v2(self) -> tuple[list[str], list[EpisodeRecord]]:
        def jsonl(name: str) -> list[dict]:
            path = self.root / "meta" / name
            if not path.is_file():
                raise LeRobotFormatError(f"{path}: missing")
            try:
                return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            except json.JSONDecodeError as error:
                raise LeRobotFormatError(f"{path}: not valid JSON lines ({error})") from None

        task_rows = jsonl("tasks.jsonl")
        tasks = [""] * (max((int(r["task_index"]) for r in task_rows), default=-1) + 1)
        for r in task_rows:
            tasks[int(r["task_index"])] = str(r["task"])
        rows = sorted(jsonl("episodes.jsonl"), key=lambda r: int(r["episode_index"]))
        data_template = self.info.get("data_path", "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet")
        video_template = self.info.get(
            "video_path", "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        )
        episodes = []
        for row in rows:
            index = int(row["episode_index"])
            chunk = index // self.chunks_size
            data_path = self.root / data_template.format(episode_chunk=chunk, episode_index=index)
            videos = {
                key: (self.root / video_template.format(episode_chunk=chunk, video_key=key, episode_index=index), 0.0)
                for key in self.video_keys
            }
            episodes.append(
                EpisodeRecord(index, int(row["length"]), [str(t) for t in row.get("tasks", [])], data_path, videos)
            )
        return tasks, episodes

    def _load_stats(self) -> dict[str, dict[str, np.ndarray]]:
        path = self.root / STATS_PATH
        stats: dict[str, dict[str, np.ndarray]] = {}
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise LeRobotFormatError(f"{path}: not valid JSON ({error})") from None
            for key, values in raw.items():
                if isinstance(values, dict):
                    stats[key] = {
                        k: np.asarray(v, dtype=np.float64)
                        for k, v in values.items()
                        if isinstance(v, (list, int, float))
                    }
        return stats

    def quantiles(self, key: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(q01, q99, from_file)`` of a numeric feature: ``meta/stats.json``'s, else computed
        over every frame of the dataset."""
        given = self.stats.get(key, {})
        if "q01" in given and "q99" in given:
            return given["q01"].ravel(), given["q99"].ravel(), True
        values = np.concatenate([self.episode_frames(i, columns=[key])[key] for i in range(len(self))])
        values = values.reshape(len(values), -1).astype(np.float64)
        return np.quantile(values, 0.01, axis=0), np.quantile(values, 0.99, axis=0), False

    # -- frames ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.episodes)

    def _file_table(self, path: Path, columns: Sequence[str] | None):
        if columns is None and self._cache is not None and self._cache[0] == path:
            return self._cache[1]
        table = _read_parquet(path, columns)
        if columns is None:
            self._cache = (path, table)
        return table

    def episode_frames(self, index: int, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Numeric columns of episode ``index`` (all non-image columns, or ``columns``)."""
        import pyarrow.compute as pc

        record = self.episodes[index]
        wanted = None if columns is None else sorted(set(columns) | {"episode_index", "frame_index"})
        if wanted is not None:
            missing = [c for c in wanted if c not in self.features and c not in DEFAULT_FEATURES]
            if missing:
                raise LeRobotFormatError(f"{self.root / INFO_PATH}: no feature {missing[0]!r}")
        table = self._file_table(record.data_path, wanted)
        if "episode_index" not in table.column_names:
            raise LeRobotFormatError(f"{record.data_path}: no episode_index column")
        table = table.filter(pc.equal(table.column("episode_index"), record.index))
        if table.num_rows != record.length:
            raise LeRobotFormatError(
                f"{record.data_path}: episode {record.index} has {table.num_rows} frames, "
                f"the episode index says {record.length}"
            )
        order = np.argsort(_column_array(table, "frame_index", record.data_path), kind="stable")
        table = table.take(order)
        out = {}
        for name in table.column_names:
            if self.features.get(name, {}).get("dtype") in ("image", "video"):
                continue
            if wanted is None and self.features.get(name, {}).get("dtype") == "string":
                continue
            out[name] = _column_array(table, name, record.data_path)
        return out

    def episode_images(self, index: int, key: str) -> np.ndarray:
        record = self.episodes[index]
        dtype = self.features.get(key, {}).get("dtype")
        if dtype == "image":
            import pyarrow.compute as pc

            table = self._file_table(record.data_path, None)
            if key not in table.column_names:
                raise LeRobotFormatError(f"{record.data_path}: no column {key!r}")
            table = table.filter(pc.equal(table.column("episode_index"), record.index))
            order = np.argsort(_column_array(table, "frame_index", record.data_path), kind="stable")
            cells = table.column(key).take(order).to_pylist()
            images = []
            for cell in cells:
                data = cell.get("bytes") if isinstance(cell, dict) else cell
                if data is None and isinstance(cell, dict) and cell.get("path"):
                    image_path = self.root / cell["path"]
                    if not image_path.is_file():
                        raise LeRobotFormatError(f"{image_path}: missing image file")
                    data = image_path.read_bytes()
                if data is None:
                    raise LeRobotFormatError(f"{record.data_path}: episode {record.index} has an empty {key} cell")
                images.append(decode_image_bytes(data, str(record.data_path)))
            if len(images) != record.length:
                raise LeRobotFormatError(
                    f"{record.data_path}: episode {record.index} has {len(images)} {key} images, "
                    f"the episode index says {record.length}"
                )
            return np.stack(images)
        if dtype == "video":
            timestamps = self.episode_frames(index, columns=["timestamp"])["timestamp"].astype(np.float64)
            path, start = record.videos[key]
            return decode_video_frames(path, start + timestamps.ravel(), tolerance_s=0.4 / self.fps)
        raise LeRobotFormatError(f"{self.root / INFO_PATH}: feature {key!r} is not an image or video")

    def task_text(self, index: int, frames: dict[str, np.ndarray] | None = None) -> str:
        """The episode's instruction: its first frame's ``task_index``, else the episode table's first task."""
        if frames is not None and "task_index" in frames and len(frames["task_index"]):
            task = int(np.ravel(frames["task_index"])[0])
            if 0 <= task < len(self.tasks):
                return self.tasks[task]
        record = self.episodes[index]
        if record.tasks:
            return record.tasks[0]
        raise LeRobotFormatError(f"{self.root}: episode {index} has no task")


# ----------------------------------------------------------------------------------------------
# writer


def _arrow_type(dtype: str, size: int):
    import pyarrow as pa

    scalar = {
        "float32": pa.float32(),
        "float64": pa.float64(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "bool": pa.bool_(),
        "uint8": pa.uint8(),
    }[dtype]
    return scalar if size == 1 else pa.list_(scalar, size)


def _hf_feature(feature: dict) -> dict:
    dtype = feature["dtype"]
    if dtype in ("image",):
        return {"_type": "Image"}
    size = int(np.prod(feature.get("shape") or [1]))
    value = {"dtype": dtype, "_type": "Value"}
    return value if size == 1 else {"feature": value, "length": size, "_type": "Sequence"}


class LeRobotWriter:
    """Write (or append to) a LeRobot v3.0 dataset, episode by episode.

    ``features``: name -> ``{"dtype", "shape", "names"}`` for every feature but LeRobot's five
    default ones; images have ``dtype`` ``"image"`` (PNG in the parquet: lossless, the default
    of the exporter) or ``"video"`` (mp4, ``video_codec`` h264 or av1: lossy, small).
    ``episodes_per_file`` episodes share a data file (and one mp4 per camera); the files and the
    metadata are written when a file is full and at :meth:`close`. With ``1`` (the recorder's
    setting) every :meth:`add_episode` leaves a complete, readable dataset on disk.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        fps: int,
        features: dict[str, dict],
        robot_type: str | None = None,
        video_codec: str = "h264",
        episodes_per_file: int = 1,
        append: bool = False,
    ) -> None:
        self.root = Path(root)
        self.fps = int(fps)
        self.video_codec = video_codec
        self.episodes_per_file = max(1, int(episodes_per_file))
        self.features = {**{k: dict(v) for k, v in features.items()}, **DEFAULT_FEATURES}
        for key, feature in features.items():
            if key in DEFAULT_FEATURES:
                raise ValueError(f"feature {key!r} is one of LeRobot's default features")
            if feature.get("dtype") not in ("image", "video", "float32", "float64", "int64", "int32", "bool"):
                raise ValueError(f"feature {key!r}: unsupported dtype {feature.get('dtype')!r}")
        self.robot_type = robot_type
        self.tasks: list[str] = []
        self.episode_rows: list[dict] = []
        self.numeric: dict[str, list[np.ndarray]] = {
            k: []
            for k, f in self.features.items()
            if f["dtype"] not in ("image", "video") and k not in DEFAULT_FEATURES
        }
        self._image_stats: dict[str, list[dict]] = {k: [] for k in self.image_keys}
        self._pending: list[tuple[dict[str, np.ndarray], int, dict]] = []
        self.total_frames = 0
        self._next_file = 0
        if (self.root / INFO_PATH).exists():
            if not append:
                raise FileExistsError(f"{self.root} already holds a dataset (append to it, or choose another folder)")
            self._load_existing()
        else:
            self.root.mkdir(parents=True, exist_ok=True)

    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] in ("image", "video")]

    @property
    def num_episodes(self) -> int:
        return len(self.episode_rows) + len(self._pending)

    def _load_existing(self) -> None:
        existing = LeRobotDataset(self.root)
        if not existing.version.startswith("v3"):
            raise ValueError(f"{self.root}: can only append to v3.0 datasets, found {existing.version}")
        ours = {k: (f["dtype"], list(f.get("shape") or [])) for k, f in self.features.items()}
        theirs = {k: (f["dtype"], list(f.get("shape") or [])) for k, f in existing.features.items()}
        if ours != theirs or int(existing.fps) != self.fps:
            raise ValueError(f"{self.root}: its features or fps differ from the ones to record")
        self.tasks = list(existing.tasks)
        import pyarrow as pa

        meta_files = sorted((self.root / "meta/episodes").glob("chunk-*/file-*.parquet"))
        rows = pa.concat_tables([_read_parquet(p) for p in meta_files], promote_options="default").to_pylist()
        rows.sort(key=lambda r: int(r["episode_index"]))
        self.episode_rows = rows[: len(existing)]
        for i in range(len(existing)):
            frames = existing.episode_frames(i, columns=list(self.numeric))
            for key in self.numeric:
                self.numeric[key].append(frames[key].reshape(len(frames[key]), -1))
        for key in self.image_keys:
            for row in self.episode_rows:
                part = {s: row.get(f"stats/{key}/{s}") for s in ("min", "max", "mean", "std", "count")}
                if all(v is not None for v in part.values()):
                    self._image_stats[key].append(part)
        self.total_frames = existing.num_frames
        self._next_file = 1 + max(
            (int(r["data/chunk_index"]) * DEFAULT_CHUNK_SIZE + int(r["data/file_index"]) for r in self.episode_rows),
            default=-1,
        )

    def _task_index(self, task: str) -> int:
        if task not in self.tasks:
            self.tasks.append(task)
        return self.tasks.index(task)

    def add_episode(self, frames: dict[str, np.ndarray], task: str, extra: dict[str, Any] | None = None) -> int:
        """Queue one episode (``frames``: feature -> (T, ...) array; every feature required); return its index."""
        missing = [k for k in self.features if k not in DEFAULT_FEATURES and k not in frames]
        if missing:
            raise ValueError(f"episode lacks features {missing}")
        lengths = {k: len(frames[k]) for k in self.features if k in frames}
        length = next(iter(lengths.values()))
        if length < 1 or any(v != length for v in lengths.values()):
            raise ValueError(f"features of an episode need the same number (>= 1) of frames, got {lengths}")
        for key in self.image_keys:
            shape = list(self.features[key]["shape"])
            if list(frames[key].shape[1:]) != shape or frames[key].dtype != np.uint8:
                raise ValueError(
                    f"{key}: expected uint8 frames of shape {shape}, got {frames[key].dtype} {frames[key].shape[1:]}"
                )
        index = self.num_episodes
        self._pending.append((frames, self._task_index(task), dict(extra or {})))
        if len(self._pending) >= self.episodes_per_file:
            self.flush()
        return index

    def flush(self) -> None:
        """Write the queued episodes as one data file (+ one mp4 per video key) and commit the metadata."""
        import pyarrow as pa

        if not self._pending:
            return
        first_episode = len(self.episode_rows)
        chunk, file_ = divmod(self._next_file, DEFAULT_CHUNK_SIZE)  # one data file (and mp4 per camera) per flush
        self._next_file += 1
        columns: dict[str, list] = {k: [] for k in self.features}
        rows = []
        video_offsets = {k: 0 for k in self.image_keys if self.features[k]["dtype"] == "video"}
        video_frames: dict[str, list[np.ndarray]] = {k: [] for k in video_offsets}
        for number, (frames, task_index, extra) in enumerate(self._pending):
            episode = first_episode + number
            length = len(next(iter(frames.values())))
            start = self.total_frames
            for key, feature in self.features.items():
                if key == "timestamp":
                    values = frames.get("timestamp", np.arange(length) / self.fps)
                    columns[key].append(np.asarray(values, dtype=np.float32).ravel())
                elif key == "frame_index":
                    columns[key].append(np.arange(length, dtype=np.int64))
                elif key == "episode_index":
                    columns[key].append(np.full(length, episode, dtype=np.int64))
                elif key == "index":
                    columns[key].append(np.arange(start, start + length, dtype=np.int64))
                elif key == "task_index":
                    columns[key].append(np.full(length, task_index, dtype=np.int64))
                elif feature["dtype"] == "image":
                    columns[key].append([{"bytes": encode_png(im), "path": None} for im in frames[key]])
                elif feature["dtype"] == "video":
                    video_frames[key].append(frames[key])
                else:
                    columns[key].append(np.asarray(frames[key], dtype=feature["dtype"]).reshape(length, -1))
            row = {
                "episode_index": episode,
                "tasks": [self.tasks[task_index]],
                "length": length,
                "data/chunk_index": chunk,
                "data/file_index": file_,
                "dataset_from_index": start,
                "dataset_to_index": start + length,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
            }
            for key in video_offsets:
                row[f"videos/{key}/chunk_index"] = chunk
                row[f"videos/{key}/file_index"] = file_
                row[f"videos/{key}/from_timestamp"] = video_offsets[key] / self.fps
                row[f"videos/{key}/to_timestamp"] = (video_offsets[key] + length) / self.fps
                video_offsets[key] += length
            for key in self.numeric:
                values = np.asarray(frames[key], dtype=np.float64).reshape(length, -1)
                self.numeric[key].append(values)
                for stat, value in feature_stats(values).items():
                    row[f"stats/{key}/{stat}"] = np.ravel(value).tolist()
            for key in self.image_keys:
                stats = image_stats(frames[key])
                self._image_stats[key].append(stats)
                for stat, value in stats.items():
                    row[f"stats/{key}/{stat}"] = np.ravel(value).tolist()
            row.update({f"ceed/{k}": v for k, v in extra.items()})
            rows.append(row)
            self.total_frames += length
        # data file, then videos, then the metadata; info.json last
        arrays, fields = [], []
        for key, feature in self.features.items():
            if feature["dtype"] == "video":
                continue
            size = int(np.prod(feature.get("shape") or [1]))
            if feature["dtype"] == "image":
                kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
                array = pa.array([cell for part in columns[key] for cell in part], type=kind)
            else:
                values = np.concatenate(columns[key])
                kind = _arrow_type(feature["dtype"], size)
                if size == 1:
                    array = pa.array(values.ravel(), type=kind)
                else:
                    array = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), type=kind.value_type), size)
            arrays.append(array)
            fields.append(pa.field(key, kind))
        hf = {"info": {"features": {k: _hf_feature(f) for k, f in self.features.items() if f["dtype"] != "video"}}}
        schema = pa.schema(fields, metadata={"huggingface": json.dumps(hf)})
        table = pa.Table.from_arrays(arrays, schema=schema)
        _atomic_write_bytes(self.root / DATA_PATH.format(chunk_index=chunk, file_index=file_), _parquet_bytes(table))
        for key, parts in video_frames.items():
            info = encode_video(
                self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file_),
                np.concatenate(parts),
                self.fps,
                self.video_codec,
            )
            self.features[key]["info"] = info
        self._pending = []
        self.episode_rows.extend(rows)
        self._write_metadata()

    def _write_metadata(self) -> None:
        import pyarrow as pa

        tasks = pa.table(
            {"task_index": pa.array(range(len(self.tasks)), pa.int64()), "task": pa.array(self.tasks, pa.string())}
        )
        _atomic_write_bytes(self.root / TASKS_PATH, _parquet_bytes(tasks))
        episodes = pa.Table.from_pylist(self.episode_rows)
        _atomic_write_bytes(self.root / EPISODES_PATH.format(chunk_index=0, file_index=0), _parquet_bytes(episodes))
        stats: dict[str, dict] = {}
        for key, parts in self.numeric.items():
            if parts:
                stats[key] = feature_stats(np.concatenate(parts))
        for key, parts in self._image_stats.items():
            if parts:
                stats[key] = _merge_image_stats(parts)
        frame_index = np.arange(self.total_frames)
        stats["frame_index"] = feature_stats(frame_index[:, None]) if self.total_frames else {}
        _atomic_write_bytes(self.root / STATS_PATH, json.dumps(stats, indent=1, allow_nan=False).encode())
        has_video = any(f["dtype"] == "video" for f in self.features.values())
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self.episode_rows),
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": DEFAULT_CHUNK_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episode_rows)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if has_video else None,
            "features": {k: {**f, "shape": list(f.get("shape") or [1])} for k, f in self.features.items()},
        }
        _atomic_write_bytes(self.root / INFO_PATH, json.dumps(info, indent=2).encode())

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()


def iter_frames(dataset: LeRobotDataset) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    for i in range(len(dataset)):
        yield i, dataset.episode_frames(i)
