"""Batched Jacobi trajectory collection against batch-1 decoding, the file layout and the CLI."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch

from ceed_vla_ros.decoding import HFCausalLMAdapter, TokenRange, decode
from ceed_vla_ros.sim.recorder import DatasetReader
from ceed_vla_ros.tools import cli
from ceed_vla_ros.training import trajectories as T

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture
def world(distill_world) -> dict:
    return distill_world


def _batch1(checkpoint, samples, row, initial, mode="jacobi"):
    inputs = samples.model_batch(torch.tensor([row]))
    return decode(
        HFCausalLMAdapter(checkpoint.model), samples.prompt(row),
        {"pixel_values": inputs["pixel_values"], "proprio": inputs["proprio"]}, mode=mode,
        block_len=checkpoint.metadata.block_len, allowed=TokenRange(*checkpoint.action_tokenizer.token_range),
        initial_block=initial, record_trajectory=True,
    )


def test_batched_trajectories_equal_batch1_trajectories(world):
    teacher, samples, trajectories = world["teacher"], world["samples"], world["trajectories"]
    assert len(set(samples.prompt_lengths.tolist())) == 2  # left padding is exercised
    assert len(trajectories) == len(samples) > 16
    lengths = set()
    for row in range(len(samples)):
        initial = torch.from_numpy(trajectories.trajectory(row)[0].astype(np.int64))
        # the stored Y^0 is the seeded random_prompt_tokens draw with the teacher's first token
        drawn = T.initial_block(samples, row, teacher.metadata.block_len, 0, row)
        assert torch.equal(initial[1:], drawn[1:])
        assert set(drawn.tolist()) <= set(samples.prompt(row).reshape(-1).tolist())
        reference = torch.stack(_batch1(teacher, samples, row, drawn).trajectory).numpy()
        np.testing.assert_array_equal(trajectories.trajectory(row), reference, err_msg=f"sample {row}")
        lengths.add(reference.shape[0])
    assert max(lengths) > 2  # real multi-iteration trajectories


def test_batch_composition_does_not_change_trajectories(world):
    teacher, samples, trajectories = world["teacher"], world["samples"], world["trajectories"]
    again = T.collect(teacher, samples, batch_size=5, seed=0, progress=False)
    np.testing.assert_array_equal(again.states, trajectories.states)
    np.testing.assert_array_equal(again.num_states, trajectories.num_states)
    other_seed = T.collect(teacher, samples, batch_size=8, seed=1, progress=False)
    assert not np.array_equal(
        other_seed.states[other_seed.state_offset], trajectories.states[trajectories.state_offset]
    )


@torch.no_grad()
def test_last_state_is_a_fixed_point_equal_to_ar_decoding(world):
    teacher, samples, trajectories = world["teacher"], world["samples"], world["trajectories"]
    allowed = TokenRange(*teacher.action_tokenizer.token_range)
    assert trajectories.converged.all()
    for row in range(len(samples)):
        fixed = torch.from_numpy(trajectories.fixed_point[row].astype(np.int64))
        np.testing.assert_array_equal(trajectories.trajectory(row)[-1], trajectories.fixed_point[row])
        # one more Jacobi iteration (full forward over [prompt + Y*]) does not change Y*
        inputs = samples.model_batch(torch.tensor([row]))
        prompt = samples.prompt(row)
        logits = teacher.model(
            input_ids=torch.cat((prompt, fixed[None]), 1),
            pixel_values=inputs["pixel_values"],
            proprio=inputs["proprio"],
        ).logits[0, prompt.shape[1] - 1 : -1, allowed.start : allowed.stop]
        assert torch.equal(logits.argmax(-1) + allowed.start, fixed), f"sample {row}"
        ar = _batch1(teacher, samples, row, fixed, mode="ar").tokens
        assert torch.equal(ar, fixed), f"sample {row}"


def test_stored_labels_and_references(world):
    teacher, samples, trajectories = world["teacher"], world["samples"], world["trajectories"]
    tokenizer = teacher.action_tokenizer
    path = world["root"] / "roundtrip.h5"
    T.write_trajectories(path, trajectories)
    loaded = T.read_trajectories(path)
    for name in T.TrajectorySet.SAMPLE_FIELDS + ("states",):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(trajectories, name), err_msg=name)
    assert loaded.attrs["teacher_checkpoint_id"] == teacher.metadata.checkpoint_id
    assert int(loaded.attrs["num_states"]) == loaded.states.shape[0] == int(loaded.num_states.sum())
    # references point at the right demonstration rows; ground truth = the tokenised action chunk
    readers = [DatasetReader(p) for p in world["files"]]
    try:
        for row in range(len(loaded)):
            f, e, s = int(loaded.file_index[row]), int(loaded.episode[row]), int(loaded.step[row])
            episode = readers[f][e]
            np.testing.assert_array_equal(samples.tensors.images[row].numpy(), episode.images[s])
            t_next = np.minimum(s + np.arange(teacher.metadata.chunk_len), episode.num_steps - 1)
            chunk = episode.joint_target[t_next] - episode.joint_positions[s]
            np.testing.assert_array_equal(loaded.ground_truth[row], tokenizer.encode(chunk))
            truth = np.clip(teacher.metadata.action_norm.normalize(chunk), -1, 1)
            np.testing.assert_allclose(loaded.ground_truth_actions[row], truth, atol=1e-6)
            teacher_norm = tokenizer.stats.normalize(tokenizer.decode(loaded.fixed_point[row]))
            np.testing.assert_allclose(loaded.teacher_actions[row], teacher_norm, atol=1e-5)
            assert loaded.l1[row] == pytest.approx(np.abs(teacher_norm - truth).mean(), abs=1e-5)
    finally:
        for reader in readers:
            reader.close()
    # the same samples can be re-loaded from the references alone (what distill does)
    again = T.load_samples(world["files"], teacher, refs=loaded.refs())
    assert torch.equal(again.tensors.images, samples.tensors.images)
    assert torch.equal(again.tensors.action_tokens, samples.tensors.action_tokens)


def test_cli_subsamples_and_writes_the_documented_layout(world, capsys):
    out = world["root"] / "cli.h5"
    code = cli.main(
        [
            "collect-trajectories",
            "--teacher",
            "tiny_teacher",
            "--model-dir",
            str(world["root"] / "models"),
            "--data",
            *map(str, world["files"]),
            "--out",
            str(out),
            "--stride",
            "2",
            "--max-samples",
            "7",
            "--batch-size",
            "4",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == T.FORMAT_NAME and f.attrs["num_samples"] == 7
        assert json.loads(f.attrs["data_files"]) == [str(p) for p in world["files"]]
        assert f["states"].shape[1] == world["teacher"].metadata.block_len
        assert set(f["samples"].keys()) == set(T.TrajectorySet.SAMPLE_FIELDS)
    loaded = T.read_trajectories(out)
    total = len(world["samples"])
    global_rows = np.arange(0, total, 2)
    kept = {(int(f), int(e), int(s)) for f, e, s in zip(*loaded.refs())}
    all_refs = list(zip(world["samples"].file_index, world["samples"].episode, world["samples"].step))
    assert kept <= {tuple(int(v) for v in all_refs[r]) for r in global_rows}
