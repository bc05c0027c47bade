"""The parts every training command shares (``ceed-vla train``, ``ceed-vla distill``).

* :class:`TrainingRun`: the run folder, the ``accelerate`` set-up, the wall clock and
  ``--time-limit-min``, ``--resume``, the JSONL log and the saved run state;
* :func:`process_slice`: which part of every global batch this process trains on;
* :func:`lr_factor`: linear warmup, then cosine decay;
* :func:`batch_indices`: the stateless, seeded batch order (hence exactly resumable);
* :func:`export`: a loadable checkpoint from the model being trained.

Run folder layout: ``<run-dir>/state/`` holds ``accelerator.save_state`` (model weights as
safetensors; optimizer, scheduler and RNG as torch files: run folders only, never a shipped
checkpoint); ``<run-dir>/trainer_state.json`` holds at least ``step`` and ``train_seconds``;
``<run-dir>/log.jsonl`` one JSON record per logged step; ``<run-dir>/config.yaml`` the run's
configuration (:mod:`ceed_vla_ros.training.config`).

Several processes (``torchrun --nproc_per_node N -m ceed_vla_ros.tools.cli train ...`` or
``accelerate launch --num_processes N ...``): the ``Accelerator`` joins the process group the
launcher describes (NCCL on GPUs; gloo on CPU, where it is created with ``cpu=True``: without it
accelerate 1.15 sees no distributed CPU run and every process trains alone). Every process draws
the same global batch (a function of seed and step), trains on its ``1/N`` slice and DDP averages
the gradients, so N processes compute the step of one process on the whole batch; random draws
(augmentation, Jacobi states) are made for the whole global batch and sliced, so they do not depend
on N either, and a run can be resumed with another process count. Only the main process writes
the run folder (config, log, checkpoints, ``trainer_state.json``; accelerate writes each process's
RNG state file into ``state/``); the others wait at a barrier.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ceed_vla_ros.backends import get_backend
from ceed_vla_ros.metadata import CheckpointMetadata

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"
LOG_FILE = "log.jsonl"


def check_run_dir(run_dir: Path, model_dir: Path) -> None:
    """Refuse a run folder inside (or equal to) the model folder: run state holds pickled files.

    Raises:
        SystemExit: ``run_dir`` is ``model_dir`` or inside it.
    """
    run, models = Path(run_dir).resolve(), Path(model_dir).resolve()
    if models in run.parents or run == models:
        raise SystemExit("--run-dir must be outside --model-dir (run state contains pickled optimizer files)")


def resume_run(accelerator, run_dir: Path) -> dict:
    """Load the accelerate state saved in ``run_dir`` and return ``trainer_state.json``.

    Raises:
        SystemExit: nothing was saved there yet.
    """
    state_file = Path(run_dir) / TRAINER_STATE
    if not state_file.is_file():
        raise SystemExit(f"--resume: no saved state in {run_dir}")
    accelerator.load_state(str(Path(run_dir) / STATE_DIR))
    saved = json.loads(state_file.read_text())
    accelerator.print(f"resumed at step {int(saved['step'])}")
    return saved


def lr_factor(
    step: int,
    warmup: int,
    total: int,
    elapsed_s: float = 0.0,
    time_limit_s: float | None = None,
    min_ratio: float = 0.05,
) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio`` over the run.

    The progress is the larger of the step fraction and (with a time limit) the elapsed-time
    fraction, so a run cut by ``--time-limit-min`` on a slow or shared CPU still ends with a
    decayed learning rate.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if time_limit_s:
        progress = max(progress, elapsed_s / time_limit_s)
    progress = min(1.0, progress)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_indices(num_samples: int, batch_size: int, seed: int, step: int, stream: tuple[int, ...] = ()) -> np.ndarray:
    """Global batch ``step`` of a seeded epoch-wise permutation of ``range(num_samples)``.

    Stateless (a function of seed, stream and step), hence resumable: epoch ``e`` is the
    permutation of ``numpy.random.default_rng([seed, *stream, e])``, cut into
    ``num_samples // batch_size`` batches (the remainder is skipped). ``stream`` keeps the orders of
    different trainers apart.
    """
    per_epoch = max(1, num_samples // batch_size)
    epoch, offset = divmod(step, per_epoch)
    order = np.random.default_rng([seed, *stream, epoch]).permutation(num_samples)
    return order[offset * batch_size : (offset + 1) * batch_size].copy()


def export(model, tokenizer, metadata: CheckpointMetadata, path: Path) -> CheckpointMetadata:
    """Save ``model`` (in eval mode, training mode restored after) as a loadable checkpoint at
    ``path`` with ``metadata`` (fresh ``checkpoint_id``, ``weights_sha256`` and creation time), in
    the layout of ``metadata.backend`` (its ``save`` refuses pickles in the folder)."""
    provenance = dataclasses.replace(metadata.provenance, created="")
    metadata = dataclasses.replace(metadata, provenance=provenance, checkpoint_id="", weights_sha256="")
    was_training = model.training
    saved = get_backend(metadata.backend).save(model.eval(), tokenizer, metadata, path)
    model.train(was_training)
    return saved


def process_slice(batch_size: int, num_processes: int, process_index: int) -> slice:
    """The part of a global batch of ``batch_size`` that process ``process_index`` trains on.

    Raises:
        SystemExit: ``batch_size`` is not a multiple of ``num_processes`` (the slices would differ
            in size and DDP's gradient average would no longer be the global batch's).
    """
    if batch_size % num_processes:
        raise SystemExit(f"--batch-size {batch_size} must be a multiple of the {num_processes} processes")
    per_process = batch_size // num_processes
    return slice(process_index * per_process, (process_index + 1) * per_process)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def make_accelerator(device: str = "auto", mixed_precision: str = "no"):
    """The ``Accelerator`` of a training run, on GPUs or (``device`` cpu, or no CUDA) on CPU with gloo.

    ``step_scheduler_with_optimizer=False``: accelerate otherwise steps a prepared LR scheduler
    once per PROCESS at every ``scheduler.step()`` (it assumes the schedule counts per-process
    batches), which made a 2-process run decay twice as fast as a 1-process one; our schedules
    count optimizer steps of the global batch.

    Raises:
        SystemExit: FSDP was asked for (``accelerate launch --use_fsdp`` or an accelerate config
            with ``distributed_type: FSDP``) on a machine without CUDA: accelerate 1.15 only
            builds FSDP on accelerators (on CPU it falls back to a MULTI_CPU/DDP state and would
            silently train without sharding).
    """
    from accelerate import Accelerator

    cpu = device == "cpu" or not torch.cuda.is_available()
    if cpu and _env_true("ACCELERATE_USE_FSDP"):
        raise SystemExit(
            "FSDP needs CUDA devices: accelerate builds FSDP only on accelerators, not on CPU processes "
            "(run the same command without --use_fsdp on CPU: DDP over gloo)"
        )
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, step_scheduler_with_optimizer=False)


class TrainingRun:
    """One resumable training run: accelerator, clock, log and saved state in ``run_dir``.

    Creating it refuses a ``run_dir`` inside ``model_dir``, sets the torch CPU threads, starts the
    ``accelerate`` ``Accelerator`` (:func:`make_accelerator`), seeds every RNG
    (``accelerate.utils.set_seed``), starts the clock and creates ``run_dir`` (main process; the
    others wait for it).
    """

    def __init__(
        self, run_dir: Path, model_dir: Path, *, seed: int, threads: int, time_limit_min: float | None,
        device: str = "auto", mixed_precision: str = "no",
    ) -> None:
        from accelerate.utils import set_seed

        check_run_dir(run_dir, model_dir)
        torch.set_num_threads(threads)
        if device not in ("auto", "cpu"):  # cuda / cuda:N: refused clearly where torch has no GPU
            from ceed_vla_ros.precision import PrecisionError, parse_device

            try:
                parse_device(device)
            except PrecisionError as error:
                raise SystemExit(f"error: {error}") from None
        self.accelerator = make_accelerator(device=device, mixed_precision=mixed_precision)
        set_seed(seed)
        self.start_time = time.perf_counter()
        self.run_dir = Path(run_dir)
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        if self.accelerator.num_processes > 1:
            self.print(
                f"{self.accelerator.num_processes} processes ({self.accelerator.distributed_type.value}, "
                f"{torch.distributed.get_backend()}); each trains on 1/{self.accelerator.num_processes} "
                "of every global batch"
            )
        self.time_limit_s = 60 * time_limit_min if time_limit_min is not None else None
        self._log_file = None

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def print(self, text: str) -> None:
        self.accelerator.print(text)

    def elapsed(self) -> float:
        """Training seconds so far, including those of the runs this one resumed."""
        return time.perf_counter() - self.start_time

    def out_of_time(self, step: int) -> bool:
        """True (and says so) once ``--time-limit-min`` is spent."""
        if self.time_limit_s is not None and self.elapsed() > self.time_limit_s:
            self.print(f"time limit reached at step {step}")
            return True
        return False

    def save_config(self, config) -> None:
        """``<run-dir>/config.yaml`` (main process): the configuration of this (resumed) run."""
        if self.is_main_process:
            config.save(self.run_dir)

    def resume(self) -> dict:
        """Load the saved state; the clock continues from the saved ``train_seconds``."""
        saved = resume_run(self.accelerator, self.run_dir)
        self.start_time -= float(saved.get("train_seconds", 0.0))
        return saved

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    def process_slice(self, batch_size: int) -> slice:
        """This process's part of a global batch (:func:`process_slice`)."""
        return process_slice(batch_size, self.accelerator.num_processes, self.accelerator.process_index)

    def process_share(self, indices, batch_size: int):
        """This process's part of a global batch (the global ``batch_size`` split evenly)."""
        return indices[self.process_slice(batch_size)]

    def mean_over_processes(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` averaged over the processes (each holds the mean over its slice; equal
        slices, so this is the global batch's mean). One process: ``values`` unchanged."""
        if self.accelerator.num_processes == 1 or not values:
            return values
        keys = sorted(values)
        local = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.accelerator.device)
        reduced = self.accelerator.reduce(local, reduction="mean")
        return dict(zip(keys, reduced.tolist()))

    def log(self, record: dict) -> None:
        """Append ``record`` as one line to ``<run-dir>/log.jsonl`` (main process)."""
        if not self.is_main_process:
            return
        if self._log_file is None:
            self._log_file = open(self.run_dir / LOG_FILE, "a")
        self._log_file.write(json.dumps(record) + "\n")
        self._log_file.flush()

    def save_state(
        self, step: int, export_checkpoint: Callable[[], object], extra: Callable[[], dict] | None = None
    ) -> None:
        """Save the accelerate state; on the main process also ``export_checkpoint()`` (the
        run's intermediate checkpoint) and ``trainer_state.json`` (``step``, ``train_seconds``,
        ``extra()``)."""
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(self.run_dir / STATE_DIR), safe_serialization=True)
        if self.is_main_process:
            export_checkpoint()
            state = {"step": step, "train_seconds": self.elapsed(), "processes": self.num_processes,
                     **(extra() if extra else {})}
            (self.run_dir / TRAINER_STATE).write_text(json.dumps(state))

    def close(self) -> None:
        """Close the log; every process waits here until the main one has written everything."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.accelerator.wait_for_everyone()
