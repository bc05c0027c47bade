"""Backend ``llava``: LLaVA-family VLAs through transformers' native ``LlavaForConditionalGeneration``.

No remote code: the model class is transformers' own (subclassed here only to take proprioception
tokens, :class:`LlavaVlaForActionPrediction`); ``auto_map`` in a folder is refused, pickles are
refused and never opened.

Folder layout (what transformers' LLaVA conversion script, ``convert_llava_weights_to_hf.py``,
writes, e.g. ``llava-hf/llava-1.5-7b-hf``)::

    config.json                       model_type "llava"; vision_config (clip_vision_model or
                                      siglip_vision_model), text_config (llama), image_token_index,
                                      vision_feature_layer (-2), vision_feature_select_strategy
                                      ("default": the CLS feature is dropped), image_seq_length
    model.safetensors                 or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json, tokenizer_config.json   the Llama tokenizer plus the added "<image>" and "<pad>"
    preprocessor_config.json          CLIP image processor: size.shortest_edge, crop_size, image_mean, image_std
    generation_config.json, chat_template.json / processor_config.json   (read for nothing here)

A checkpoint of this backend is a folder in the model directory holding ``ceed_vla.yaml`` whose
``source_dir`` points at such a folder (``ceed-vla import llava SOURCE --name NAME``: no weights are
copied) or a folder that holds the files itself (a distilled student). ``weights_sha256`` is the
digest of the index file and of each shard's name, size and safetensors header (reading 14 GB at
every start would take minutes); ``ceed-vla import`` computes it.

LLaVA-VLA (OpenHelix-Team/LLaVA-VLA) specifics, as this backend implements them:

* **Images.** The static and the wrist camera image are each resized to ``view_size`` (backend
  option, default [167, 334] = height, width) and stacked vertically (static on top) into one
  image; then the CLIP preprocessing of ``preprocessor_config.json`` (shortest edge resize,
  centre crop, rescale, normalise). :meth:`LlavaBackend.model_inputs` takes (B, V, H, W, 3) for V
  views; one view (H, W, 3) / (B, H, W, 3) is used as it is (a single camera).
* **Prompt.** ``prompt_template`` (vicuna_v1 conversation; default :data:`DEFAULT_LLAVA_TEMPLATE`)
  with ``<image>`` (expanded to ``image_seq_length`` image tokens, as transformers' processor does),
  ``{instruction}`` and ``{proprio}`` (one token per proprio dimension). BOS first; every text piece
  between them tokenised on its own.
* **Proprioception as tokens.** Each joint value is normalised by ``proprio_norm`` (LLaVA-VLA
  z-scores and divides by 3: import with q01 = mean - 3 std, q99 = mean + 3 std, which is exactly
  that), clipped to [-1, 1] and written with the action tokenizer (the same ids as an action of
  that value). The prompt holds ``proprio_placeholder_id`` (backend option, default: the
  tokenizer's unk id) there; the model's forward puts the ids of ``proprio_token_ids`` in their
  place. LLaVA-VLA writes them as text and tokenises again; inserting the ids directly gives the
  same ids where that round trip is exact.
* **Actions.** Scheme ``openvla`` (the last 256 ids of the Llama text vocabulary, 32000 - bin),
  ``action_vocab_size`` = the tokenizer's vocabulary without the tokens the conversion added
  (``<image>``, ``<pad>``); the 5 x 7 chunk is ``chunk_len: 5``, ``action_dims: 7``.
* **Statistics** are kept outside the checkpoint (LLaVA-VLA's ``statistics.yaml``): ``ceed-vla
  import llava --stats FILE`` copies them into ``ceed_vla.yaml`` (see :func:`read_statistics`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import LlavaConfig, LlavaForConditionalGeneration, PreTrainedTokenizerFast

from ceed_vla_ros.action_tokenizer import NormStats
from ceed_vla_ros.backends.base import (
    Checkpoint,
    ModelBackend,
    read_json,
    refuse_pickles,
    resolve_dtype,
)
from ceed_vla_ros.metadata import (
    METADATA_FILE,
    CheckpointError,
    CheckpointMetadata,
    EndEffectorSpec,
    GripperSpec,
    ImageSpec,
    Provenance,
    imported_action_layout,
)

MODEL_TYPE = "llava"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
REQUIRED = ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json")
DEFAULT_LLAVA_TEMPLATE = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: <image>\n{instruction}\n{proprio} ASSISTANT:"
)
DEFAULT_VIEW_SIZE = (167, 334)  # LLaVA-VLA: each view's (height, width) before stacking
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LlavaVlaForActionPrediction(LlavaForConditionalGeneration):
    """transformers' LLaVA, plus ``proprio_token_ids`` (B, p): on the prefill the first p positions of
    each row holding ``config.proprio_placeholder_id`` get these ids (proprioception written as tokens).

    Loads a converted LLaVA folder as it is (same config, same state-dict keys)."""

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, cache=None,
                proprio_token_ids=None, **kwargs):
        if proprio_token_ids is not None and input_ids is not None and proprio_token_ids.shape[-1]:
            input_ids = insert_proprio_ids(
                input_ids, proprio_token_ids, int(getattr(self.config, "proprio_placeholder_id", 0))
            )
        if pixel_values is not None and input_ids is not None:
            # Only the first image_seq_length <image> ids of a row are the image; later ones (a Jacobi
            # state drawn from the prompt, in a training forward) stay ordinary tokens, as they are
            # when a block runs on top of the KV cache.
            kwargs["inputs_embeds"] = self._embed_with_image(input_ids, pixel_values)
            input_ids, pixel_values = None, None
        return super().forward(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                               cache=cache, **kwargs)

    def _embed_with_image(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        embeds = self.get_input_embeddings()(input_ids)
        features = self.model.get_image_features(
            pixel_values=pixel_values.to(embeds.dtype), vision_feature_layer=self.config.vision_feature_layer,
            vision_feature_select_strategy=self.config.vision_feature_select_strategy, return_dict=True,
        ).pooler_output
        features = torch.stack(list(features)).to(embeds.dtype)  # (B, n, hidden)
        mask = input_ids == self.config.image_token_id
        first = mask & (mask.cumsum(dim=1) <= features.shape[1])
        found = first.sum(dim=1)
        if bool((found != features.shape[1]).any()):
            raise ValueError(
                f"input_ids hold {found.tolist()} image tokens per row, the image gives {features.shape[1]}"
            )
        return embeds.masked_scatter(first.unsqueeze(-1), features)


def _register_weight_names() -> None:
    """Our subclass reads and writes the same keys as transformers' class (its conversion mapping)."""
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )

    mapping = get_checkpoint_conversion_mapping(MODEL_TYPE)
    if mapping:
        register_checkpoint_conversion_mapping(LlavaVlaForActionPrediction.__name__, mapping, overwrite=True)


