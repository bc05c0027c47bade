"""``ceed-vla collect-trajectories``: Jacobi trajectories of a TEACHER over demonstration samples.

For every selected sample (image, proprio, instruction) of the demonstration files the teacher
decodes one action chunk with Jacobi decoding and every iterate is kept:
``J = {Y^0, Y^1, ..., Y*}`` (CEED-VLA Algorithm 2). These trajectories are the training data of
``ceed-vla distill`` (:mod:`ceed_vla_ros.training.train_student`).

Decoding is exactly :func:`ceed_vla_ros.decoding.decode` in ``jacobi`` mode (argmax restricted
to the action tokens, position 0 from the prefill, stop at the fixed point, at most ``n``
iterations), but BATCHED (:func:`ceed_vla_ros.decoding.jacobi_trajectories_batched`): prompts are left-padded, the
batch is prefilled once into a KV cache, each iteration runs every still-active block in one
forward on top of the cache and crops the cache back to the prompt; samples that reached their
fixed point leave the batch (their rows are dropped from the cache). For every sample the
trajectory equals the batch-1 ``decode(..., mode="jacobi", record_trajectory=True)`` trajectory
from the same initial block (``test/training/test_trajectories.py``).

Initial block Y^0: the paper's ``random_prompt_tokens`` -- ``n`` ids drawn uniformly from the
sample's own (unpadded) prompt ids, with a per-sample generator seeded by
``seed * 1_000_003 + sample number`` (independent of the batch size); position 0 is then the
teacher's greedy first token.

File layout (HDF5, format ``ceed_vla_ros.distill.trajectories`` version 1 -- the name predates the
move to training/ -- no pickles)::

    /  attributes
        format, format_version
        teacher_name, teacher_checkpoint_id     # checkpoint the trajectories come from
        data_files          JSON list of the demonstration files (as given)
        data_episodes       JSON list: episodes in each file at collection time
        block_len (n), chunk_len (k), action_dims (d), vocab_size, n_bins, action_token_start
        init = "random_prompt_tokens", seed, stride, max_samples (-1 = all), holdout_last
        max_iterations      Jacobi cap (n)
        num_samples (N), num_states (S), collection_seconds, command, created, package_version
    /samples/              one row per sample
        file_index   (N,)   int32  index into data_files
        episode      (N,)   int32  episode index inside that file (DatasetReader order)
        step         (N,)   int32  control step inside the episode (image / proprio row)
        state_offset (N,)   int64  first row of this sample's states in /states
        num_states   (N,)   int32  len(J) = Jacobi iterations + 1
        converged    (N,)   bool   the last state is the exact fixed point (always, cap = n)
        fixed_point  (N, n) int32  Y* (teacher's Jacobi output == its greedy AR output)
        ground_truth (N, n) int32  ground-truth action tokens (teacher's action_norm, n_bins)
        teacher_actions      (N, k, d) float32  Y* as normalised actions (bin centres, [-1, 1])
        ground_truth_actions (N, k, d) float32  ground-truth chunk, normalised + clipped to [-1, 1]
        l1           (N,)   float32 mean |teacher_actions - ground_truth_actions| (normalised units)
    /states        (S, n)  int32  all states, sample i = rows [state_offset[i], +num_states[i]):
                                  Y^0 (initial block, position 0 set), Y^1, ..., Y* (last row)

Images are NOT duplicated: ``(file_index, episode, step)`` point into the demonstration files.
Ground-truth chunks follow :mod:`ceed_vla_ros.training.dataset` (chunk-relative joint deltas).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from ceed_vla_ros import __version__
from ceed_vla_ros.checkpoint import Checkpoint, load_checkpoint_arg
from ceed_vla_ros.datasets import add_data_arguments
from ceed_vla_ros.decoding import TokenRange, init_random_prompt_tokens, jacobi_trajectories_batched
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument
from ceed_vla_ros.precision import add_precision_arguments, precision_from_args
from ceed_vla_ros.training.dataset import TeacherData, TrainingTensors, build_teacher_data, tokenize_teacher_data

FORMAT_NAME = "ceed_vla_ros.distill.trajectories"  # the file format's name (kept: existing files carry it)
FORMAT_VERSION = 1
SEED_STRIDE = 1_000_003


# --------------------------------------------------------------------------------------------
# Demonstration samples referenced by (file, episode, step)
# --------------------------------------------------------------------------------------------


@dataclass
class SampleSet:
    """Tokenised demonstration samples plus where each row comes from."""

    tensors: TrainingTensors
    ground_truth_actions: torch.Tensor  # (N, k, d) float32, normalised, clipped to [-1, 1]
    file_index: np.ndarray  # (N,) int64
    episode: np.ndarray  # (N,) int64 (inside its file)
    step: np.ndarray  # (N,) int64
    prompt_lengths: torch.Tensor  # (P,) unpadded prompt length of each instruction
    data_episodes: list[int]  # episodes per file
    checkpoint: Checkpoint  # whose backend turns images + proprio into model inputs

    def __len__(self) -> int:
        return len(self.tensors)

    def prompt(self, row: int) -> torch.Tensor:
        """Unpadded prompt ids (1, L_i) of sample ``row`` (what the batch-1 policy feeds)."""
        instr = int(self.tensors.instruction_index[row])
        length = int(self.prompt_lengths[instr])
        return self.tensors.prompt_ids[instr, -length:].reshape(1, -1)

    def model_batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` (left-padded prompts, leading all-pad columns
        trimmed) and the model inputs of ``rows`` (the backend's, e.g. ``pixel_values`` and
        ``proprio``), on CPU."""
        instr = self.tensors.instruction_index[rows]
        mask = self.tensors.prompt_mask[instr]
        width = int(self.prompt_lengths[instr].max())
        proprio = self.tensors.proprio[rows] if self.tensors.proprio.shape[1] else None
        inputs = self.checkpoint.model_inputs(self.tensors.images[rows], proprio)
        return {
            "input_ids": self.tensors.prompt_ids[instr][:, -width:],
            "attention_mask": mask[:, -width:],
            **{key: value.cpu() for key, value in inputs.items()},
        }


