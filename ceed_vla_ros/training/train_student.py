"""``ceed-vla distill``: consistency distillation of a STUDENT from a teacher's Jacobi trajectories.

Inputs: the teacher checkpoint, a trajectory file of that teacher
(:mod:`ceed_vla_ros.training.trajectories`) and the demonstration files it references (images and
proprio are read from there, not duplicated in the trajectory file).

Recipe (CEED-VLA / CLLM, losses in :mod:`ceed_vla_ros.training.losses`):

* the student starts as an exact copy of the teacher;
* each step takes a batch of samples; for each sample one Jacobi state ``Y`` is drawn uniformly
  from its trajectory ``J = {Y^0, ..., Y*}`` EXCLUDING the fixed point (CLLM's choice; a sample whose
  trajectory is only ``{Y*}`` uses ``Y*``, its consistency term is then exactly zero);
* ONE batched forward of the student over ``[prompt + Y]`` and ``[prompt + Y*]`` (same images and
  proprio) gives the block logits (:func:`~ceed_vla_ros.training.losses.block_prediction_logits`);
  both losses use the logits restricted to the action tokens, the range the teacher was trained
  on and every decoder argmax is taken over;
* ``loss = consistency_loss(state, fixed point (detached)) + ar_weight * ar_loss(fixed point,
  mixed_labels)``: the AR labels are the teacher's fixed point ``Y*`` except for samples whose
  teacher actions are more than ``--l1-threshold`` (mean absolute difference per action element,
  normalised [-1, 1] action units) from the ground-truth chunk, which take the ground-truth tokens.

Default ``--l1-threshold 0.1``: 5 % of the normalised action range, about 13 bins (a bin is
2/256 = 0.0078 wide) of mean error per element. The teacher's typical error on its own training
data is far below that (see the collection summary / the model card); samples above it are the
teacher's outliers (wrong cube, mode errors), where the paper's mixed labels switch to the
ground truth.

Runs through Hugging Face ``accelerate``: the same command works on one CPU and, with
``accelerate launch --num_processes N -m ceed_vla_ros.tools.cli distill ...`` (or ``torchrun``), on
N GPUs or N CPU processes (gloo); the global ``--batch-size`` is split over the processes and the
result is that of one process on the whole batch (see :mod:`ceed_vla_ros.training.loop`).
Resumable: every ``--save-every`` steps the accelerate state (model weights as safetensors;
optimizer / scheduler / RNG as torch files, in the run dir only) and ``trainer_state.json`` go to
``--run-dir``; ``--resume`` continues from there with the same batches (the sample order and the
drawn states are functions of seed and step), also with another process count.
The final student is written with :func:`~ceed_vla_ros.checkpoint.save_checkpoint` to
``<model-dir>/<out-name>`` with ``Provenance(role="student", parent=<teacher checkpoint_id>)``.

Validation (``--val-samples`` trajectories held out from training): early-exit decoding of the
model from the stored ``Y^0`` with k = 1, 2, 3, 4 iterations (the action L1 to the ground truth and
token agreement with the teacher's fixed point) and the mean Jacobi iterations to convergence.

The options are a :class:`~ceed_vla_ros.training.config.DistillConfig` (saved as
``<run-dir>/config.yaml``); accelerator, resume, time limit, log, saved state, lr schedule, batch
order and export are :mod:`ceed_vla_ros.training.loop`, shared with the teacher trainer. The
command line (``add_cli_arguments`` / ``cli_main``) is the thin part at the bottom of this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ceed_vla_ros.action_tokenizer import ActionTokenizer
from ceed_vla_ros.backends import ModelBackend, get_backend
from ceed_vla_ros.checkpoint import Checkpoint, load_checkpoint_arg
from ceed_vla_ros.datasets import add_data_arguments
from ceed_vla_ros.decoding import TokenRange, jacobi_trajectories_batched
from ceed_vla_ros.metadata import Provenance
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument
from ceed_vla_ros.training.config import DEFAULT_L1_THRESHOLD, DistillConfig
from ceed_vla_ros.training.loop import TrainingRun, batch_indices, export, lr_factor
from ceed_vla_ros.training.losses import CeedLoss, block_prediction_logits, ceed_loss, mixed_labels
from ceed_vla_ros.training.trajectories import SampleSet, TrajectorySet, load_samples, read_trajectories

RUN_CHECKPOINT = "checkpoint"
EARLY_EXIT_STEPS = (1, 2, 3, 4)
LR_MIN_RATIO = 0.1  # the cosine schedule decays to 10 % of --lr
BATCH_STREAM = (11,)  # keeps the batch order apart from the teacher's (loop.batch_indices)


@dataclasses.dataclass
class DistillBatch:
    """Tensors of one distillation batch (CPU or device)."""

    input_ids: torch.Tensor  # (2B, L + n): B rows [prompt + Y], then B rows [prompt + Y*]
    attention_mask: torch.Tensor  # (2B, L + n)
    inputs: dict[str, torch.Tensor]  # the backend's model inputs, 2B rows (e.g. pixel_values, proprio)
    fixed_point: torch.Tensor  # (B, n)
    ground_truth: torch.Tensor  # (B, n)
    teacher_actions: torch.Tensor  # (B, k, d) normalised
    ground_truth_actions: torch.Tensor  # (B, k, d) normalised
    prompt_len: int
    block_len: int

    def to(self, device: torch.device) -> DistillBatch:
        return dataclasses.replace(
            self,
            inputs={key: value.to(device) for key, value in self.inputs.items()},
            **{
                f.name: getattr(self, f.name).to(device)
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )


def draw_states(trajectories: TrajectorySet, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One state per sample, uniform over ``Y^0 .. Y^{T-2}`` (``Y*`` only when ``J = {Y*}``)."""
    counts = trajectories.num_states[rows].astype(np.int64)
    choice = np.floor(rng.random(rows.size) * np.maximum(counts - 1, 1)).astype(np.int64)
    choice = np.where(counts > 1, choice, 0)
    return trajectories.states[trajectories.state_offset[rows] + choice].astype(np.int64)