_register_weight_names()


def insert_proprio_ids(input_ids: torch.Tensor, proprio_ids: torch.Tensor, placeholder: int) -> torch.Tensor:
    """``input_ids`` with the first p placeholder positions of each row replaced by ``proprio_ids`` (B, p)."""
    per_row = proprio_ids.shape[-1]
    mask = input_ids == placeholder
    first = mask & (mask.cumsum(dim=1) <= per_row)
    found = first.sum(dim=1)
    if bool((found != per_row).any()):
        raise ValueError(f"input_ids hold {found.tolist()} proprio placeholders per row, expected {per_row}")
    out = input_ids.clone()
    out[first] = proprio_ids.to(out.dtype).reshape(-1)
    return out


class LlavaBackend(ModelBackend):
    """LLaVA-family VLAs (see the module docstring)."""

    name = "llava"
    action_token_scheme = "openvla"

    def check_folder(self, path: Path, metadata: CheckpointMetadata) -> None:
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint folder does not exist")
        source = metadata.model_folder(path)
        refuse_pickles(*{path.resolve(), source})
        check_source_folder(source)
        digest = weights_digest(source, shard_files(source))
        if digest != metadata.weights_sha256:
            raise CheckpointError(
                f"{source}: weights digest {digest[:12]}... differs from {path / METADATA_FILE} weights_sha256 "
                f"{metadata.weights_sha256[:12]}... (weights changed since the import)"
            )

    def load_model(self, path, metadata, device, dtype):
        source = metadata.model_folder(path)
        config = read_llava_config(source)
        config.proprio_placeholder_id = proprio_placeholder_id(metadata, load_tokenizer(source))
        try:
            model, info = LlavaVlaForActionPrediction.from_pretrained(
                source, config=config, local_files_only=True, use_safetensors=True, dtype=resolve_dtype(dtype),
                attn_implementation="sdpa", output_loading_info=True,
                **({"device_map": str(device)} if device is not None else {}),
            )
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"{source}: cannot load the LLaVA model ({type(error).__name__}: {error})") from error
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            raise CheckpointError(f"{source}: weights do not match config.json (wrong key names?): {bad}")
        tokenizer = load_tokenizer(source)
        try:
            check_consistency(model.config, tokenizer, metadata)
        except ValueError as error:
            raise CheckpointError(f"{path / METADATA_FILE}: {error}") from error
        return model, tokenizer

    def prompt_ids(self, model, tokenizer, metadata, instruction):
        return llava_prompt_ids(tokenizer, model.config, metadata, instruction)

    def model_inputs(self, model, metadata, images, proprio):
        parameter = next(model.parameters())
        source = Path(metadata.backend_options.get("_preprocessor_folder") or "")
        processor = getattr(model, "_ceed_preprocessor", None)
        if processor is None:
            processor = image_processor_settings(model.config, source if source.is_dir() else None)
        view_size = tuple(metadata.backend_options.get("view_size", DEFAULT_VIEW_SIZE))
        pixel_values = llava_pixel_values(images, processor, view_size)
        inputs = {"pixel_values": pixel_values.to(parameter.device, parameter.dtype)}
        if metadata.proprio_dim:
            if proprio is None:
                raise ValueError("this checkpoint needs proprio (joint positions)")
            inputs["proprio_token_ids"] = proprio_token_ids(metadata, proprio).to(parameter.device)
        return inputs

    def freeze_vision(self, model):
        model.model.vision_tower.requires_grad_(False)

    def save(self, model, tokenizer, metadata, path):
        return save_llava_checkpoint(model, tokenizer, metadata, path)

    def load(self, path, metadata, device=None, dtype=None) -> Checkpoint:
        checkpoint = super().load(path, metadata, device, dtype)
        checkpoint.model._ceed_preprocessor = image_processor_settings(
            checkpoint.model.config, metadata.model_folder(Path(path))
        )
        return checkpoint


