"""Action tokenizer: OpenVLA-style bins, exact id mapping, normalisation, round trips, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ceed_vla_ros.action_tokenizer import ActionTokenizer, NormStats

VOCAB = 300
BINS = 256


def make_tokenizer(chunk_len: int = 5, mask=(True, True, True, False)) -> ActionTokenizer:
    dims = len(mask)
    stats = NormStats(q01=(-0.2,) * dims, q99=(0.4,) * dims, mask=tuple(mask))
    return ActionTokenizer(VOCAB, BINS, stats, chunk_len)


def test_token_range_is_the_last_n_bins_ids():
    tok = make_tokenizer()
    assert tok.token_range == (VOCAB - BINS, VOCAB)
    assert tok.first_token_id == 44
    assert tok.block_len == 20


def test_exact_id_bin_mapping():
    tok = make_tokenizer(chunk_len=1, mask=(False,))
    tokens = tok.encode(np.array([[-1.0]]))
    assert tokens.tolist() == [VOCAB - 1]  # bin 0 -> last id
    assert tok.encode(np.array([[1.0]])).tolist() == [VOCAB - BINS]  # bin n_bins-1 -> first action id
    assert tok.encode(np.array([[0.0]])).tolist() == [VOCAB - 1 - 128]  # floor(0.5 * 256) = 128
    assert tok.decode([VOCAB - 1 - 128])[0, 0] == pytest.approx(-1 + 128.5 * 2 / BINS)


def test_round_trip_within_half_a_bin_in_range():
    tok = make_tokenizer()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.2, 0.4, (5, 4))
    actions[:, 3] = rng.uniform(-1, 1, 5)  # unnormalised (masked-out) dim lives in [-1, 1]
    decoded = tok.decode(tok.encode(actions))
    half_bin = 1.0 / BINS
    scale = np.array([0.3, 0.3, 0.3, 1.0])  # (q99 - q01) / 2 for normalised dims
    assert np.all(np.abs(decoded - actions) <= half_bin * scale + 1e-12)


def test_out_of_range_actions_are_clipped():
    tok = make_tokenizer(chunk_len=1)
    actions = np.array([[5.0, -5.0, 0.4, 3.0]])
    decoded = tok.decode(tok.encode(actions))
    assert decoded[0, 0] == pytest.approx(0.4, abs=0.6 / BINS)
    assert decoded[0, 1] == pytest.approx(-0.2, abs=0.6 / BINS)
    assert decoded[0, 3] == pytest.approx(1.0, abs=1.0 / BINS)  # masked dim: clipped to [-1, 1] only


def test_masked_dimension_is_not_normalised():
    stats = NormStats(q01=(0.0, 10.0), q99=(1.0, 20.0), mask=(True, False))
    normalized = stats.normalize(np.array([0.5, 0.5]))
    assert normalized.tolist() == [0.0, 0.5]
    assert stats.unnormalize(normalized).tolist() == [0.5, 0.5]


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (3, 4), elements=st.floats(-10, 10)))
def test_round_trip_property(actions):
    tok = make_tokenizer(chunk_len=3)
    tokens = tok.encode(actions)
    assert tokens.shape == (12,)
    assert np.all((tokens >= tok.first_token_id) & (tokens < VOCAB))
    decoded = tok.decode(tokens)
    clipped = np.clip(actions, -0.2, 0.4)
    clipped[:, 3] = np.clip(actions[:, 3], -1, 1)
    scale = np.array([0.3, 0.3, 0.3, 1.0])
    assert np.all(np.abs(decoded - clipped) <= scale / BINS + 1e-9)
    assert np.array_equal(tok.encode(decoded), tokens)  # bin centres re-encode to the same tokens


def test_decode_rejects_non_action_tokens():
    tok = make_tokenizer(chunk_len=1)
    good = tok.encode(np.zeros((1, 4)))
    for bad_id in (tok.first_token_id - 1, VOCAB, -1, 0):
        bad = good.copy()
        bad[2] = bad_id
        with pytest.raises(ValueError, match="not an action token"):
            tok.decode(bad)


def test_decode_rejects_wrong_token_count():
    tok = make_tokenizer(chunk_len=2)
    tokens = tok.encode(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="expected 8 action tokens"):
        tok.decode(tokens[:-1])
    with pytest.raises(ValueError, match="expected 8 action tokens"):
        tok.decode(np.concatenate([tokens, tokens[:1]]))


def test_encode_rejects_wrong_shape_and_nan():
    tok = make_tokenizer(chunk_len=2)
    with pytest.raises(ValueError, match="shape"):
        tok.encode(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        tok.encode(np.full((2, 4), np.nan))


def test_norm_stats_validation_and_from_data():
    with pytest.raises(ValueError, match="same length"):
        NormStats((0.0,), (1.0, 2.0), (True,))
    with pytest.raises(ValueError, match="greater than q01"):
        NormStats((1.0,), (1.0,), (True,))
    data = np.random.default_rng(1).normal(size=(1000, 2))
    data[:, 1] = 3.0  # constant dimension gets a unit range instead of a zero division
    stats = NormStats.from_data(data)
    assert stats.q01[0] < 0 < stats.q99[0]
    assert stats.q99[1] - stats.q01[1] == pytest.approx(1.0)
    assert NormStats.from_dict(stats.to_dict()) == stats


def test_a_stack_of_chunks_encodes_like_each_chunk_and_decodes_to_normalised_bin_centres():
    tok = make_tokenizer(chunk_len=2)
    chunks = np.random.default_rng(0).uniform(-0.5, 0.6, size=(3, 2, 4))
    tokens = tok.encode(chunks)
    assert tokens.shape == (3, 8)
    for chunk, row in zip(chunks, tokens):
        np.testing.assert_array_equal(tok.encode(chunk), row)
        np.testing.assert_array_equal(tok.stats.unnormalize(tok.normalized_actions(row)), tok.decode(row))
    assert tok.normalized_actions(tokens).shape == (3, 2, 4)
    with pytest.raises(ValueError):
        tok.normalized_actions(tokens[:, :-1])
    with pytest.raises(ValueError):
        tok.normalized_actions(np.zeros(8, dtype=np.int64))  # not action tokens
