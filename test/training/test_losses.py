"""Consistency and mixed-label AR losses on hand-made logits."""

from __future__ import annotations

import pytest
import torch

from ceed_vla_ros.training.losses import (
    ar_loss,
    block_prediction_logits,
    ceed_loss,
    consistency_loss,
    mixed_labels,
)


def test_block_prediction_logits_are_the_positions_before_each_block_token():
    prompt_len, block_len, vocab = 5, 3, 7
    logits = torch.arange(2 * (prompt_len + block_len) * vocab, dtype=torch.float32).reshape(2, -1, vocab)
    block = block_prediction_logits(logits, prompt_len, block_len)
    assert block.shape == (2, block_len, vocab)
    # block token 0 is predicted at the last prompt position, token n-1 at the second-to-last block position
    assert torch.equal(block[:, 0], logits[:, prompt_len - 1])
    assert torch.equal(block[:, -1], logits[:, prompt_len + block_len - 2])


def test_consistency_loss_is_zero_when_the_state_is_the_fixed_point():
    logits = torch.randn(4, 6, 11, generator=torch.Generator().manual_seed(0))
    assert consistency_loss(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-7)


def test_consistency_loss_is_positive_elsewhere_and_only_trains_the_state_branch():
    generator = torch.Generator().manual_seed(1)
    state = torch.randn(4, 6, 11, generator=generator, requires_grad=True)
    fixed_point = torch.randn(4, 6, 11, generator=generator, requires_grad=True)
    loss = consistency_loss(state, fixed_point)
    assert loss.item() > 0.0
    loss.backward()
    assert state.grad is not None and state.grad.abs().sum() > 0
    assert fixed_point.grad is None  # stop-gradient on the target


def test_consistency_loss_matches_the_kl_definition():
    generator = torch.Generator().manual_seed(2)
    state, fixed_point = torch.randn(2, 3, 5, generator=generator), torch.randn(2, 3, 5, generator=generator)
    p = fixed_point.softmax(-1)
    expected = (p * (p.log() - state.log_softmax(-1))).sum(-1).mean()
    assert consistency_loss(state, fixed_point).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mixed_labels_switch_to_ground_truth_exactly_past_the_l1_threshold():
    teacher_tokens = torch.tensor([[1, 2], [3, 4], [5, 6]])
    truth_tokens = torch.tensor([[9, 9], [8, 8], [7, 7]])
    truth_actions = torch.zeros(3, 2)
    threshold = 0.25
    # mean |difference| per sample: just below, exactly at, just above the threshold
    teacher_actions = torch.tensor([[0.2, 0.29], [0.25, -0.25], [0.25, 0.2502]])
    labels, uses_truth = mixed_labels(teacher_tokens, truth_tokens, teacher_actions, truth_actions, threshold)
    assert uses_truth.tolist() == [False, False, True]
    assert labels.tolist() == [[1, 2], [3, 4], [7, 7]]


def test_ar_loss_is_cross_entropy_of_the_labels():
    logits = torch.full((1, 2, 4), -10.0)
    logits[0, 0, 3] = logits[0, 1, 1] = 10.0
    assert ar_loss(logits, torch.tensor([[3, 1]])).item() < 1e-6
    assert ar_loss(logits, torch.tensor([[0, 0]])).item() > 10.0


def test_ceed_loss_adds_the_weighted_ar_term():
    generator = torch.Generator().manual_seed(3)
    state, fixed_point = torch.randn(2, 3, 5, generator=generator), torch.randn(2, 3, 5, generator=generator)
    labels = torch.tensor([[0, 1, 2], [3, 4, 0]])
    for weight in (0.0, 1.0, 10.0):
        loss = ceed_loss(state, fixed_point, labels, ar_weight=weight)
        assert loss.total.item() == pytest.approx(loss.consistency + weight * loss.ar, rel=1e-6)