# -- folder checks and digest -------------------------------------------------------------------------
def check_source_folder(folder: Path) -> None:
    """Files present, model_type llava, no remote code (``auto_map``), shards agree with the index."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: LLaVA model folder does not exist")
    for name in REQUIRED:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: required LLaVA file is missing")
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json"):
        if (folder / name).is_file():
            data = read_json(folder / name)
            if "auto_map" in data or data.get("trust_remote_code"):
                raise CheckpointError(f"{folder / name}: auto_map / remote code is not allowed (nothing is imported)")
    config = read_json(folder / "config.json")
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(
            f"{folder / 'config.json'}: model_type {config.get('model_type')!r}, expected 'llava' (a LLaVA-NeXT "
            "'llava_llama' folder must first be converted with transformers' convert_llava_weights_to_hf.py)"
        )
    shard_files(folder)


def shard_files(folder: Path) -> dict[str, list[str]]:
    """{shard file: tensor names} from the index (or the single model.safetensors); every shard must
    exist and hold exactly the tensors the index assigns to it."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no weight_map")
        shards: dict[str, list[str]] = {}
        for tensor, shard in weight_map.items():
            shards.setdefault(str(shard), []).append(tensor)
    elif (folder / SINGLE_FILE).is_file():
        shards = {SINGLE_FILE: []}
    else:
        raise CheckpointError(f"{folder / INDEX_FILE}: no safetensors weights (neither an index nor {SINGLE_FILE})")
    for shard, tensors in shards.items():
        file = folder / shard
        if not file.is_file():
            raise CheckpointError(f"{file}: shard named in {INDEX_FILE} is missing")
        names = set(json.loads(_safetensors_header(file)).keys()) - {"__metadata__"}
        if tensors and names != set(tensors):
            extra, missing = sorted(names - set(tensors))[:3], sorted(set(tensors) - names)[:3]
            raise CheckpointError(f"{file}: tensors disagree with {INDEX_FILE} (not in the index: {extra}, "
                                  f"missing: {missing})")
    return shards


def _safetensors_header(file: Path) -> bytes:
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{file}: not a safetensors file (truncated)")
        (length,) = struct.unpack("<Q", head)
        if length > 100_000_000 or length > file.stat().st_size:
            raise CheckpointError(f"{file}: not a safetensors file (header length {length})")
        header = f.read(length)
    try:
        json.loads(header)
    except ValueError as error:
        raise CheckpointError(f"{file}: not a safetensors file ({error})") from error
    return header


