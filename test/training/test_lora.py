"""LoRA distillation (peft) on the tiny teacher: adapters start at the teacher's output, only they
train, the merged student and the adapter-only student load and decode, a wrong base is refused."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
import yaml

from ceed_vla_ros.checkpoint import load_checkpoint
from ceed_vla_ros.metadata import CheckpointError
from ceed_vla_ros.policy import CeedVlaPolicy
from ceed_vla_ros.tools import cli
from ceed_vla_ros.training.lora import LoraSettings, apply_lora, trainable_counts

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_fresh_adapters_keep_the_teachers_output_and_train_few_weights(distill_world):
    import copy

    teacher = distill_world["teacher"]
    model = apply_lora(copy.deepcopy(teacher.model), LoraSettings(rank=2))
    count, total = trainable_counts(model)
    assert 0 < count < total / 5
    assert all("lora_" in name for name, p in model.named_parameters() if p.requires_grad)
    batch = distill_world["samples"].model_batch(torch.arange(2))
    with torch.no_grad():
        expected = teacher.model(**batch).logits
        got = model(**batch).logits
    torch.testing.assert_close(got, expected)


def run_distill(world, name, *extra):
    root = world["root"]
    return cli.main(["distill", "--teacher", "tiny_teacher", "--model-dir", str(root / "models"), "--trajectories",
                     str(world["path"]), "--data", *map(str, world["files"]), "--out-name", name, "--run-dir",
                     str(root / f"run_{name}"), "--steps", "2", "--batch-size", "4", "--val-samples", "2",
                     "--eval-every", "0", "--save-every", "5", "--threads", "1", "--no-progress", "--lr", "5e-3",
                     "--device", "cpu", "--lora-rank", "4", *extra])


@pytest.mark.parametrize("save", ["merged", "adapter"])
def test_lora_student_loads_and_decodes(distill_world, save, capsys):
    name = f"lora_{save}"
    assert run_distill(distill_world, name, "--lora-save", save) == 0
    assert "LoRA rank 4" in capsys.readouterr().out
    teacher = distill_world["teacher"]
    student = load_checkpoint(distill_world["root"] / "models", name)
    files = {p.name for p in student.path.iterdir()}
    if save == "adapter":
        assert files == {"ceed_vla.yaml", "adapter_config.json", "adapter_model.safetensors"}
        assert student.metadata.backend_options["lora"]["base_checkpoint_id"] == teacher.metadata.checkpoint_id
    else:
        assert "model.safetensors" in files and "adapter_model.safetensors" not in files
    assert type(student.model) is type(teacher.model)  # merged: a plain model, no peft wrapper
    assert student.metadata.provenance.parent == teacher.metadata.checkpoint_id
    changed = [n for (n, a), b in zip(student.model.state_dict().items(), teacher.model.state_dict().values())
               if not torch.equal(a, b)]
    assert changed and all("language_model" in n and "proj" in n for n in changed)
    image = distill_world["samples"].tensors.images[0].numpy()
    out = CeedVlaPolicy(student, seed=0).predict(image, np.zeros(4), "reach the red cube")
    assert out.actions.shape == (student.metadata.chunk_len, 4) and np.isfinite(out.actions).all()


def test_adapter_on_a_changed_base_is_refused(distill_world, tmp_path):
    models = distill_world["root"] / "models"
    if not (models / "lora_adapter").is_dir():
        assert run_distill(distill_world, "lora_adapter", "--lora-save", "adapter") == 0
    file = models / "lora_adapter" / "ceed_vla.yaml"
    data = yaml.safe_load(file.read_text())
    data["backend_options"]["lora"]["base_checkpoint_id"] = "someone_else-00000000"
    bad = models / "lora_bad"
    bad.mkdir(exist_ok=True)
    for part in ("adapter_config.json", "adapter_model.safetensors"):
        (bad / part).write_bytes((models / "lora_adapter" / part).read_bytes())
    data["name"] = "lora_bad"
    (bad / "ceed_vla.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match="was trained on someone_else"):
        load_checkpoint(models, "lora_bad")


def test_bad_lora_options_are_refused():
    from ceed_vla_ros.training.config import DistillConfig

    base = DistillConfig(teacher="t", trajectories="x.h5", data=("d.h5",))
    with pytest.raises(ValueError, match="--lora-save"):
        dataclasses.replace(base, lora_rank=2, lora_save="both")
    with pytest.raises(ValueError, match="--device"):
        dataclasses.replace(base, device="gpu")