def make_batch(
    samples: SampleSet,
    trajectories: TrajectorySet,
    rows: np.ndarray,
    states: np.ndarray,
) -> DistillBatch:
    """``rows`` index both ``samples`` and ``trajectories`` (same order); ``states`` (B, n) = Y."""
    index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    base = samples.model_batch(index)
    prompt = base.pop("input_ids")
    prompt_mask = base.pop("attention_mask")
    fixed_point = torch.from_numpy(trajectories.fixed_point[rows].astype(np.int64))
    state = torch.from_numpy(np.asarray(states, dtype=np.int64))
    n = fixed_point.shape[1]
    ids = torch.cat((torch.cat((prompt, state), 1), torch.cat((prompt, fixed_point), 1)))
    mask = torch.cat((prompt_mask, torch.ones_like(state)), 1).repeat(2, 1)
    return DistillBatch(
        input_ids=ids,
        attention_mask=mask,
        inputs={key: value.repeat(2, *([1] * (value.ndim - 1))) for key, value in base.items()},
        fixed_point=fixed_point,
        ground_truth=torch.from_numpy(trajectories.ground_truth[rows].astype(np.int64)),
        teacher_actions=torch.from_numpy(trajectories.teacher_actions[rows]),
        ground_truth_actions=torch.from_numpy(trajectories.ground_truth_actions[rows]),
        prompt_len=prompt.shape[1],
        block_len=n,
    )


def distill_loss(
    model: torch.nn.Module,
    batch: DistillBatch,
    allowed: TokenRange,
    *,
    ar_weight: float = 1.0,
    l1_threshold: float = DEFAULT_L1_THRESHOLD,
    frozen_vision: bool = False,
    backend: ModelBackend | None = None,
) -> tuple[CeedLoss, torch.Tensor]:
    """Consistency + mixed-label AR loss of ``model`` on ``batch``; also returns which samples use GT labels.

    ``backend`` (default ``ceed_tiny``) runs the forward (:meth:`ModelBackend.sequence_logits`:
    logits aligned with ``input_ids``). ``frozen_vision``: the vision part runs without gradients
    (ceed_tiny: its CNN stage once per image, the state and fixed-point rows share it), and only
    the rest of the model is trained.
    """
    size = batch.fixed_point.shape[0]
    backend = backend or get_backend("ceed_tiny")
    logits = backend.sequence_logits(
        model, batch.input_ids, batch.attention_mask, batch.inputs, batch.prompt_len, frozen_vision=frozen_vision
    )
    block = block_prediction_logits(logits, batch.prompt_len, batch.block_len)[..., allowed.start : allowed.stop]
    state_logits, fixed_point_logits = block[:size], block[size:]
    labels, uses_truth = mixed_labels(
        batch.fixed_point, batch.ground_truth, batch.teacher_actions, batch.ground_truth_actions, l1_threshold
    )
    loss = ceed_loss(state_logits, fixed_point_logits, labels - allowed.start, ar_weight)
    return loss, uses_truth