def weights_digest(folder: Path, shards: Mapping[str, list[str]]) -> str:
    """SHA-256 over the index file and each shard's name, size and header."""
    digest = hashlib.sha256()
    if (folder / INDEX_FILE).is_file():
        digest.update((folder / INDEX_FILE).read_bytes())
    for shard in sorted(shards):
        file = folder / shard
        digest.update(shard.encode() + b"\0" + str(file.stat().st_size).encode() + b"\0")
        digest.update(_safetensors_header(file))
    return digest.hexdigest()


def read_llava_config(folder: Path) -> LlavaConfig:
    try:
        return LlavaConfig.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{folder / 'config.json'}: not a LLaVA config ({error})") from error


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    try:
        return PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{folder / 'tokenizer.json'}: cannot load the tokenizer ({error})") from error


def text_vocab_size(tokenizer) -> int:
    """The vocabulary without added tokens (LLaVA's conversion adds ``<image>`` and ``<pad>`` after it)."""
    return int(tokenizer.vocab_size)


def proprio_placeholder_id(metadata: CheckpointMetadata, tokenizer) -> int:
    value = metadata.backend_options.get("proprio_placeholder_id")
    if value is not None:
        return int(value)
    if tokenizer.unk_token_id is None:
        raise CheckpointError("the tokenizer has no unk token: set backend_options.proprio_placeholder_id")
    return int(tokenizer.unk_token_id)


def check_consistency(config, tokenizer, metadata: CheckpointMetadata) -> None:
    """ValueError where metadata, config and tokenizer disagree."""
    vocab = config.text_config.vocab_size
    if metadata.vocab_size != vocab:
        raise ValueError(f"vocab_size {metadata.vocab_size} != model vocab_size {vocab}")
    if metadata.action_token_scheme != "openvla":
        raise ValueError(f"a llava checkpoint uses action_token_scheme openvla, not {metadata.action_token_scheme!r}")
    base = metadata.action_token_base
    if base != text_vocab_size(tokenizer):
        raise ValueError(f"action_vocab_size {base} != the tokenizer's text vocabulary {text_vocab_size(tokenizer)}")
    image_id = config.image_token_id
    if base - metadata.n_bins <= image_id < base:
        raise ValueError(f"image token id {image_id} falls inside the action tokens")
    if tokenizer.convert_ids_to_tokens(image_id) != "<image>":
        raise ValueError(f"config image_token_index {image_id} is {tokenizer.convert_ids_to_tokens(image_id)!r} "
                         "in the tokenizer, not '<image>'")
    if "<image>" not in metadata.prompt_template:
        raise ValueError("a llava prompt_template needs '<image>'")
    if metadata.proprio_dim and "{proprio}" not in metadata.prompt_template:
        raise ValueError("a llava checkpoint with proprio_names needs '{proprio}' in prompt_template")


# -- prompt, proprio and images -----------------------------------------------------------------------
def image_seq_length(config) -> int:
    """Image tokens per image: (image_size / patch_size)^2 (+1 with the ``full`` strategy, which keeps CLS)."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return patches + (1 if config.vision_feature_select_strategy == "full" else 0)


def llava_prompt_ids(tokenizer, config, metadata: CheckpointMetadata, instruction: str) -> list[int]:
    """BOS + the template's text pieces, ``<image>`` -> image tokens, ``{proprio}`` -> placeholders."""
    template = metadata.prompt_template
    placeholder = int(getattr(config, "proprio_placeholder_id", tokenizer.unk_token_id or 0))
    ids: list[int] = [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]
    text = template.replace("{instruction}", instruction.strip())
    pieces = text.replace("{proprio}", "\x00P\x00").replace("<image>", "\x00I\x00").split("\x00")
    for piece in pieces:
        if piece == "I":
            ids += [int(config.image_token_id)] * image_seq_length(config)
        elif piece == "P":
            ids += [placeholder] * metadata.proprio_dim
        elif piece:
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids


def proprio_token_ids(metadata: CheckpointMetadata, proprio: torch.Tensor) -> torch.Tensor:
    """Normalised proprio (B, p) -> action-token ids (B, p) of the same values."""
    tokenizer = metadata.action_tokenizer()
    values = np.clip(torch.as_tensor(proprio).detach().float().cpu().numpy().reshape(-1, metadata.proprio_dim), -1, 1)
    return torch.from_numpy(tokenizer.bins_to_tokens(tokenizer.discretize(values)).astype(np.int64))