def _subset(data: TeacherData, rows: np.ndarray) -> TeacherData:
    """Rows ``rows`` of every per-sample array of ``data`` (other fields unchanged)."""
    count = len(data)
    values = {}
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        is_per_row = isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == count
        values[f.name] = value[rows] if is_per_row else value
    return TeacherData(**values)


def select_rows(num_rows: int, stride: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Every ``stride``-th row, then (if more than ``max_samples``) a seeded random subset, sorted."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    rows = np.arange(0, num_rows, stride)
    if max_samples is not None and max_samples >= 0 and rows.size > max_samples:
        pick = np.random.default_rng([seed, 7]).choice(rows.size, size=max_samples, replace=False)
        rows = rows[np.sort(pick)]
    return rows


def load_samples(
    paths: Sequence[str | Path],
    checkpoint: Checkpoint,
    *,
    stride: int = 1,
    max_samples: int | None = None,
    seed: int = 0,
    holdout_last: int = 0,
    refs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    lerobot_map: Sequence[str] = (),
) -> SampleSet:
    """Load, select and tokenise demonstration samples with ``checkpoint``'s tokenizers.

    Without ``refs``: all steps of all episodes (minus the last ``holdout_last`` episodes of each
    file, the teacher trainer's validation split), subsampled by :func:`select_rows`. With
    ``refs = (file_index, episode, step)``: exactly those samples, in that order.
    """
    from ceed_vla_ros.datasets import FeatureMapping, open_dataset

    metadata = checkpoint.metadata
    # LeRobot frames are resized to the checkpoint's image size (and cropped as it says)
    mapping = dataclasses.replace(FeatureMapping.parse(lerobot_map), image_size=metadata.image.height)
    episodes, origin, counts = [], [], []
    wanted: dict[int, set[int]] | None = None
    if refs is not None:
        wanted = {}
        for f, e in zip(refs[0].tolist(), refs[1].tolist()):
            wanted.setdefault(int(f), set()).add(int(e))
    for f, path in enumerate(paths):
        with open_dataset(path, mapping) as reader:
            counts.append(len(reader))
            last = len(reader) - (holdout_last if refs is None else 0)
            for e in range(max(0, last)):
                if wanted is not None and e not in wanted.get(f, ()):
                    continue
                episodes.append(reader[e])
                origin.append((f, e))
    if not episodes:
        raise ValueError(f"no episodes selected from {list(map(str, paths))}")
    data = build_teacher_data(episodes, metadata.chunk_len)  # proprio: normalised with the checkpoint's statistics
    origin_arr = np.asarray(origin, dtype=np.int64)
    file_index = origin_arr[data.episode_index, 0]
    episode = origin_arr[data.episode_index, 1]
    starts = np.flatnonzero(np.r_[True, np.diff(data.episode_index) != 0])
    lengths = np.diff(np.r_[starts, len(data)])
    step = np.arange(len(data)) - np.repeat(starts, lengths)
    if refs is None:
        rows = select_rows(len(data), stride, max_samples, seed)
    else:
        lookup = {(int(f), int(e), int(s)): i for i, (f, e, s) in enumerate(zip(file_index, episode, step))}
        try:
            rows = np.asarray([lookup[(int(f), int(e), int(s))] for f, e, s in zip(*refs)], dtype=np.int64)
        except KeyError as error:
            raise ValueError(
                f"sample (file, episode, step) {error.args[0]} is not in the demonstration files"
            ) from None
    data = _subset(data, rows)
    prompts = [checkpoint.prompt_ids(text) for text in data.instructions]
    tensors = tokenize_teacher_data(
        data, prompts, checkpoint.action_tokenizer, metadata.proprio_norm, checkpoint.pad_token_id
    )
    truth = np.clip(metadata.action_norm.normalize(data.actions), -1.0, 1.0).astype(np.float32)
    return SampleSet(
        tensors=tensors,
        ground_truth_actions=torch.from_numpy(truth),
        file_index=file_index[rows],
        episode=episode[rows],
        step=step[rows],
        prompt_lengths=torch.tensor([len(p) for p in prompts]),
        data_episodes=counts,
        checkpoint=checkpoint,
    )


# --------------------------------------------------------------------------------------------
# Trajectory file
# --------------------------------------------------------------------------------------------


@dataclass
class TrajectorySet:
    """In-memory trajectory file (see the module docstring for the field meanings)."""

    attrs: dict
    file_index: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    state_offset: np.ndarray
    num_states: np.ndarray
    converged: np.ndarray
    fixed_point: np.ndarray
    ground_truth: np.ndarray
    teacher_actions: np.ndarray
    ground_truth_actions: np.ndarray
    l1: np.ndarray
    states: np.ndarray

    SAMPLE_FIELDS = (
        "file_index",
        "episode",
        "step",
        "state_offset",
        "num_states",
        "converged",
        "fixed_point",
        "ground_truth",
        "teacher_actions",
        "ground_truth_actions",
        "l1",
    )

    def __len__(self) -> int:
        return int(self.num_states.shape[0])

    def trajectory(self, i: int) -> np.ndarray:
        """(T_i, n) states Y^0 .. Y* of sample ``i``."""
        start = int(self.state_offset[i])
        return self.states[start : start + int(self.num_states[i])]

    @property
    def data_files(self) -> list[str]:
        return list(json.loads(self.attrs["data_files"]))

    def refs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.file_index.astype(np.int64), self.episode.astype(np.int64), self.step.astype(np.int64)


_DTYPES = {
    "file_index": np.int32,
    "episode": np.int32,
    "step": np.int32,
    "state_offset": np.int64,
    "num_states": np.int32,
    "converged": np.bool_,
    "fixed_point": np.int32,
    "ground_truth": np.int32,
    "teacher_actions": np.float32,
    "ground_truth_actions": np.float32,
    "l1": np.float32,
}


def write_trajectories(path: str | Path, trajectories: TrajectorySet) -> None:
    """Write atomically (``<path>.tmp`` then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        for key, value in trajectories.attrs.items():
            f.attrs[key] = value
        group = f.create_group("samples")
        for name in TrajectorySet.SAMPLE_FIELDS:
            group.create_dataset(name, data=np.asarray(getattr(trajectories, name), dtype=_DTYPES[name]))
        f.create_dataset("states", data=np.asarray(trajectories.states, dtype=np.int32), compression="gzip")
    os.replace(tmp, path)


def read_trajectories(path: str | Path) -> TrajectorySet:
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a {FORMAT_NAME} file")
        if int(f.attrs["format_version"]) != FORMAT_VERSION:
            raise ValueError(f"{path}: format version {f.attrs['format_version']}, expected {FORMAT_VERSION}")
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        fields = {name: f["samples"][name][()] for name in TrajectorySet.SAMPLE_FIELDS}
        states = f["states"][()]
    return TrajectorySet(attrs=attrs, states=states, **fields)


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


def initial_block(samples: SampleSet, row: int, block_len: int, seed: int, sample_number: int) -> torch.Tensor:
    """Seeded ``random_prompt_tokens`` Y^0 of one sample (independent of batching)."""
    generator = torch.Generator().manual_seed(seed * SEED_STRIDE + sample_number)
    return init_random_prompt_tokens(samples.prompt(row), block_len, generator)


def collect(
    checkpoint: Checkpoint,
    samples: SampleSet,
    *,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    rows: np.ndarray | None = None,
) -> TrajectorySet:
    """Run the teacher's batched Jacobi decoding over ``samples`` (or only their ``rows``, in that
    order: one process's shard); return the trajectories. A sample's initial block depends on its
    row only, so shards collected apart and merged (:func:`merge_trajectories`) equal one run."""
    from tqdm import tqdm

    metadata = checkpoint.metadata
    action_tokenizer = checkpoint.action_tokenizer
    allowed = TokenRange(*action_tokenizer.token_range)
    n = metadata.block_len
    model = checkpoint.model.eval()
    device = next(model.parameters()).device
    selected = np.arange(len(samples)) if rows is None else np.asarray(rows, dtype=np.int64)
    if selected.size == 0:
        raise ValueError("no samples to collect")
    all_states, num_states, converged, fixed = [], [], [], []
    start = time.perf_counter()
    total_forwards = 0
    with tqdm(total=selected.size, unit="sample", desc="collect", disable=not progress, mininterval=2.0) as bar:
        for begin in range(0, selected.size, batch_size):
            rows = torch.from_numpy(selected[begin : begin + batch_size])
            batch = {key: value.to(device) for key, value in samples.model_batch(rows).items()}
            initial = torch.stack([initial_block(samples, int(r), n, seed, int(r)) for r in rows]).to(device)
            result = jacobi_trajectories_batched(
                model, batch.pop("input_ids"), batch.pop("attention_mask"), batch, initial, allowed=allowed
            )
            total_forwards += result.forward_passes
            for states, ok in zip(result.states, result.converged.tolist()):
                all_states.append(states.numpy())
                num_states.append(states.shape[0])
                converged.append(ok)
                fixed.append(states[-1].numpy())
            bar.update(len(rows))
            bar.set_postfix(iters=f"{np.mean(num_states) - 1:.2f}")
    seconds = time.perf_counter() - start
    fixed_point = np.stack(fixed).astype(np.int64)
    teacher_actions = action_tokenizer.normalized_actions(fixed_point)
    truth_actions = samples.ground_truth_actions.numpy()[selected]
    num_states_arr = np.asarray(num_states, dtype=np.int64)
    attrs = {
        "teacher_name": metadata.name,
        "teacher_checkpoint_id": metadata.checkpoint_id,
        "block_len": n,
        "chunk_len": metadata.chunk_len,
        "action_dims": metadata.action_dims,
        "vocab_size": int(metadata.vocab_size),
        "n_bins": metadata.n_bins,
        "action_token_start": allowed.start,
        "init": "random_prompt_tokens",
        "seed": seed,
        "max_iterations": n,
        "num_samples": int(selected.size),
        "num_states": int(num_states_arr.sum()),
        "collection_seconds": float(seconds),
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "package_version": __version__,
    }
    return TrajectorySet(
        attrs=attrs,
        file_index=samples.file_index[selected],
        episode=samples.episode[selected],
        step=samples.step[selected],
        state_offset=np.r_[0, np.cumsum(num_states_arr)[:-1]],
        num_states=num_states_arr,
        converged=np.asarray(converged),
        fixed_point=fixed_point,
        ground_truth=samples.tensors.action_tokens.numpy()[selected],
        teacher_actions=teacher_actions.astype(np.float32),
        ground_truth_actions=truth_actions,
        l1=np.abs(teacher_actions - truth_actions).reshape(selected.size, -1).mean(axis=1).astype(np.float32),
        states=np.concatenate(all_states),
    )


def shard_rows(num_samples: int, num_shards: int, index: int) -> np.ndarray:
    """The contiguous rows of shard ``index`` of ``num_shards`` (sizes differ by at most one)."""
    return np.array_split(np.arange(num_samples), num_shards)[index]


def merge_trajectories(parts: Sequence[TrajectorySet]) -> TrajectorySet:
    """One trajectory set from shards in order (state offsets renumbered); the attributes are the
    first shard's with the counts summed and ``collection_seconds`` the slowest shard's."""
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("no trajectories to merge")
    fields = {name: np.concatenate([getattr(p, name) for p in parts]) for name in TrajectorySet.SAMPLE_FIELDS}
    fields["state_offset"] = np.r_[0, np.cumsum(fields["num_states"].astype(np.int64))[:-1]]
    attrs = dict(parts[0].attrs)
    attrs["num_samples"] = int(sum(len(p) for p in parts))
    attrs["num_states"] = int(fields["num_states"].sum())
    attrs["collection_seconds"] = float(max(float(p.attrs["collection_seconds"]) for p in parts))
    attrs["processes"] = len(parts)
    return TrajectorySet(attrs=attrs, states=np.concatenate([p.states for p in parts]), **fields)


def summarize(trajectories: TrajectorySet) -> dict[str, float]:
    iters = trajectories.num_states - 1
    exact = (trajectories.fixed_point == trajectories.ground_truth).mean()
    return {
        "samples": len(trajectories),
        "mean_iterations": float(iters.mean()),
        "max_iterations": int(iters.max()),
        "converged": float(trajectories.converged.mean()),
        "teacher_token_accuracy": float(exact),
        "l1_mean": float(trajectories.l1.mean()),
        "l1_median": float(np.median(trajectories.l1)),
        "l1_p90": float(np.quantile(trajectories.l1, 0.9)),
        "seconds": float(trajectories.attrs["collection_seconds"]),
    }


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="teacher checkpoint name in --model-dir (or a folder path)")
    add_model_dir_argument(parser, "folder of the teacher checkpoint")
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output trajectory file (.h5)")
    parser.add_argument("--stride", type=int, default=1, help="keep every stride-th sample (default 1: all)")
    parser.add_argument("--max-samples", type=int, default=None, help="then at most this many (seeded random subset)")
    parser.add_argument(
        "--holdout-last",
        type=int,
        default=0,
        help="skip the last N episodes of each file (e.g. the teacher's validation episodes)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="samples decoded together")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initial blocks and the subset")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    add_precision_arguments(parser, default_dtype="float32")
    parser.add_argument("--no-progress", action="store_true")


def _process_state():
    """accelerate's ``PartialState``: the process group of ``torchrun`` / ``accelerate launch`` (gloo
    without CUDA), or a single process."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def cli_main(args: argparse.Namespace) -> int:
    """Collect (each of N processes one contiguous shard of the samples; the main process gathers,
    merges in order and writes the one output file)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    command = getattr(args, "command", None) or getattr(args, "command_line", "ceed-vla collect-trajectories")
    state = _process_state()
    say = state.print
    precision = precision_from_args(args)
    checkpoint = load_checkpoint_arg(
        model_dir_argument(args.model_dir), args.teacher, device=precision.device, dtype=precision.dtype
    )
    say(f"teacher {checkpoint.metadata.checkpoint_id} on {precision.label}")
    t0 = time.perf_counter()
    samples = load_samples(
        args.data,
        checkpoint,
        stride=args.stride,
        max_samples=args.max_samples,
        seed=args.seed,
        holdout_last=args.holdout_last,
        lerobot_map=args.lerobot_map,
    )
    say(f"loaded {len(samples)} samples from {len(args.data)} file(s) in {time.perf_counter() - t0:.1f} s")
    rows = shard_rows(len(samples), state.num_processes, state.process_index)
    if state.num_processes > 1:
        say(f"{state.num_processes} processes: {rows.size} samples each (process 0), merged by the main process")
    shard = collect(
        checkpoint,
        samples,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress and state.is_main_process,
        rows=rows,
    )
    if state.num_processes > 1:
        import torch.distributed as dist

        parts = [None] * state.num_processes if state.is_main_process else None
        dist.gather_object(shard, parts, dst=0)
        if not state.is_main_process:
            state.wait_for_everyone()
            return 0
        trajectories = merge_trajectories(parts)
    else:
        trajectories = shard
    trajectories.attrs |= {
        "data_files": json.dumps([str(p) for p in args.data]),
        "data_episodes": json.dumps(samples.data_episodes),
        "stride": args.stride,
        "max_samples": -1 if args.max_samples is None else args.max_samples,
        "holdout_last": args.holdout_last,
        "lerobot_map": json.dumps(list(args.lerobot_map)),
        "command": command,
    }
    write_trajectories(args.out, trajectories)
    summary = summarize(trajectories)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): " + json.dumps(summary), flush=True)
    if state.num_processes > 1:
        state.wait_for_everyone()
    return 0