def distill_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: DistillBatch,
    allowed: TokenRange,
    *,
    ar_weight: float = 1.0,
    l1_threshold: float = DEFAULT_L1_THRESHOLD,
    backward=None,
    clip_grad_norm=None,
    max_grad_norm: float = 1.0,
    frozen_vision: bool = False,
    backend: ModelBackend | None = None,
) -> tuple[CeedLoss, torch.Tensor]:
    """One optimizer step on ``batch`` (``backward`` / ``clip_grad_norm``: accelerate's, or plain torch)."""
    loss, uses_truth = distill_loss(
        model, batch, allowed, ar_weight=ar_weight, l1_threshold=l1_threshold, frozen_vision=frozen_vision,
        backend=backend,
    )
    optimizer.zero_grad(set_to_none=True)
    (backward or (lambda value: value.backward()))(loss.total)
    (clip_grad_norm or torch.nn.utils.clip_grad_norm_)(model.parameters(), max_grad_norm)
    optimizer.step()
    return loss, uses_truth


@torch.no_grad()
def evaluate_early_exit(
    model: torch.nn.Module,
    samples: SampleSet,
    trajectories: TrajectorySet,
    rows: np.ndarray,
    allowed: TokenRange,
    action_tokenizer: ActionTokenizer,
    batch_size: int = 64,
) -> dict[str, float]:
    """Jacobi from the stored Y^0 with ``model``: per early-exit k, the action L1 to the ground truth
    and the token agreement with the teacher's Y*; plus mean iterations to the fixed point."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    l1 = {k: [] for k in (*EARLY_EXIT_STEPS, "fixed")}
    agree = {k: [] for k in (*EARLY_EXIT_STEPS, "fixed")}
    iterations = []
    for begin in range(0, len(rows), batch_size):
        chunk = rows[begin : begin + batch_size]
        base = {k: v.to(device) for k, v in samples.model_batch(torch.from_numpy(chunk.astype(np.int64))).items()}
        initial = torch.from_numpy(trajectories.states[trajectories.state_offset[chunk]].astype(np.int64))
        result = jacobi_trajectories_batched(
            model, base.pop("input_ids"), base.pop("attention_mask"), base, initial.to(device), allowed=allowed
        )
        truth = trajectories.ground_truth_actions[chunk].reshape(len(chunk), -1)
        teacher = trajectories.fixed_point[chunk]
        for i, states in enumerate(result.states):
            iterations.append(states.shape[0] - 1)
            for k in (*EARLY_EXIT_STEPS, "fixed"):
                tokens = (states[-1] if k == "fixed" else states[min(k, states.shape[0] - 1)]).numpy()
                # Y^0 may hold non-action ids at k=0 only; from k>=1 every position is an action token.
                actions = action_tokenizer.normalized_actions(tokens).reshape(-1)
                l1[k].append(float(np.abs(actions - truth[i]).mean()))
                agree[k].append(float((tokens == teacher[i]).mean()))
    model.train(was_training)
    out = {"val_iterations": float(np.mean(iterations))}
    for k in (*EARLY_EXIT_STEPS, "fixed"):
        name = "fp" if k == "fixed" else f"k{k}"
        out[f"val_l1_{name}"] = float(np.mean(l1[k]))
        out[f"val_agree_{name}"] = float(np.mean(agree[k]))
    return out


def split_rows(num: int, val_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out validation rows), seeded."""
    order = np.random.default_rng([seed, 5]).permutation(num)
    n_val = min(val_samples, max(0, num - 1))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def check_data(trajectories: TrajectorySet, data: list[Path], teacher: Checkpoint) -> None:
    """The trajectory file must come from this teacher and reference these demonstration files."""
    expected = trajectories.attrs["teacher_checkpoint_id"]
    if expected != teacher.metadata.checkpoint_id:
        raise SystemExit(f"trajectories come from teacher {expected}, not {teacher.metadata.checkpoint_id}")
    recorded = trajectories.data_files
    if len(recorded) != len(data):
        raise SystemExit(f"trajectories reference {len(recorded)} data files {recorded}, --data gives {len(data)}")
    from ceed_vla_ros.datasets import count_episodes

    counts = json.loads(trajectories.attrs.get("data_episodes", "null") or "null")
    for i, path in enumerate(data):
        if counts is not None and (found := count_episodes(path)) != counts[i]:
            raise SystemExit(
                f"{path}: {found} episodes, the trajectories were collected on {counts[i]} ({recorded[i]})"
            )
        if Path(path).name != Path(recorded[i]).name:
            print(f"warning: --data {path} stands for the recorded {recorded[i]}", file=sys.stderr)


