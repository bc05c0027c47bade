"""``ceed-vla train``: train the TEACHER action-token policy from recorded demonstrations (pixels).

Recipe (see ``models/sim_teacher/README.md`` for the measured results):

* data: one or more HDF5 files from ``ceed-vla record`` (both tasks -> one instruction-conditioned
  multi-task teacher); :mod:`ceed_vla_ros.training.dataset` builds chunk-relative joint deltas
  (action space ``joint_delta``), q01/q99 statistics of actions and proprio, prompt ids, action
  tokens and privileged auxiliary targets;
* model: :class:`~ceed_vla_ros.model.CeedVlaForActionPrediction` (CoordConv CNN + spatial-softmax
  keypoints -> image tokens, proprio token, tiny Llama decoder);
* loss: cross-entropy of the action tokens of the chunk (teacher forcing; the argmax over the
  action-token range only, as at inference), plus TRAINING-ONLY auxiliary losses that make pixels
  learnable fast:

  - ``--aux-weight``: a linear head on the vision keypoints predicts the image positions of all
    three cubes, the goal (push) and the tool tip (masked MSE in the [-1, 1] image grid);
  - ``--target-aux-weight``: a linear head on the decoder's hidden state at the last prompt
    position predicts the NAMED cube's image position (binds the instruction to the image).

  The heads are not part of the shipped checkpoint; the policy never sees object positions;
* augmentation: random integer image shifts of up to ``--shift`` pixels (auxiliary targets are
  shifted with the image).

Runs through Hugging Face ``accelerate`` (the same command works on CPU and on GPUs under
``accelerate launch``), seedable, resumable (``--resume`` continues from the last state saved in
``--run-dir``), saves the run state every ``--save-every`` steps (``accelerate`` state: model as
safetensors, optimizer/RNG as torch files -- run dirs only, never the shipped checkpoint) plus a
loadable checkpoint ``<run-dir>/checkpoints/<name>`` (evaluate it with
``--model-dir <run-dir>/checkpoints``); the final checkpoint goes to ``<model-dir>/<name>`` via
:func:`~ceed_vla_ros.checkpoint.save_checkpoint` with provenance.
The run loop's shared parts (accelerator, resume, time limit, log, saved state, lr schedule, batch
order, export) are :mod:`ceed_vla_ros.training.loop`; the options are a
:class:`~ceed_vla_ros.training.config.TeacherConfig`, saved as ``<run-dir>/config.yaml``. The
command line (``add_cli_arguments`` / ``cli_main``) is the thin part at the bottom of this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig

from ceed_vla_ros.action_tokenizer import ActionTokenizer
from ceed_vla_ros.datasets import add_data_arguments
from ceed_vla_ros.metadata import CheckpointMetadata, EndEffectorSpec, GripperSpec, ImageSpec, Provenance
from ceed_vla_ros.model import CeedVlaForActionPrediction, build_tokenizer, encode_prompt, make_model_config, new_model
from ceed_vla_ros.paths import add_model_dir_argument, model_dir_argument
from ceed_vla_ros.policy import preprocess_images
from ceed_vla_ros.sim.env import COLOURS, DEFAULT_INSTRUCTIONS
from ceed_vla_ros.sim.mjcf import JOINT_NAMES
from ceed_vla_ros.training.config import TeacherConfig
from ceed_vla_ros.training.dataset import (
    AUX_POINT_NAMES,
    TeacherData,
    TrainingTensors,
    random_shift,
    tokenize_teacher_data,
)
from ceed_vla_ros.training.loop import TrainingRun, batch_indices, export, lr_factor

RUN_CHECKPOINTS = "checkpoints"  # <run-dir>/checkpoints/<name>: the latest intermediate checkpoint


def all_instructions() -> list[str]:
    """Every instruction the simulator can produce (the tokenizer's vocabulary)."""
    return [template.format(colour=c) for template in DEFAULT_INSTRUCTIONS.values() for c in COLOURS]


class TeacherTrainingModule(nn.Module):
    """The VLA plus the training-only auxiliary heads; ``forward`` returns the losses."""

    def __init__(
        self,
        vla: CeedVlaForActionPrediction,
        action_start: int,
        n_bins: int,
        first_action_weight: float = 1.0,
        action_dims: int = 1,
    ) -> None:
        super().__init__()
        self.vla = vla
        self.action_start = action_start
        self.n_bins = n_bins
        self.first_action_weight = float(first_action_weight)
        self.action_dims = int(action_dims)
        config = vla.config
        self.keypoint_head = nn.Linear(2 * config.num_keypoints, 2 * len(AUX_POINT_NAMES))
        self.target_head = nn.Linear(config.text_config.hidden_size, 2)

    def forward(
        self,
        proprio: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        action_tokens: torch.Tensor,
        aux_points: torch.Tensor,
        aux_mask: torch.Tensor,
        target_point: torch.Tensor,
        target_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        aux_count: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The losses of one batch. ``aux_count``: the denominator of the masked keypoint loss
        (default: this batch's mask count; several processes pass the global batch's count over
        the process count, so that DDP's gradient average is the global batch's masked mean)."""
        n = action_tokens.shape[1]
        prompt_len = input_ids.shape[1] - n
        out = self.vla(
            input_ids=input_ids,
            pixel_values=pixel_values,
            vision_features=vision_features,
            prompt_length=prompt_len,
            proprio=proprio,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
        )
        # Position p predicts token p + 1: the action tokens are predicted from prompt_len - 1 on.
        logits = out.logits[:, prompt_len - 1 : prompt_len - 1 + n, self.action_start : self.action_start + self.n_bins]
        classes = action_tokens - self.action_start
        per_token = F.cross_entropy(logits.reshape(-1, self.n_bins).float(), classes.reshape(-1), reduction="none")
        weights = torch.ones(n, device=per_token.device)
        weights[: self.action_dims] = self.first_action_weight  # the tokens of the chunk's first action
        ce = (per_token.reshape(-1, n) * weights).sum(-1).mean() / weights.sum()
        accuracy = (logits.argmax(-1) == classes).float().mean()
        keypoints = out.keypoints.flatten(1)
        predicted = self.keypoint_head(keypoints).reshape(-1, len(AUX_POINT_NAMES), 2)
        per_point = ((predicted - aux_points) ** 2).sum(-1)
        aux = (per_point * aux_mask).sum() / (aux_mask.sum() if aux_count is None else aux_count).clamp_min(1.0)
        hidden = out.hidden_states[-1][:, prompt_len - 1]
        per_target = ((self.target_head(hidden) - target_point) ** 2).sum(-1)
        if target_mask is None:
            target = per_target.mean()
        else:  # only where the dataset knows the named object's position (privileged, sim only)
            target = (per_target * target_mask).sum() / target_mask.sum().clamp_min(1.0)
        return {"ce": ce, "aux": aux, "target_aux": target, "accuracy": accuracy}


def make_batch(
    tensors: TrainingTensors,
    index: torch.Tensor,
    image_spec: ImageSpec,
    shift: int,
    generator: torch.Generator,
    device: torch.device,
    proprio_noise: float = 0.0,
    part: tuple[slice, int] | None = None,
) -> dict[str, torch.Tensor]:
    """One training batch on ``device``: shifted + preprocessed images, tokens, aux targets;
    Gaussian noise of std ``proprio_noise`` (normalised units) on the proprio input.

    ``part = (rows, global_size)``: ``index`` is the slice ``rows`` of a global batch of
    ``global_size`` samples (one process's share); the noise and the shifts are drawn for the whole
    global batch and sliced, so each sample gets the same draw whatever the process count."""
    rows, size = part if part is not None else (slice(None), len(index))
    batch = tensors.batch(index)
    if proprio_noise > 0:
        noise = torch.randn((size, *batch["proprio"].shape[1:]), generator=generator)[rows]
        batch["proprio"] = batch["proprio"] + proprio_noise * noise
    batch.pop("task_index")
    if "vision_features" in batch:  # frozen CNN: features cached from unshifted images
        return {k: v.to(device) for k, v in batch.items()}
    offsets = torch.randint(-shift, shift + 1, (size, 2), generator=generator)[rows]
    images, offsets = random_shift(batch.pop("images"), shift, None, offsets)
    size = images.shape[1]
    delta = offsets.float() * (2.0 / (size - 1))  # pixels -> [-1, 1] grid units
    batch["aux_points"] = batch["aux_points"] + delta[:, None, :] * batch["aux_mask"][..., None]
    batch["target_point"] = batch["target_point"] + delta
    batch["pixel_values"] = preprocess_images(images, image_spec)
    return {k: v.to(device) for k, v in batch.items()}


def sample_pool(episode_index: np.ndarray, first_steps: int = 0, factor: int = 1) -> np.ndarray:
    """Sample indices to draw batches from: every sample once, plus ``factor - 1`` extra copies of the
    first ``first_steps`` samples of every episode (``episode_index`` runs over the loaded episodes,
    rows in step order). ``first_steps = 0`` or ``factor = 1``: ``arange(N)`` (uniform sampling)."""
    episode_index = np.asarray(episode_index)
    count = len(episode_index)
    base = np.arange(count)
    if first_steps <= 0 or factor <= 1 or count == 0:
        return base
    starts = np.r_[True, episode_index[1:] != episode_index[:-1]]
    step_in_episode = base - np.maximum.accumulate(np.where(starts, base, 0))
    early = base[step_in_episode < first_steps]
    return np.concatenate([base, np.tile(early, factor - 1)])


PROJECTOR_INPUT = "vision_encoder.projector.0.weight"


def widen_projector_input(state: dict[str, torch.Tensor], vla: CeedVlaForActionPrediction) -> dict[str, torch.Tensor]:
    """``state`` with the image-token MLP's input layer zero-padded to ``vla``'s wider input (a checkpoint
    without prompt conditioning, loaded into a model with it: identical outputs at first)."""
    old, new = state.get(PROJECTOR_INPUT), vla.state_dict()[PROJECTOR_INPUT]
    if old is None or old.shape == new.shape or old.shape[0] != new.shape[0] or old.shape[1] > new.shape[1]:
        return state
    widened = torch.zeros_like(new)
    widened[:, : old.shape[1]] = old
    return {**state, PROJECTOR_INPUT: widened}


VOCABULARY_ROWS = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")


def partial_state(
    init_model: CeedVlaForActionPrediction, init_tokenizer, vla: CeedVlaForActionPrediction, tokenizer
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``vla``'s state dict with every tensor of ``init_model`` that fits copied in (``--init-partial``):
    same name and shape; the token embedding and output rows by token STRING (a vocabulary with
    other words has other ids); the image-token MLP's input widened as by :func:`widen_projector_input`.
    Returns the state and the names left at ``vla``'s fresh initialisation (e.g. a proprio layer of
    another width)."""
    old = widen_projector_input(init_model.state_dict(), vla)
    state = vla.state_dict()
    old_vocab, new_vocab = init_tokenizer.get_vocab(), tokenizer.get_vocab()
    fresh = []
    for name, tensor in state.items():
        source = old.get(name)
        if name.endswith(VOCABULARY_ROWS) and source is not None and source.shape[1:] == tensor.shape[1:]:
            rows = tensor.clone()
            shared = [(new_vocab[t], i) for t, i in old_vocab.items() if t in new_vocab and i < len(source)]
            for new_id, old_id in shared:
                rows[new_id] = source[old_id]
            state[name] = rows
            if len(shared) < len(new_vocab):
                fresh.append(f"{name} ({len(new_vocab) - len(shared)} new tokens)")
        elif source is not None and source.shape == tensor.shape:
            state[name] = source.clone()
        else:
            fresh.append(name)
    return state, fresh


@torch.no_grad()
def cache_vision_features(
    vla: CeedVlaForActionPrediction,
    tensors: TrainingTensors,
    image_spec: ImageSpec,
    batch_size: int = 512,
    desc: str = "vision features",
    progress: bool = True,
) -> None:
    """Run the (frozen) CNN stage once over every image of ``tensors`` and keep the result in
    ``tensors.vision_features``; later batches carry features instead of images."""
    from tqdm import tqdm

    encoder = vla.vision_encoder
    was_training = encoder.training
    encoder.eval()
    rows = []
    for start in tqdm(range(0, len(tensors), batch_size), desc=desc, unit="batch", disable=not progress):
        images = tensors.images[start : start + batch_size]
        rows.append(encoder.features(preprocess_images(images, image_spec)))
    encoder.train(was_training)
    tensors.vision_features = torch.cat(rows).float()


def build_metadata(config: TeacherConfig, data: TeacherData) -> CheckpointMetadata:
    """Joint data: joint_delta over its joints. End-effector data (a robot with a gripper): ee_delta
    of ``tool_tip`` in ``base_link`` (rpy, base frame, image pose) + a binary gripper (0 closed, 1
    open); the arm joints are the driven joints, every joint (gripper included) is proprio."""
    names = list(data.joint_names or JOINT_NAMES)
    layout: dict = {"action_space": "joint_delta", "joint_names": names, "action_dims": len(names)}
    if data.action_space == "ee_delta":
        layout = {
            "action_space": "ee_delta",
            "joint_names": names[: data.arm_joints],
            "action_dims": data.actions.shape[-1],
            "end_effector": EndEffectorSpec(base_frame="base_link", tip_frame="tool_tip", rotation="rpy",
                                            delta_frame="base", delta_reference="image_pose"),
            "gripper": GripperSpec(mode="binary", closed_value=0.0, open_value=1.0, threshold=0.5),
        }
    return CheckpointMetadata(
        name=config.name,
        **layout,
        chunk_len=config.chunk_len,
        dt=data.dt,
        action_norm=data.action_stats(),
        proprio_names=names,
        proprio_norm=data.proprio_stats(),
        n_bins=config.n_bins,
        image=ImageSpec(height=data.image_size, width=data.image_size, crop=data.image_crop),
        provenance=Provenance(
            role="teacher",
            command=config.command,
            seeds={"train": config.seed, "init": config.seed},
            data=", ".join(str(p) for p in config.data),
        ),
    )


@torch.no_grad()
def evaluate_batches(
    module: TeacherTrainingModule, tensors: TrainingTensors, spec: ImageSpec, device, size: int = 512
) -> dict[str, float]:
    """Losses on the first ``size`` held-out samples (no augmentation)."""
    module.eval()
    totals: dict[str, float] = {}
    count = min(size, len(tensors))
    for start in range(0, count, 128):
        index = torch.arange(start, min(count, start + 128))
        batch = make_batch(tensors, index, spec, 0, torch.Generator(), device)
        losses = module(**batch)
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(index)
    module.train()
    return {k: v / count for k, v in totals.items()}


def _split(data_paths, chunk_len, max_episodes, val_episodes, lerobot_map=()):
    """Train data (all but the last ``val_episodes`` of each file or LeRobot dataset) and validation data."""
    from ceed_vla_ros.datasets import FeatureMapping, open_dataset, source_crop, source_proprio_norm
    from ceed_vla_ros.training.dataset import build_teacher_data

    mapping = FeatureMapping.parse(lerobot_map)
    train, val = [], []
    for path in data_paths:
        with open_dataset(path, mapping) as reader:
            count = len(reader) if max_episodes is None else min(len(reader), max_episodes)
            n_val = min(val_episodes, max(0, count - 1))
            for i in range(count):
                (val if i >= count - n_val else train).append(reader[i])
    extra = {"proprio_norm": source_proprio_norm(data_paths, mapping), "image_crop": source_crop(data_paths, mapping)}
    return build_teacher_data(train, chunk_len, **extra), (build_teacher_data(val, chunk_len, **extra) if val else None)


def train(config: TeacherConfig) -> Path:
    """Train a teacher as ``config`` says; return the final checkpoint's folder (``<model-dir>/<name>``)."""
    from tqdm import tqdm

    run = TrainingRun(
        config.run_dir, config.model_dir, seed=config.seed, threads=config.threads, time_limit_min=config.time_limit_min
    )
    accelerator = run.accelerator
    run.save_config(config)
    final_path = config.model_dir / config.name
    accelerator.print(f"final checkpoint: {final_path}; run state and log: {config.run_dir}")

    data, val_data = _split(config.data, config.chunk_len, config.max_episodes, config.val_episodes, config.lerobot_map)
    metadata = build_metadata(config, data)
    tokenizer = build_tokenizer(all_instructions() + data.instructions, metadata.n_bins, metadata.prompt_template)
    model_config = make_model_config(
        tokenizer,
        metadata,
        hidden_size=config.hidden,
        num_layers=config.layers,
        num_heads=config.heads,
        num_image_tokens=config.image_tokens,
        num_keypoints=config.keypoints,
        vision_channels=config.vision_channels,
        vision_strides=config.vision_strides,
        vision_prompt_conditioning=config.vision_prompt_conditioning,
    )
    vla = new_model(model_config, config.seed).train()
    if config.init_checkpoint is not None:
        from ceed_vla_ros.checkpoint import load_checkpoint_path

        init = load_checkpoint_path(config.init_checkpoint)
        if config.init_partial:
            state, fresh = partial_state(init.model, init.tokenizer, vla, tokenizer)
            vla.load_state_dict(state, strict=True)
            accelerator.print(f"--init-partial: {len(state) - len(fresh)} tensors from {config.init_checkpoint}, "
                              f"fresh: {', '.join(fresh) or 'none'}")
        elif init.tokenizer.get_vocab() != tokenizer.get_vocab():
            raise SystemExit(f"--init-checkpoint {config.init_checkpoint}: vocabulary differs (--init-partial copies "
                             "what fits)")
        else:
            try:
                vla.load_state_dict(widen_projector_input(init.model.state_dict(), vla), strict=True)
            except RuntimeError as error:
                message = f"--init-checkpoint {config.init_checkpoint}: architecture differs ({error})"
                raise SystemExit(message) from None
        vla.train()
        seeds = {**metadata.provenance.seeds, "init": init.metadata.provenance.seeds.get("init", -1)}
        provenance = init.metadata.provenance
        notes = f"initialised from {init.metadata.checkpoint_id} ({provenance.command}; {provenance.notes})"
        metadata = dataclasses.replace(
            metadata,
            provenance=dataclasses.replace(
                metadata.provenance, parent=init.metadata.checkpoint_id, seeds=seeds, notes=notes
            ),
        )
        if config.init_norm:
            metadata = dataclasses.replace(
                metadata, action_norm=init.metadata.action_norm, proprio_norm=init.metadata.proprio_norm
            )
    vla.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    metadata = dataclasses.replace(metadata, vocab_size=model_config.text_config.vocab_size)
    action_tokenizer = ActionTokenizer(metadata.vocab_size, metadata.n_bins, metadata.action_norm, metadata.chunk_len)

    def tokenize(d: TeacherData) -> TrainingTensors:
        prompts = [encode_prompt(tokenizer, metadata, model_config, text) for text in d.instructions]
        return tokenize_teacher_data(d, prompts, action_tokenizer, metadata.proprio_norm, tokenizer.pad_token_id)

    tensors = tokenize(data)
    pool = torch.from_numpy(sample_pool(data.episode_index, config.oversample_first_steps, config.oversample_factor))
    val_tensors = tokenize(val_data) if val_data is not None else None
    accelerator.print(
        f"data: {data.num_episodes} episodes, {len(data)} samples, tasks {data.tasks}; "
        f"val {0 if val_data is None else len(val_data)} samples; sampling pool {len(pool)}; "
        f"params {sum(p.numel() for p in vla.parameters()):,}"
    )

    if config.freeze_vision:
        vla.freeze_vision()
        for part, part_tensors in (("train", tensors), ("val", val_tensors)):
            if part_tensors is not None:
                cache_vision_features(
                    vla, part_tensors, metadata.image, desc=f"{part} vision features", progress=config.progress
                )
        notes = "; ".join(filter(None, (metadata.provenance.notes, "CNN frozen (--freeze-vision)")))
        metadata = dataclasses.replace(metadata, provenance=dataclasses.replace(metadata.provenance, notes=notes))

    module = TeacherTrainingModule(
        vla, action_tokenizer.first_token_id, metadata.n_bins, config.first_action_weight, metadata.action_dims
    )
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.ndim >= 2]
    no_decay = [p for n, p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    module, optimizer = accelerator.prepare(module, optimizer)

    step = 0
    if config.resume:
        step = int(run.resume()["step"])

    def export_checkpoint(path: Path, *, final: bool, extra: dict | None = None) -> CheckpointMetadata:
        notes = export_notes(config, metadata, step, run.elapsed(), final=final, extra=extra)
        provenance = dataclasses.replace(metadata.provenance, notes=notes)
        vla = accelerator.unwrap_model(module).vla
        return export(vla, tokenizer, dataclasses.replace(metadata, provenance=provenance), path)

    def save_state() -> None:
        run.save_state(step, lambda: export_checkpoint(config.run_dir / RUN_CHECKPOINTS / config.name, final=False))

    plain = accelerator.unwrap_model(module)  # evaluation on the main process only: no DDP collectives
    share = run.process_slice(config.batch_size)
    bar = tqdm(
        total=config.steps,
        initial=step,
        disable=not config.progress or not accelerator.is_main_process,
        desc="train",
        unit="step",
    )
    running: dict[str, float] = {}
    module.train()
    while step < config.steps:
        if run.out_of_time(step):
            break
        index = pool[torch.from_numpy(batch_indices(len(pool), config.batch_size, config.seed, step)[share])]
        # one generator per global batch, the same on every process (draws are sliced per process)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step * 31)
        batch = make_batch(
            tensors, index, metadata.image, config.shift, generator, accelerator.device, config.proprio_noise,
            part=(share, config.batch_size),
        )
        if run.num_processes > 1:
            batch["aux_count"] = accelerator.reduce(batch["aux_mask"].sum(), reduction="sum") / run.num_processes
        lr = config.lr * lr_factor(step, config.warmup, config.steps, run.elapsed(), run.time_limit_s)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = module(**batch)
        loss = losses["ce"] + config.aux_weight * losses["aux"] + config.target_aux_weight * losses["target_aux"]
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        step += 1
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if step % config.log_every == 0 or step == config.steps:
            count = config.log_every if step % config.log_every == 0 else step % config.log_every
            record = {"step": step, "lr": lr, "seconds": round(run.elapsed(), 1)}
            local = {k: v / count for k, v in running.items()}
            running = {}
            record |= {k: round(v, 4) for k, v in run.mean_over_processes(local).items()}
            if val_tensors is not None and step % (config.log_every * 4) == 0 and accelerator.is_main_process:
                record |= {
                    f"val_{k}": round(v, 4)
                    for k, v in evaluate_batches(plain, val_tensors, metadata.image, accelerator.device).items()
                }
            run.log(record)
            if accelerator.is_main_process:
                bar.set_postfix(ce=record["ce"], acc=record["accuracy"], aux=record["aux"])
        bar.update(1)
        if step % config.save_every == 0:
            save_state()
    bar.close()
    save_state()
    if accelerator.is_main_process:
        val = (
            evaluate_batches(plain, val_tensors, metadata.image, accelerator.device) if val_tensors is not None else {}
        )
        saved = export_checkpoint(final_path, final=True, extra=val)
        accelerator.print(
            f"saved {final_path} ({saved.checkpoint_id}) after {step} steps in {run.elapsed() / 60:.1f} min; val {val}"
        )
    run.close()
    return final_path


def export_notes(
    config: TeacherConfig,
    metadata: CheckpointMetadata,
    step: int,
    seconds: float,
    *,
    final: bool,
    extra: dict | None = None,
) -> str:
    """The provenance notes of an exported teacher: the recipe, the time taken, held-out losses."""
    notes = (
        f"{'final' if final else 'intermediate'}: {step} steps, batch {config.batch_size}, lr {config.lr}, "
        f"{seconds / 60:.1f} min train wall time, aux {config.aux_weight}, target_aux {config.target_aux_weight}, "
        f"shift {'unused (CNN frozen)' if config.freeze_vision else f'{config.shift}px'}, "
        f"proprio noise {config.proprio_noise}, first-action weight {config.first_action_weight}, "
        f"oversampled first {config.oversample_first_steps} steps x{config.oversample_factor}"
    )
    if extra:
        notes += "; held-out " + ", ".join(f"{k} {v:.4f}" for k, v in extra.items())
    if metadata.provenance.notes:
        notes += "; " + metadata.provenance.notes
    return notes


# --------------------------------------------------------------------------------------------
# Command line (``ceed-vla train``): argparse -> TeacherConfig -> train()
# --------------------------------------------------------------------------------------------

_D = TeacherConfig  # the defaults of every option


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--name", default=_D.name, help="checkpoint name (folder in --model-dir)")
    add_model_dir_argument(parser, "where the final checkpoint goes")
    parser.add_argument("--run-dir", type=Path, default=_D.run_dir, help="run state / logs (outside models/)")
    parser.add_argument("--resume", action="store_true", help="continue from the last state in --run-dir")
    parser.add_argument("--steps", type=int, default=_D.steps, help="optimizer steps")
    parser.add_argument(
        "--time-limit-min", type=float, default=_D.time_limit_min, help="stop (and save) after this many minutes"
    )
    parser.add_argument("--batch-size", type=int, default=_D.batch_size, help="global batch size")
    parser.add_argument("--lr", type=float, default=_D.lr)
    parser.add_argument("--weight-decay", type=float, default=_D.weight_decay)
    parser.add_argument("--warmup", type=int, default=_D.warmup)
    parser.add_argument("--chunk-len", type=int, default=_D.chunk_len, help="actions per chunk (k)")
    parser.add_argument("--n-bins", type=int, default=_D.n_bins)
    parser.add_argument("--hidden", type=int, default=_D.hidden, help="decoder hidden size")
    parser.add_argument("--layers", type=int, default=_D.layers, help="decoder layers")
    parser.add_argument("--heads", type=int, default=_D.heads)
    parser.add_argument("--image-tokens", type=int, default=_D.image_tokens)
    parser.add_argument("--keypoints", type=int, default=_D.keypoints)
    parser.add_argument("--vision-channels", type=int, nargs="+", default=list(_D.vision_channels))
    parser.add_argument(
        "--vision-prompt-conditioning",
        action="store_true",
        help="the image-token MLP also reads the prompt's mean text embedding (instruction-aware image tokens); "
        "with an --init-checkpoint without it, the MLP is widened with zero weights (same function at step 0)",
    )
    parser.add_argument("--vision-strides", type=int, nargs="+", default=list(_D.vision_strides))
    parser.add_argument("--aux-weight", type=float, default=_D.aux_weight, help="keypoint aux loss weight (0: off)")
    parser.add_argument(
        "--target-aux-weight", type=float, default=_D.target_aux_weight, help="named-cube aux loss weight (0: off)"
    )
    parser.add_argument("--shift", type=int, default=_D.shift, help="max random image shift (px)")
    parser.add_argument(
        "--proprio-noise",
        type=float,
        default=_D.proprio_noise,
        help="std of Gaussian noise on the normalised proprio input (training only; against copycat shortcuts)",
    )
    parser.add_argument(
        "--init-checkpoint",
        type=Path,
        default=_D.init_checkpoint,
        help="initialise the VLA weights from this checkpoint folder (same architecture/vocab); aux heads start fresh",
    )
    parser.add_argument(
        "--init-norm",
        action="store_true",
        help="with --init-checkpoint: keep its action/proprio q01/q99 statistics instead of recomputing them from "
        "--data (the token bins keep their meaning when the new data, e.g. noise-injected demos, is wider)",
    )
    parser.add_argument(
        "--init-partial",
        action="store_true",
        help="with --init-checkpoint: copy only what fits (tensors of the same name and shape; token embedding and "
        "output rows by token string), the rest starts fresh: for another robot (action dims, proprio) or "
        "vocabulary, e.g. reusing a trained CNN with --freeze-vision",
    )
    parser.add_argument(
        "--first-action-weight",
        type=float,
        default=_D.first_action_weight,
        help="weight of the cross-entropy of the chunk's FIRST action's tokens relative to the others (1: plain mean); "
        "the first action is the one executed next and the one that needs the image most",
    )
    parser.add_argument(
        "--freeze-vision",
        action="store_true",
        help="with --init-checkpoint: keep its CNN (keypoints + pooled features) fixed, compute its features once "
        "per image and train only the rest (projector, proprio, decoder): much cheaper steps; --shift is unused",
    )
    parser.add_argument(
        "--oversample-first-steps",
        type=int,
        default=_D.oversample_first_steps,
        help="oversample the first N steps of every episode (the home-pose decision) by --oversample-factor",
    )
    parser.add_argument(
        "--oversample-factor", type=int, default=_D.oversample_factor, help="copies of each oversampled sample"
    )
    parser.add_argument(
        "--max-episodes", type=int, default=_D.max_episodes, help="episodes per data file (default all)"
    )
    parser.add_argument(
        "--val-episodes", type=int, default=_D.val_episodes, help="held-out episodes per file for val losses"
    )
    parser.add_argument("--seed", type=int, default=_D.seed)
    parser.add_argument("--save-every", type=int, default=_D.save_every, help="steps between saved states")
    parser.add_argument("--log-every", type=int, default=_D.log_every)
    parser.add_argument("--threads", type=int, default=_D.threads, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> TeacherConfig:
    """The :class:`TeacherConfig` of parsed ``ceed-vla train`` arguments (bad values: SystemExit)."""
    command = getattr(args, "command", None) or getattr(args, "command_line", "ceed-vla train")  # from tools.cli
    try:
        return TeacherConfig.from_args(args, model_dir=model_dir_argument(args.model_dir), command=command)
    except ValueError as error:
        raise SystemExit(f"ceed-vla train: {error}") from None


def cli_main(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    train(config_from_args(args))
    return 0