def image_processor_settings(config, folder: Path | None) -> dict:
    """Resize / crop / normalisation of ``preprocessor_config.json`` (CLIP defaults without one)."""
    size = config.vision_config.image_size
    settings = {"shortest_edge": size, "crop": (size, size), "mean": CLIP_MEAN, "std": CLIP_STD, "center_crop": True}
    file = None if folder is None else Path(folder) / "preprocessor_config.json"
    if file is not None and file.is_file():
        data = read_json(file)
        edge = data.get("size", {})
        edge = edge.get("shortest_edge", edge.get("height", size)) if isinstance(edge, dict) else int(edge)
        crop = data.get("crop_size", {"height": size, "width": size})
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (int(crop), int(crop))
        settings.update(shortest_edge=int(edge), crop=crop, mean=tuple(data.get("image_mean", CLIP_MEAN)),
                        std=tuple(data.get("image_std", CLIP_STD)), center_crop=bool(data.get("do_center_crop", True)))
    return settings


def stack_views(views: torch.Tensor, view_size: tuple[int, int]) -> torch.Tensor:
    """(B, V, H, W, 3) uint8 views -> (B, V * view_h, view_w, 3): each resized, stacked vertically (view 0 on top)."""
    batch, count = views.shape[:2]
    x = views.reshape(batch * count, *views.shape[2:]).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=tuple(view_size), mode="bicubic", antialias=True, align_corners=False)
    x = x.clamp(0, 255).reshape(batch, count, 3, *view_size).permute(0, 1, 3, 4, 2)
    return x.reshape(batch, count * view_size[0], view_size[1], 3)


