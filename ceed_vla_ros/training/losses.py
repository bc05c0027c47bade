"""The two losses of CEED-VLA consistency distillation, on plain logits (no model, no data loading).

Shapes: B samples, n block positions (the action-token chunk), V vocabulary entries. ``block
logits`` are the logits that PREDICT the n block tokens: for a causal LM run on
``[prompt (L tokens)][block (n tokens)]`` they sit at positions L-1 .. L+n-2
(:func:`block_prediction_logits`).

* Consistency loss (global form, as in CLLM/CEED-VLA): from a Jacobi state Y the model should predict
  the fixed point Y* in one step:
  ``L_C = mean_i KL( q_sg(. | Y*_<i, x) || q_theta(. | Y_<i, x) )``,
  where q_sg is the model's own distribution at the fixed point with the gradient stopped.
  It is exactly zero when Y == Y*.
* Mixed-label AR loss: ordinary next-token cross-entropy on the fixed-point input whose labels are
  the teacher's fixed point Y*, except for samples where the teacher's decoded actions are further
  than ``l1_threshold`` (mean absolute difference per action element, in normalised [-1, 1] action
  units) from the ground truth: there the labels are the ground-truth tokens.
* Total: ``L = L_C + ar_weight * L_AR`` (paper: ar_weight = 1).

Both terms are means over block positions (and samples), so ``ar_weight`` balances per-token terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def block_prediction_logits(logits: torch.Tensor, prompt_len: int, block_len: int) -> torch.Tensor:
    """Logits (B, n, V) predicting the block tokens of a (B, L + n, V) causal-LM output."""
    if logits.shape[1] < prompt_len + block_len - 1 or prompt_len < 1:
        raise ValueError(f"logits of length {logits.shape[1]} cannot hold prompt {prompt_len} + block {block_len}")
    return logits[:, prompt_len - 1 : prompt_len - 1 + block_len]


def consistency_loss(state_logits: torch.Tensor, fixed_point_logits: torch.Tensor) -> torch.Tensor:
    """Mean over samples and positions of KL(softmax(fixed point, stop-grad) || softmax(state)).

    Args:
        state_logits: (B, n, V) block logits with the Jacobi state Y as input (gradient flows).
        fixed_point_logits: (B, n, V) block logits with the fixed point Y* as input (detached here).
    """
    if state_logits.shape != fixed_point_logits.shape:
        raise ValueError(f"shape mismatch: {tuple(state_logits.shape)} vs {tuple(fixed_point_logits.shape)}")
    target_log_probs = F.log_softmax(fixed_point_logits.detach().float(), dim=-1)
    state_log_probs = F.log_softmax(state_logits.float(), dim=-1)
    kl = F.kl_div(state_log_probs, target_log_probs, log_target=True, reduction="none").sum(-1)
    return kl.mean()


def mixed_labels(
    teacher_tokens: torch.Tensor,
    ground_truth_tokens: torch.Tensor,
    teacher_actions: torch.Tensor,
    ground_truth_actions: torch.Tensor,
    l1_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (B, n): the teacher's fixed point, or the ground truth where the teacher is off.

    Args:
        teacher_tokens, ground_truth_tokens: (B, n) token ids.
        teacher_actions, ground_truth_actions: (B, ...) the same chunks as normalised actions.
        l1_threshold: a sample takes the ground-truth labels when the mean absolute difference
            of its actions is strictly greater than this.

    Returns:
        (labels, uses_ground_truth) with uses_ground_truth a (B,) bool tensor.
    """
    if teacher_tokens.shape != ground_truth_tokens.shape:
        raise ValueError("teacher and ground-truth token blocks differ in shape")
    distance = (teacher_actions - ground_truth_actions).abs().flatten(1).mean(dim=1)
    uses_ground_truth = distance > l1_threshold
    labels = torch.where(uses_ground_truth[:, None], ground_truth_tokens, teacher_tokens)
    return labels, uses_ground_truth


def ar_loss(block_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of (B, n, V) block logits against (B, n) labels."""
    return F.cross_entropy(block_logits.float().flatten(0, 1), labels.flatten())


@dataclass
class CeedLoss:
    """Total loss and its parts (detached floats for logging)."""

    total: torch.Tensor
    consistency: float
    ar: float


def ceed_loss(
    state_logits: torch.Tensor,
    fixed_point_logits: torch.Tensor,
    labels: torch.Tensor,
    ar_weight: float = 1.0,
) -> CeedLoss:
    """``L_C + ar_weight * L_AR``; ``fixed_point_logits`` carry the gradient of the AR term."""
    consistency = consistency_loss(state_logits, fixed_point_logits)
    autoregressive = ar_loss(fixed_point_logits, labels)
    total = consistency + ar_weight * autoregressive
    return CeedLoss(total=total, consistency=float(consistency.detach()), ar=float(autoregressive.detach()))