def distill(config: DistillConfig) -> Path:
    """Distil a student as ``config`` says; return the final checkpoint's folder (``<model-dir>/<out-name>``)."""
    from tqdm import tqdm

    run = TrainingRun(
        config.run_dir, config.model_dir, seed=config.seed, threads=config.threads,
        time_limit_min=config.time_limit_min, device=config.device, mixed_precision=config.mixed_precision,
    )
    accelerator = run.accelerator
    run.save_config(config)
    final_path = config.model_dir / config.out_name
    accelerator.print(f"final checkpoint: {final_path}; run state and log: {config.run_dir}")

    teacher = load_checkpoint_arg(config.model_dir, config.teacher)
    trajectories = read_trajectories(config.trajectories)
    check_data(trajectories, list(config.data), teacher)
    samples = load_samples(config.data, teacher, refs=trajectories.refs(), lerobot_map=config.lerobot_map)
    metadata = teacher.metadata
    allowed = TokenRange(*teacher.action_tokenizer.token_range)
    train_rows, val_rows = split_rows(len(trajectories), config.val_samples, config.seed)
    accelerator.print(
        f"teacher {metadata.checkpoint_id}; {len(trajectories)} trajectories "
        f"({train_rows.size} train, {val_rows.size} val), "
        f"mean {float(trajectories.num_states.mean() - 1):.2f} Jacobi iterations, "
        f"{float((trajectories.l1 > config.l1_threshold).mean()):.1%} samples with GT labels "
        f"(l1 > {config.l1_threshold})"
    )

    student = teacher.model  # the student starts as the teacher (a fresh copy loaded from disk)
    student.train()
    if config.freeze_vision:
        teacher.backend.freeze_vision(student)
    lora = config.lora_settings()
    if lora is not None:
        from ceed_vla_ros.training.lora import apply_lora, trainable_counts

        student = apply_lora(student, lora)
        student.train()
        count, total = trainable_counts(student)
        accelerator.print(f"LoRA rank {lora.rank}, alpha {lora.alpha}: {count:,} of {total:,} parameters trained "
                          f"({count / total:.2%}); student saved {lora.save}")
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup, config.steps, min_ratio=LR_MIN_RATIO)
    )
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)

    step = 0
    history: list[dict] = []
    if config.resume:
        saved = run.resume()
        step = int(saved["step"])
        history = saved.get("validation", [])

    def validate() -> dict:
        if val_rows.size == 0 or not accelerator.is_main_process:
            return {}
        result = evaluate_early_exit(
            accelerator.unwrap_model(student),
            samples,
            trajectories,
            val_rows,
            allowed,
            teacher.action_tokenizer,
        )
        result = {"step": step, **{k: round(v, 5) for k, v in result.items()}}
        history.append(result)
        run.log(result)
        accelerator.print("validation " + json.dumps(result))
        return result

    def export_checkpoint(path: Path, *, final: bool):
        student_metadata = dataclasses.replace(
            teacher.metadata,
            name=path.name,
            provenance=student_provenance(
                config, teacher, trajectories, step, run.elapsed(), last, history, final=final
            ),
        )
        model = accelerator.unwrap_model(student)
        if lora is not None and lora.save == "adapter":
            from ceed_vla_ros.training.lora import save_adapter_checkpoint

            return save_adapter_checkpoint(model, student_metadata, path, teacher.path)
        if lora is not None:
            from ceed_vla_ros.training.lora import merged_copy

            model = merged_copy(model)
        return export(model, teacher.tokenizer, student_metadata, path)

    def save_state() -> None:
        run.save_state(
            step,
            lambda: export_checkpoint(config.run_dir / RUN_CHECKPOINT, final=False),
            lambda: {"validation": history},
        )

    if step == 0:
        validate()
    bar = tqdm(
        total=config.steps,
        initial=step,
        unit="step",
        desc="distill",
        mininterval=2.0,
        disable=not config.progress or not accelerator.is_main_process,
    )
    running = {"consistency": 0.0, "ar": 0.0, "total": 0.0, "gt_labels": 0.0}
    count = 0
    last: dict = {}
    share = run.process_slice(config.batch_size)
    student.train()
    while step < config.steps:
        if run.out_of_time(step):
            break
        rows = train_rows[batch_indices(train_rows.size, config.batch_size, config.seed, step, BATCH_STREAM)]
        # the states are drawn for the whole global batch (the same on every process), then sliced
        states = draw_states(trajectories, rows, np.random.default_rng([config.seed, 13, step]))
        rows, states = rows[share], states[share]
        batch = make_batch(samples, trajectories, rows, states)
        loss, uses_truth = distill_step(
            student,
            optimizer,
            batch.to(accelerator.device),
            allowed,
            ar_weight=config.ar_weight,
            l1_threshold=config.l1_threshold,
            backward=accelerator.backward,
            clip_grad_norm=accelerator.clip_grad_norm_,
            frozen_vision=config.freeze_vision,
            backend=teacher.backend,
        )
        scheduler.step()
        step += 1
        count += 1
        running["consistency"] += loss.consistency
        running["ar"] += loss.ar
        running["total"] += float(loss.total.detach())
        running["gt_labels"] += float(uses_truth.float().mean())
        bar.update(1)
        bar.set_postfix(cons=f"{loss.consistency:.4f}", ar=f"{loss.ar:.4f}", refresh=False)
        if step % config.log_every == 0 or step == config.steps:
            last = _rounded_mean(run, running, count)
            run.log({"step": step, "lr": scheduler.get_last_lr()[0], "seconds": round(run.elapsed(), 1), **last})
            running = dict.fromkeys(running, 0.0)
            count = 0
        if config.eval_every and step % config.eval_every == 0 and step < config.steps:
            validate()
        if step % config.save_every == 0:
            save_state()
    bar.close()
    if count:
        last = _rounded_mean(run, running, count)
    validate()
    save_state()
    if accelerator.is_main_process:
        saved = export_checkpoint(final_path, final=True)
        accelerator.print(
            f"saved {final_path} ({saved.checkpoint_id}) after {step} steps, {run.elapsed() / 60:.1f} min"
        )
    run.close()
    return final_path