def llava_pixel_values(images, settings: Mapping, view_size=DEFAULT_VIEW_SIZE) -> torch.Tensor:
    """uint8 RGB (H, W, 3), (B, H, W, 3) or (B, V, H, W, 3) -> CLIP ``pixel_values`` (B, 3, crop_h, crop_w)."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim == 5:
        x = stack_views(x, view_size)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3), (B, H, W, 3) or (B, V, H, W, 3) images, got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float()
    height, width = x.shape[-2:]
    edge = settings["shortest_edge"]
    scale = edge / min(height, width)
    size = (max(edge, round(height * scale)), max(edge, round(width * scale)))
    if size != (height, width):
        x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    crop_h, crop_w = settings["crop"]
    if settings["center_crop"]:
        top, left = max(0, (x.shape[-2] - crop_h) // 2), max(0, (x.shape[-1] - crop_w) // 2)
        x = x[..., top : top + crop_h, left : left + crop_w]
    x = x.clamp(0, 255) / 255.0
    mean = torch.tensor(settings["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(settings["std"]).reshape(1, 3, 1, 1)
    return (x - mean) / std


# -- import, save, tiny folders ----------------------------------------------------------------------
def read_statistics(file: Path, dataset_key: str | None = None) -> tuple[NormStats, NormStats | None]:
    """Action and proprio statistics from a YAML/JSON file kept outside the checkpoint.

    Accepted: ``{action: {...}, proprio/state: {...}}`` or ``{<dataset>: {action: ..., proprio: ...}}``
    (then ``dataset_key`` picks one; OpenVLA's ``dataset_statistics.json`` has this shape), each entry
    with ``q01`` / ``q99`` (and ``mask``), or ``mean`` / ``std`` (mapped to mean -+ 3 std: LLaVA-VLA's
    z-score / 3).
    """
    try:
        data = yaml.safe_load(Path(file).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CheckpointError(f"{file}: cannot read statistics ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a mapping")
    if "action" not in data:
        keys = sorted(data)
        if dataset_key is None:
            if len(keys) != 1:
                raise CheckpointError(f"{file}: several datasets {keys}: choose one with --unnorm-key")
            dataset_key = keys[0]
        if dataset_key not in data:
            raise CheckpointError(f"{file}: unknown --unnorm-key {dataset_key!r}; the file has {keys}")
        data = data[dataset_key]

    def stats(entry) -> NormStats:
        if "q01" in entry:
            q01, q99 = [float(v) for v in entry["q01"]], [float(v) for v in entry["q99"]]
        elif "mean" in entry:
            mean, std = np.asarray(entry["mean"], float), np.asarray(entry["std"], float)
            q01, q99 = (mean - 3 * std).tolist(), (mean + 3 * std).tolist()
        else:
            raise CheckpointError(f"{file}: statistics need q01/q99 or mean/std, got {sorted(entry)}")
        mask = [bool(v) for v in entry.get("mask", [True] * len(q01))]
        return NormStats(tuple(q01), tuple(q99), tuple(mask))

    proprio = data.get("proprio", data.get("state"))
    return stats(data["action"]), (stats(proprio) if proprio else None)


def import_llava(
    source: Path,
    model_dir: Path,
    name: str,
    *,
    stats_file: Path,
    joint_names: Iterable[str],
    chunk_len: int = 5,
    dt: float = 0.1,
    action_space: str = "joint_absolute",
    end_effector: EndEffectorSpec | None = None,
    gripper: GripperSpec | None = None,
    proprio_names: Iterable[str] = (),
    unnorm_key: str | None = None,
    prompt_template: str = DEFAULT_LLAVA_TEMPLATE,
    view_size: tuple[int, int] = DEFAULT_VIEW_SIZE,
    n_bins: int = 256,
    command: str = "",
) -> CheckpointMetadata:
    """Write ``<model_dir>/<name>/ceed_vla.yaml`` for a converted LLaVA folder (weights stay in ``source``)."""
    source = Path(source).resolve()
    refuse_pickles(source)
    check_source_folder(source)
    config = read_llava_config(source)
    tokenizer = load_tokenizer(source)
    action_norm, proprio_norm = read_statistics(stats_file, unnorm_key)
    proprio_names = list(proprio_names)
    try:
        joint_names, end_effector, gripper = imported_action_layout(
            action_space, action_norm.dims, list(joint_names), end_effector, gripper, list(joint_names))
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None
    if proprio_names and proprio_norm is None:
        raise CheckpointError(f"{stats_file}: proprio_names given but the file has no proprio statistics")
    if proprio_norm is not None and proprio_names and proprio_norm.dims != len(proprio_names):
        raise CheckpointError(f"{stats_file}: proprio statistics have {proprio_norm.dims} dims, "
                              f"{len(proprio_names)} proprio names given")
    target = Path(model_dir) / name
    target.mkdir(parents=True, exist_ok=True)
    digest = weights_digest(source, shard_files(source))
    size = config.vision_config.image_size
    try:
        metadata = CheckpointMetadata(
            name=name, action_space=action_space, joint_names=joint_names, action_dims=action_norm.dims,
            end_effector=end_effector, gripper=gripper,
            chunk_len=chunk_len, dt=dt, action_norm=action_norm, proprio_names=proprio_names,
            proprio_norm=proprio_norm if proprio_names else None, n_bins=n_bins,
            vocab_size=config.text_config.vocab_size,
            image=ImageSpec(height=size, width=size, crop="none", resize="bicubic", mean=CLIP_MEAN, std=CLIP_STD),
            prompt_template=prompt_template,
            provenance=Provenance(role="teacher", command=command, data=str(stats_file),
                                  notes=f"imported LLaVA folder {source}"),
            backend="llava", action_token_scheme="openvla", action_vocab_size=text_vocab_size(tokenizer),
            source_dir=os.path.relpath(source, target.resolve()),
            backend_options={"view_size": list(view_size), **({"unnorm_key": unnorm_key} if unnorm_key else {})},
            weights_sha256=digest, checkpoint_id=f"{name}-{digest[:8]}",
        )
        config.proprio_placeholder_id = proprio_placeholder_id(metadata, tokenizer)
        check_consistency(config, tokenizer, metadata)
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from error
    from ceed_vla_ros.backends.ceed_tiny import stamp_created

    metadata = dataclasses.replace(metadata, provenance=stamp_created(metadata))
    (target / METADATA_FILE).write_text(metadata.to_yaml())
    return metadata


def save_llava_checkpoint(model, tokenizer, metadata: CheckpointMetadata, path: Path) -> CheckpointMetadata:
    """A self-contained LLaVA folder (sharded safetensors, tokenizer, preprocessor config) + ``ceed_vla.yaml``."""
    import shutil

    from ceed_vla_ros.backends.ceed_tiny import stamp_created

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    source = getattr(model, "_ceed_source", None)
    config = model.config
    placeholder = getattr(config, "proprio_placeholder_id", None)
    if hasattr(config, "proprio_placeholder_id"):
        del config.proprio_placeholder_id  # ours, not LLaVA's: kept in the metadata instead
    try:
        model.save_pretrained(path, safe_serialization=True, max_shard_size="5GB")
    finally:
        if placeholder is not None:
            config.proprio_placeholder_id = placeholder
    tokenizer.save_pretrained(path)
    preprocessor = getattr(model, "_ceed_preprocessor", None)
    if source and (Path(source) / "preprocessor_config.json").is_file():
        shutil.copyfile(Path(source) / "preprocessor_config.json", path / "preprocessor_config.json")
    else:
        settings = preprocessor or image_processor_settings(config, None)
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor_json(settings), indent=2))
    refuse_pickles(path)
    digest = weights_digest(path, shard_files(path))
    options = dict(metadata.backend_options)
    if placeholder is not None:
        options["proprio_placeholder_id"] = int(placeholder)
    metadata = dataclasses.replace(metadata, source_dir=None, weights_sha256=digest, backend_options=options,
                                   checkpoint_id=f"{metadata.name}-{digest[:8]}")
    metadata = dataclasses.replace(metadata, provenance=stamp_created(metadata))
    (path / METADATA_FILE).write_text(metadata.to_yaml())
    return metadata


def preprocessor_json(settings: Mapping) -> dict:
    """A CLIPImageProcessor-style ``preprocessor_config.json``."""
    crop_h, crop_w = settings["crop"]
    return {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True,
        "size": {"shortest_edge": int(settings["shortest_edge"])}, "resample": 3,
        "do_center_crop": bool(settings["center_crop"]), "crop_size": {"height": crop_h, "width": crop_w},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(settings["mean"]), "image_std": list(settings["std"]), "do_convert_rgb": True,
    }


def build_tiny_llava_folder(
    folder: Path,
    words: Iterable[str] = (),
    *,
    seed: int = 0,
    text_vocab: int = 320,
    hidden_size: int = 32,
    num_layers: int = 2,
    image_size: int = 28,
    patch_size: int = 14,
    shards: int = 2,
    init_std: float = 0.02,
) -> Path:
    """A random LLaVA folder in transformers' converted layout (config, sharded safetensors + index,
    tokenizer with ``<image>`` and ``<pad>`` added after the text vocabulary, preprocessor config).

    Text vocabulary: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, the words, fillers up to ``text_vocab``
    (the last 256 are the action tokens under the openvla scheme); then ``<image>`` and ``<pad>``;
    the model's vocabulary is padded to a multiple of 64 as the conversion script does.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import CLIPVisionConfig, LlamaConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pre = pre_tokenizers.Whitespace()
    found: set[str] = set()
    for text in [DEFAULT_LLAVA_TEMPLATE.replace("{instruction}", " ").replace("{proprio}", " "), *words]:
        found.update(piece for piece, _ in pre.pre_tokenize_str(text.lower()))
    found -= {"<", ">", "image"}
    vocab_words = ["<unk>", "<s>", "</s>", "image", *sorted(found)]
    if len(vocab_words) > text_vocab - 256:
        raise ValueError(
            f"{len(vocab_words)} words do not fit below the 256 action tokens of a {text_vocab} vocabulary"
        )
    vocab_words += [f"<tok_{i}>" for i in range(len(vocab_words), text_vocab)]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab_words)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})  # llava-hf: <image> 32000, <pad> 32001
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    image_id, pad_id = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.convert_tokens_to_ids("<pad>")
    vocab = int(math.ceil(len(tokenizer) / 64) * 64)
    text_config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=pad_id,
        bos_token_id=1, eos_token_id=2, initializer_range=init_std,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, patch_size=patch_size, projection_dim=hidden_size,
    )
    config = LlavaConfig(
        vision_config=vision_config, text_config=text_config, image_token_index=image_id,
        image_seq_length=(image_size // patch_size) ** 2, vision_feature_layer=-2,
        vision_feature_select_strategy="default", pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    size_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=max(1, size_bytes // shards + 1))
    tokenizer.save_pretrained(folder)
    settings = {"shortest_edge": image_size, "crop": (image_size, image_size), "mean": CLIP_MEAN, "std": CLIP_STD,
                "center_crop": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor_json(settings), indent=2))
    return folder
