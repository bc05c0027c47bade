"""Checkpoint folders: round trip, metadata schema, and one CheckpointError per kind of bad checkpoint."""

import dataclasses
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ceed_vla_ros.action_tokenizer import NormStats
from ceed_vla_ros.checkpoint import (
    REQUIRED_FILES,
    build_tiny_checkpoint,
    load_checkpoint,
    load_checkpoint_path,
    save_checkpoint,
)
from ceed_vla_ros.metadata import METADATA_FILE, CheckpointError, CheckpointMetadata, Provenance
from ceed_vla_ros.tools import cli

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SIZES = dict(hidden_size=32, vision_channels=(8,), vision_strides=(2,), num_keypoints=4, vision_mlp_hidden=16)


def make_metadata(name: str = "tiny") -> CheckpointMetadata:
    return CheckpointMetadata(
        name=name, action_space="joint_delta", joint_names=["j1", "j2"], action_dims=2, chunk_len=3, dt=0.2,
        action_norm=NormStats((-0.1, -0.2), (0.1, 0.2), (True, False)),
        proprio_names=["j1", "j2"], proprio_norm=NormStats((-1.0, -1.0), (1.0, 1.0), (True, True)),
        n_bins=16, provenance=Provenance(role="teacher", command="pytest", data="none", seeds={"train": 1}),
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("models")
    build_tiny_checkpoint(model_dir / "tiny", make_metadata(), seed=4, instructions=["reach the cube"], **SIZES)
    return model_dir / "tiny"


@pytest.fixture
def checkpoint_dir(source, tmp_path) -> Path:
    """A fresh copy of the valid checkpoint to break."""
    target = tmp_path / "models" / "tiny"
    shutil.copytree(source, target)
    return target


def rewrite_metadata(path: Path, **changes) -> None:
    data = yaml.safe_load((path / METADATA_FILE).read_text())
    data.update(changes)
    (path / METADATA_FILE).write_text(yaml.safe_dump(data))


def test_round_trip_is_bit_identical(tmp_path):
    built = build_tiny_checkpoint(tmp_path / "tiny", make_metadata(), seed=7, instructions=["reach the cube"], **SIZES)
    loaded = load_checkpoint(tmp_path, "tiny")
    assert loaded.metadata == built.metadata
    assert loaded.metadata.checkpoint_id == f"tiny-{built.metadata.weights_sha256[:8]}"
    assert (
        loaded.metadata.vocab_size == len(loaded.tokenizer) == 6 + 11 + 2 + 16
    )  # specials, template words, new instruction words, bins
    built_state, loaded_state = built.model.state_dict(), loaded.model.state_dict()
    assert built_state.keys() == loaded_state.keys()
    for key in built_state:
        assert torch.equal(built_state[key], loaded_state[key]), key
    assert loaded.tokenizer.get_vocab() == built.tokenizer.get_vocab()
    assert loaded.prompt_ids("reach the cube") == built.prompt_ids("reach the cube")
    assert not loaded.model.training
    # saving the loaded checkpoint again reproduces the same weights file
    again = save_checkpoint(loaded.model, loaded.tokenizer, loaded.metadata, tmp_path / "copy" / "tiny")
    assert again.weights_sha256 == built.metadata.weights_sha256


def test_metadata_file_is_the_documented_schema(source):
    data = yaml.safe_load((source / METADATA_FILE).read_text())
    assert data["format_version"] == 1
    assert data["action_space"] == "joint_delta" and data["joint_names"] == ["j1", "j2"]
    assert data["action_tokens"]["first_id"] == data["vocab_size"] - 16
    assert data["action_tokens"]["last_id"] == data["vocab_size"] - 1
    assert data["prompt_template"] == "In: What action should the robot take to {instruction}?\nOut:"
    assert data["provenance"]["seeds"] == {"train": 1, "init": 4}
    assert set(data["image"]) == {"height", "width", "crop", "resize", "channel_order", "mean", "std"}


@pytest.mark.parametrize("missing", REQUIRED_FILES)
def test_missing_file(checkpoint_dir, missing):
    (checkpoint_dir / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        load_checkpoint_path(checkpoint_dir)


def test_truncated_weights(checkpoint_dir):
    weights = checkpoint_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        load_checkpoint_path(checkpoint_dir)


def test_unreadable_safetensors_even_with_a_matching_hash(checkpoint_dir):
    import hashlib

    weights = checkpoint_dir / "model.safetensors"
    weights.write_bytes(b"\xff" * 64)
    rewrite_metadata(checkpoint_dir, weights_sha256=hashlib.sha256(b"\xff" * 64).hexdigest())
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors"):
        load_checkpoint_path(checkpoint_dir)


class PlantedPayload:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("planted", ["pytorch_model.bin", "extra/optimizer.pt", "stats.pkl"])
def test_pickles_are_refused_and_never_loaded(checkpoint_dir, tmp_path, planted):
    marker = tmp_path / "pickle-was-executed"
    target = checkpoint_dir / planted
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(pickle.dumps(PlantedPayload(marker)))
    with pytest.raises(CheckpointError, match=rf"{Path(planted).name}.*pickle"):
        load_checkpoint_path(checkpoint_dir)
    assert not marker.exists()
    assert (checkpoint_dir / "model.safetensors").exists()  # refused although safetensors is present


def test_remote_code_config_is_refused(checkpoint_dir):
    config = json.loads((checkpoint_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (checkpoint_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: auto_map"):
        load_checkpoint_path(checkpoint_dir)


def test_other_model_type_is_refused(checkpoint_dir):
    config = json.loads((checkpoint_dir / "config.json").read_text())
    config["model_type"] = "llava"
    (checkpoint_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: model_type 'llava'"):
        load_checkpoint_path(checkpoint_dir)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(vocab_size=99, action_tokens=None), "vocab_size 99 != model vocab_size"),
        (dict(n_bins=20, action_tokens=None), "action tokens must be the last"),
        (dict(action_tokens={"first_id": 1, "last_id": 2, "mapping": ""}), "action_tokens ids"),
        (dict(proprio_names=["j1"], proprio_norm={"q01": [0.0], "q99": [1.0], "mask": [True]}), "proprio_dim 2"),
        (dict(joint_names=["j1"]), "action_dims"),
        (dict(action_space="cartesian"), "action_space"),
        (dict(image={"height": 32, "width": 32}), "image 32x32"),
        (dict(name="other"), "folder name"),
        (dict(surprise=1), "unknown keys"),
        (dict(weights_sha256=""), "weights_sha256"),
    ],
)
def test_metadata_that_disagrees(checkpoint_dir, changes, message):
    data = yaml.safe_load((checkpoint_dir / METADATA_FILE).read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    (checkpoint_dir / METADATA_FILE).write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint_path(checkpoint_dir)
    assert "ceed_vla.yaml" in str(error.value) or "model.safetensors" in str(error.value)


def test_garbage_yaml(checkpoint_dir):
    (checkpoint_dir / METADATA_FILE).write_text("name: [unclosed\n")
    with pytest.raises(CheckpointError, match=r"ceed_vla\.yaml: cannot read YAML"):
        load_checkpoint_path(checkpoint_dir)


@pytest.mark.parametrize("name", ["../tiny", "..", ".", "a/b", "/etc", "", "tiny/../../x", ".hidden"])
def test_names_that_escape_the_model_dir(checkpoint_dir, name):
    with pytest.raises(CheckpointError, match="invalid checkpoint name"):
        load_checkpoint(checkpoint_dir.parent, name)


def test_symlink_out_of_the_model_dir(checkpoint_dir, tmp_path):
    model_dir = tmp_path / "other_models"
    model_dir.mkdir()
    (model_dir / "link").symlink_to(checkpoint_dir, target_is_directory=True)
    with pytest.raises(CheckpointError, match="outside the model dir"):
        load_checkpoint(model_dir, "link")


def test_unknown_name(checkpoint_dir):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(checkpoint_dir.parent, "nope")


def test_save_rejects_metadata_that_does_not_fit_the_model(source, tmp_path):
    loaded = load_checkpoint_path(source)
    with pytest.raises(ValueError, match="vocab_size"):
        save_checkpoint(
            loaded.model, loaded.tokenizer, dataclasses.replace(loaded.metadata, vocab_size=5000), tmp_path / "x"
        )
    with pytest.raises(ValueError, match="proprio_dim"):
        bad = dataclasses.replace(loaded.metadata, proprio_names=[], proprio_norm=None)
        save_checkpoint(loaded.model, loaded.tokenizer, bad, tmp_path / "y")


def test_metadata_validation():
    with pytest.raises(ValueError, match="role"):
        dataclasses.replace(make_metadata(), provenance=Provenance(role="teaching-assistant"))
    with pytest.raises(ValueError, match="dt"):
        dataclasses.replace(make_metadata(), dt=0.0)
    with pytest.raises(ValueError, match="instruction"):
        dataclasses.replace(make_metadata(), prompt_template="no placeholder")


def test_info_command(source, capsys):
    assert cli.main(["info", "tiny", "--model-dir", str(source.parent)]) == 0
    out = capsys.readouterr().out
    assert "# parameters:" in out and "# size on disk:" in out
    assert "checkpoint_id: tiny-" in out
    assert cli.main(["info", str(source)]) == 0
    assert cli.main(["info", "missing", "--model-dir", str(source.parent)]) == 1
    assert "error:" in capsys.readouterr().out


def test_saving_into_a_folder_with_a_leftover_pickle_is_refused(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"left over from an older run")
    with pytest.raises(CheckpointError, match="pickle-format files"):
        build_tiny_checkpoint(folder, make_metadata(), seed=1, instructions=["reach the cube"], **SIZES)