def _rounded_mean(run: TrainingRun, running: dict[str, float], count: int) -> dict[str, float]:
    """The running sums over ``count`` steps as means over the steps and the processes."""
    return {k: round(v, 5) for k, v in run.mean_over_processes({k: v / count for k, v in running.items()}).items()}


def student_provenance(
    config: DistillConfig,
    teacher: Checkpoint,
    trajectories: TrajectorySet,
    step: int,
    seconds: float,
    last: dict,
    history: list[dict],
    *,
    final: bool,
) -> Provenance:
    """Provenance of an exported student (role student, parent = the teacher's checkpoint_id)."""
    val = history[-1] if history else {}
    first = history[0] if history else {}
    notes = (
        f"{'final' if final else 'intermediate'}: consistency distillation, {step} steps, batch {config.batch_size}, "
        f"lr {config.lr}, ar_weight {config.ar_weight}, l1_threshold {config.l1_threshold}, "
        f"{'CNN frozen, ' if config.freeze_vision else ''}{seconds / 60:.1f} min train "
        f"wall time; last losses {json.dumps(last)}"
    )
    if val:
        notes += (
            f"; held-out ({config.val_samples}) early-exit action L1 k1..k4 / fixed point: "
            + " ".join(f"{val.get(f'val_l1_k{k}', float('nan')):.4f}" for k in EARLY_EXIT_STEPS)
            + f" / {val.get('val_l1_fp', float('nan')):.4f}, "
            + f"mean Jacobi iterations {val.get('val_iterations', float('nan')):.2f}"
        )
        if first and first is not val:
            notes += (f" (teacher at step 0: iterations {first.get('val_iterations', float('nan')):.2f}, "
                      f"k1 L1 {first.get('val_l1_k1', float('nan')):.4f})")
    data = (
        f"{config.trajectories} ({len(trajectories)} Jacobi trajectories of "
        f"{trajectories.attrs['teacher_checkpoint_id']}, "
        f"{int(trajectories.attrs['num_states'])} states) over {', '.join(str(p) for p in config.data)}"
    )
    return Provenance(
        role="student",
        parent=teacher.metadata.checkpoint_id,
        command=config.command,
        seeds={"distill": int(config.seed), "trajectories": int(trajectories.attrs.get("seed", 0))},
        data=data,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Command line (``ceed-vla distill``): argparse -> DistillConfig -> distill()
# --------------------------------------------------------------------------------------------

_D = DistillConfig  # the defaults of every option


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="teacher checkpoint name in --model-dir (or a folder path)")
    parser.add_argument("--trajectories", type=Path, required=True, help="file from ceed-vla collect-trajectories")
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="the demonstration files of the trajectories, same order"
    )
    add_data_arguments(parser, data=False)
    parser.add_argument("--out-name", default=_D.out_name, help="student checkpoint name (folder in --model-dir)")
    add_model_dir_argument(parser, "folder of the teacher checkpoint and of the student written")
    parser.add_argument("--run-dir", type=Path, default=_D.run_dir, help="run state / logs (outside --model-dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the last state saved in --run-dir")
    parser.add_argument("--ar-weight", type=float, default=_D.ar_weight, help="weight w of the AR term (paper: 1)")
    parser.add_argument(
        "--l1-threshold",
        type=float,
        default=_D.l1_threshold,
        help="GT labels for samples whose teacher actions are further than this from the GT "
        "(mean |diff| per element, normalised [-1, 1] units; default %(default)s)",
    )
    parser.add_argument(
        "--freeze-vision",
        action="store_true",
        help="keep the teacher's CNN (vision features) fixed in the student and train the rest: the CNN runs once per "
        "image without gradients, several times cheaper on a CPU",
    )
    parser.add_argument("--steps", type=int, default=_D.steps, help="optimizer steps")
    parser.add_argument(
        "--time-limit-min", type=float, default=_D.time_limit_min, help="stop (and save) after this many minutes"
    )
    parser.add_argument(
        "--batch-size", type=int, default=_D.batch_size, help="global batch size (samples; 2x sequences)"
    )
    parser.add_argument("--lr", type=float, default=_D.lr)
    parser.add_argument("--weight-decay", type=float, default=_D.weight_decay)
    parser.add_argument("--warmup", type=int, default=_D.warmup)
    parser.add_argument("--seed", type=int, default=_D.seed)
    parser.add_argument("--val-samples", type=int, default=_D.val_samples, help="trajectories held out for validation")
    parser.add_argument(
        "--eval-every", type=int, default=_D.eval_every, help="steps between validations (0: start/end only)"
    )
    parser.add_argument("--save-every", type=int, default=_D.save_every, help="steps between saved run states")
    parser.add_argument("--log-every", type=int, default=_D.log_every)
    parser.add_argument("--threads", type=int, default=_D.threads, help="torch CPU threads")
    parser.add_argument("--device", default=_D.device,
                        help="auto (accelerate's choice: a GPU if present), cpu, cuda or cuda:N (default %(default)s)")
    parser.add_argument("--mixed-precision", default=_D.mixed_precision, choices=("no", "bf16", "fp16"),
                        help="accelerate mixed precision; the weights stay float32 (default %(default)s)")
    lora = parser.add_argument_group("LoRA (peft): train low-rank adapters instead of every weight")
    lora.add_argument("--lora-rank", type=int, default=_D.lora_rank, help="adapter rank r (0: off, the default)")
    lora.add_argument("--lora-alpha", type=float, default=_D.lora_alpha, help="scale alpha (update x alpha / r)")
    lora.add_argument("--lora-dropout", type=float, default=_D.lora_dropout)
    lora.add_argument("--lora-targets", default=_D.lora_targets,
                      help="peft target_modules: a regex over module names or comma-separated suffixes "
                      "(default: the language model's q/k/v/o/gate/up/down projections)")
    lora.add_argument("--lora-save", default=_D.lora_save, choices=("merged", "adapter"),
                      help="merged: a complete student checkpoint; adapter: only the adapter weights, loaded on top "
                      "of the teacher folder (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    """The :class:`DistillConfig` of parsed ``ceed-vla distill`` arguments (bad values: SystemExit)."""
    command = getattr(args, "command", None) or getattr(args, "command_line", "ceed-vla distill")  # from tools.cli
    try:
        return DistillConfig.from_args(args, model_dir=model_dir_argument(args.model_dir), command=command)
    except ValueError as error:
        raise SystemExit(f"ceed-vla distill: {error}") from None


def cli_main(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    distill(config_from_args(args))
    return 0
