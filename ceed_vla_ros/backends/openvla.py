"""Backend ``openvla``: OpenVLA (Prismatic) folders as published, loaded natively, never through remote code.

An OpenVLA folder (e.g. ``openvla/openvla-7b`` or a fine-tune) holds::

    config.json                       model_type openvla, vision_backbone_id, timm_model_ids, arch_specifier,
                                      image_resize_strategy, image_sizes, pad_token_id, pad_to_multiple_of,
                                      text_config (Llama), n_action_bins, norm_stats, auto_map (ignored)
    model-0000i-of-0000N.safetensors  sharded weights + model.safetensors.index.json (or one model.safetensors)
    tokenizer.json tokenizer_config.json special_tokens_map.json added_tokens.json (+ tokenizer.model, unused)
    preprocessor_config.json          per-tower normalisation (tvf_normalize_params / means, stds)
    dataset_statistics.json           fine-tunes: {unnorm_key: {action: {q01, q99, mask, ...}}}
    configuration_/modeling_/processing_prismatic.py   remote code: never imported, never executed

``ceed-vla import openvla SOURCE --name NAME`` writes ``<model_dir>/NAME/ceed_vla.yaml`` with
``backend: openvla`` and ``source_dir: SOURCE`` (no weights copied; ``--copy`` copies the folder
instead). ``weights_sha256`` of such a checkpoint is the digest of the index file and of each
shard's name, size and safetensors header (:func:`weights_digest`): reading 15 GB at every start
is not acceptable on a robot; it catches a swapped, truncated or re-exported shard, not a flipped
bit inside a tensor.

Prompt (``prompt_ids``): ``In: What action should the robot take to {instruction}?\\nOut:`` with the
instruction lower-cased (as OpenVLA's scripts do), tokenised with BOS, then the id 29871 (the
SentencePiece "▁") appended when the prompt does not end with it, as ``predict_action`` does. The
256 patch embeddings are inserted after BOS inside the model, so the decoders' prompt (and the
Jacobi initial block drawn from it) are the text ids only.

Action tokens: scheme ``openvla`` (``ActionTokenizer``): id base = ``text_config.vocab_size -
pad_to_multiple_of`` (32000), valid ids base - 256 .. base - 1; q01/q99 + mask unnormalisation of
the ``unnorm_key``'s statistics. The block is ``chunk_len x action_dims`` action tokens and nothing
after them (no EOS: every argmax is restricted to the action ids, so the EOS could never be chosen,
and the method needs no token past the last action).

Images: the camera image is resized to ``image_sizes`` (``resize-naive``; ``resize-crop``: centre
square first) with the preprocessor's interpolation (bicubic), then normalised once per tower
(DINOv2: ImageNet mean/std; SigLIP: 0.5/0.5) and stacked into 6 channels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, processors
from transformers import PreTrainedTokenizerFast

from ceed_vla_ros.action_tokenizer import NormStats
from ceed_vla_ros.backends.base import Checkpoint, ModelBackend, read_json, refuse_pickles, resolve_dtype
from ceed_vla_ros.backends.ceed_tiny import stamp_created
from ceed_vla_ros.backends.openvla_model import MODEL_TYPE, OpenVlaConfig, OpenVlaForActionPrediction
from ceed_vla_ros.metadata import (
    METADATA_FILE,
    CheckpointError,
    CheckpointMetadata,
    ImageSpec,
    Provenance,
    resolve_checkpoint_path,
)
from ceed_vla_ros.preprocess import normalize_pixels, resize_images

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
EMPTY_TOKEN_ID = 29871  # the SentencePiece "▁" OpenVLA appends after "Out:"
EMPTY_TOKEN = "\u2581"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_WEIGHTS = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
REMOTE_CODE_NOTE = "this package never imports or runs a checkpoint's code (auto_map is read as metadata only)"
DIMENSION_NAMES_7 = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class OpenVlaBackend(ModelBackend):
    name = "openvla"
    action_token_scheme = "openvla"

    def check_folder(self, path: Path, metadata: CheckpointMetadata) -> None:
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint folder does not exist")
        source = metadata.model_folder(path)
        refuse_pickles(path, source)
        config = read_openvla_config(source)
        shards = check_weights(source, config)
        digest = weights_digest(source, shards)
        if digest != metadata.weights_sha256:
            raise CheckpointError(
                f"{source}: weights digest {digest[:12]}... differs from {path / METADATA_FILE} weights_sha256 "
                f"{metadata.weights_sha256[:12]}... (shards replaced or modified since `ceed-vla import`)"
            )

    def load_model(self, path, metadata, device, dtype):
        source = metadata.model_folder(path)
        config = read_openvla_config(source)
        try:
            model, info = OpenVlaForActionPrediction.from_pretrained(
                source,
                config=config,
                local_files_only=True,
                use_safetensors=True,
                dtype=resolve_dtype(dtype),
                output_loading_info=True,
                **({"device_map": str(device)} if device is not None else {}),
            )
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"{source}: cannot load the model ({type(error).__name__}: {error})") from error
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            raise CheckpointError(f"{source}: weights do not match config.json: {bad}")
        tokenizer = load_tokenizer(source)
        try:
            check_consistency(config, tokenizer, metadata)
        except ValueError as error:
            raise CheckpointError(f"{path / METADATA_FILE}: {error}") from error
        return model, tokenizer

    def prompt_ids(self, model, tokenizer, metadata, instruction):
        return openvla_prompt_ids(tokenizer, metadata.prompt_template, instruction)

    def model_inputs(self, model, metadata, images, proprio):
        parameter = next(model.parameters())
        return {"pixel_values": openvla_pixel_values(images, metadata).to(parameter.device, parameter.dtype)}

    def sequence_logits(self, model, input_ids, attention_mask, inputs, prompt_length, *, frozen_vision=False):
        """Logits at the text positions only (the patch positions after BOS removed)."""
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **inputs, use_cache=False).logits
        inner = getattr(model, "module", model)
        index = inner.text_positions(attention_mask, input_ids.shape[0], input_ids.shape[1], input_ids.device)
        return logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))

    def freeze_vision(self, model):
        model.freeze_vision()

    def save(self, model, tokenizer, metadata, path):
        """A self-contained OpenVLA-layout folder (safetensors shards + index when large, tokenizer,
        config.json without auto_map, ceed_vla.yaml with ``source_dir`` null)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for stale in list(path.glob("model*.safetensors")) + list(path.glob(INDEX_FILE)):
            stale.unlink()
        model.config.auto_map = None
        model.save_pretrained(path, safe_serialization=True)
        config = json.loads((path / "config.json").read_text())
        config.pop("auto_map", None)
        (path / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save_pretrained(path)
        options = metadata.backend_options
        (path / "preprocessor_config.json").write_text(
            json.dumps(
                preprocessor_config(model.config, options["image_normalization"], metadata.image.resize), indent=2
            )
        )
        shards = check_weights(path, read_openvla_config(path))
        digest = weights_digest(path, shards)
        metadata = dataclasses.replace(
            metadata,
            source_dir=None,
            weights_sha256=digest,
            checkpoint_id=f"{metadata.name}-{digest[:8]}",
            provenance=stamp_created(metadata),
        )
        refuse_pickles(path)
        (path / METADATA_FILE).write_text(metadata.to_yaml())
        return metadata


# -- reading and checking a folder ---------------------------------------------------------------------
def read_openvla_config(folder: Path) -> OpenVlaConfig:
    """config.json of an OpenVLA folder; refuses other model types (naming remote-code-only ones)."""
    file = folder / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (not a model folder)")
    data = read_json(file)
    model_type = data.get("model_type")
    if model_type != MODEL_TYPE:
        remote = data.get("auto_map")
        if remote:
            raise CheckpointError(
                f"{file}: model_type {model_type!r} loads only through remote code (auto_map {remote}); "
                f"{REMOTE_CODE_NOTE}. Natively supported here: model_type {MODEL_TYPE!r}"
            )
        raise CheckpointError(f"{file}: model_type {model_type!r}, expected {MODEL_TYPE!r}")
    config_fields = {k: v for k, v in data.items() if k not in ("auto_map", "architectures", "transformers_version")}
    try:
        return OpenVlaConfig(**config_fields)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{file}: {error}") from error


def expected_parameter_shapes(config: OpenVlaConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter name and shape the config implies (the model built on the meta device)."""
    with torch.device("meta"):
        model = OpenVlaForActionPrediction(config)
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def _safetensors_header(file: Path) -> bytes:
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file}: truncated safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > 100_000_000:
            raise CheckpointError(f"{file}: not a safetensors file (header length {length})")
        header = f.read(length)
    if len(header) != length:
        raise CheckpointError(f"{file}: truncated safetensors header")
    return header


def shard_files(folder: Path) -> dict[str, list[str]]:
    """{shard file name: [tensor names]} from the index (or the single model.safetensors)."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no weight_map")
        shards: dict[str, list[str]] = {}
        for key, shard in weight_map.items():
            if "/" in shard or "\\" in shard or shard.startswith("."):
                raise CheckpointError(f"{index}: shard name {shard!r} is not a file in the folder")
            shards.setdefault(shard, []).append(key)
        return shards
    single = folder / SINGLE_WEIGHTS
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return {SINGLE_WEIGHTS: list(f.keys())}
    raise CheckpointError(f"{index}: missing (and no {SINGLE_WEIGHTS}): no safetensors weights in {folder}")


def check_weights(folder: Path, config: OpenVlaConfig) -> dict[str, list[str]]:
    """Shards exist, agree with the index, and hold exactly the names and shapes ``config`` implies."""
    shards = shard_files(folder)
    expected = expected_parameter_shapes(config)
    seen: dict[str, str] = {}
    for shard, keys in shards.items():
        file = folder / shard
        if not file.is_file():
            raise CheckpointError(f"{file}: shard listed in {INDEX_FILE} is missing")
        try:
            header = json.loads(_safetensors_header(file))
        except ValueError as error:
            raise CheckpointError(f"{file}: unreadable safetensors header ({error})") from error
        names = {k for k in header if k != "__metadata__"}
        if names != set(keys):
            extra, absent = sorted(names - set(keys)), sorted(set(keys) - names)
            raise CheckpointError(
                f"{file}: disagrees with {INDEX_FILE} (in the file only: {extra[:3]}, in the index only: {absent[:3]})"
            )
        for name in names:
            if name not in expected:
                raise CheckpointError(f"{file}: unexpected tensor {name!r} (not an OpenVLA parameter of this config)")
            if tuple(header[name]["shape"]) != expected[name]:
                raise CheckpointError(
                    f"{file}: tensor {name!r} has shape {tuple(header[name]['shape'])}, "
                    f"config.json implies {expected[name]}"
                )
            seen[name] = shard
    missing = sorted(set(expected) - set(seen))
    if missing:
        raise CheckpointError(f"{folder}: {len(missing)} parameters missing from the weights, e.g. {missing[:3]}")
    return shards


def weights_digest(folder: Path, shards: Mapping[str, list[str]]) -> str:
    """SHA-256 over the index file and, per shard (sorted), its name, size and safetensors header."""
    digest = hashlib.sha256()
    index = folder / INDEX_FILE
    if index.is_file():
        digest.update(index.read_bytes())
    for shard in sorted(shards):
        file = folder / shard
        digest.update(shard.encode() + b"\0" + str(file.stat().st_size).encode() + b"\0")
        digest.update(_safetensors_header(file))
    return digest.hexdigest()


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    for name in TOKENIZER_FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing (the Llama tokenizer is read from tokenizer.json)")
    if read_json(folder / "tokenizer_config.json").get("auto_map"):
        raise CheckpointError(
            f"{folder / 'tokenizer_config.json'}: a remote-code tokenizer (auto_map); {REMOTE_CODE_NOTE}"
        )
    try:
        return PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{folder / 'tokenizer.json'}: cannot load the tokenizer ({error})") from error


def check_consistency(config: OpenVlaConfig, tokenizer, metadata: CheckpointMetadata) -> None:
    if metadata.action_token_scheme != "openvla":
        raise ValueError(f"action_token_scheme {metadata.action_token_scheme!r}, expected 'openvla'")
    if metadata.vocab_size != config.text_config.vocab_size:
        raise ValueError(f"vocab_size {metadata.vocab_size} != text_config.vocab_size {config.text_config.vocab_size}")
    if metadata.action_vocab_size != config.action_vocab_size:
        raise ValueError(
            f"action_vocab_size {metadata.action_vocab_size} != OpenVLA's id base "
            f"{config.action_vocab_size} (text_config.vocab_size - pad_to_multiple_of)"
        )
    if metadata.n_bins != config.n_action_bins:
        raise ValueError(f"n_bins {metadata.n_bins} != n_action_bins {config.n_action_bins}")
    if tokenizer.convert_ids_to_tokens(EMPTY_TOKEN_ID) != EMPTY_TOKEN:
        raise ValueError(
            f"tokenizer id {EMPTY_TOKEN_ID} is {tokenizer.convert_ids_to_tokens(EMPTY_TOKEN_ID)!r}, "
            f"OpenVLA's prompt needs the Llama 2 vocabulary ({EMPTY_TOKEN!r} there)"
        )
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens, more than the model's {config.text_config.vocab_size}"
        )
    size = int(config.image_sizes[0])
    if any(int(s) != size for s in config.image_sizes) or (metadata.image.height, metadata.image.width) != (size, size):
        raise ValueError(f"image {metadata.image.height}x{metadata.image.width} != image_sizes {config.image_sizes}")
    if len(metadata.backend_options.get("image_normalization", [])) != len(config.timm_model_ids):
        raise ValueError("backend_options.image_normalization needs one {mean, std} per vision tower")


# -- prompt and images ----------------------------------------------------------------------------------
def openvla_prompt_ids(tokenizer, template: str, instruction: str) -> list[int]:
    text = template.format(instruction=instruction.strip().lower())
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if not ids or ids[0] != tokenizer.bos_token_id:
        ids.insert(0, tokenizer.bos_token_id)
    if ids[-1] != EMPTY_TOKEN_ID:
        ids.append(EMPTY_TOKEN_ID)
    return ids


def openvla_pixel_values(images, metadata: CheckpointMetadata) -> torch.Tensor:
    """uint8 RGB (H, W, 3) / (B, H, W, 3) -> (B, 3 x towers, size, size), each tower normalised its way."""
    resized = resize_images(images, metadata.image)
    return torch.cat(
        [
            normalize_pixels(resized, tuple(n["mean"]), tuple(n["std"]), metadata.image.channel_order)
            for n in metadata.backend_options["image_normalization"]
        ],
        dim=1,
    )


def tower_normalization(folder: Path, config: OpenVlaConfig) -> tuple[list[dict], str]:
    """Per-tower {mean, std} and the interpolation, from preprocessor_config.json (what the published
    processor applies: tvf_normalize_params, else means/stds) or the timm defaults."""
    file = folder / "preprocessor_config.json"
    data = read_json(file) if file.is_file() else {}
    params = data.get("tvf_normalize_params")
    if params:
        norms = [{"mean": [float(v) for v in p["mean"]], "std": [float(v) for v in p["std"]]} for p in params]
    elif data.get("means"):
        norms = [{"mean": list(m), "std": list(s)} for m, s in zip(data["means"], data["stds"])]
    else:
        norms = [
            {
                "mean": list(IMAGENET_MEAN if "dinov2" in t else (0.5, 0.5, 0.5)),
                "std": list(IMAGENET_STD if "dinov2" in t else (0.5, 0.5, 0.5)),
            }
            for t in config.timm_model_ids
        ]
    interpolation = (data.get("interpolations") or ["bicubic"])[0]
    if len(norms) != len(config.timm_model_ids):
        raise CheckpointError(f"{file}: {len(norms)} normalisations for {len(config.timm_model_ids)} towers")
    return norms, interpolation


def preprocessor_config(config: OpenVlaConfig, norms: list[dict], interpolation: str) -> dict:
    """preprocessor_config.json in OpenVLA's layout (no auto_map)."""
    size = int(config.image_sizes[0])
    return {
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": config.image_resize_strategy,
        "input_sizes": [[3, size, size] for _ in norms],
        "interpolations": [interpolation for _ in norms],
        "means": [n["mean"] for n in norms],
        "stds": [n["std"] for n in norms],
        "tvf_normalize_params": [{"inplace": False, "mean": n["mean"], "std": n["std"]} for n in norms],
        "use_fused_vision_backbone": config.use_fused_vision_backbone,
    }


# -- import: an OpenVLA folder -> a checkpoint in the model directory -----------------------------------
def dataset_statistics(folder: Path, config: OpenVlaConfig) -> tuple[dict, Path]:
    file = folder / "dataset_statistics.json"
    if file.is_file():
        return read_json(file), file
    if config.norm_stats:
        return dict(config.norm_stats), folder / "config.json"
    raise CheckpointError(f"{file}: missing, and config.json has no norm_stats: no action statistics")


def import_openvla(
    source: str | Path,
    model_dir: str | Path,
    name: str,
    *,
    action_space: str,
    dt: float,
    unnorm_key: str | None = None,
    chunk_len: int = 1,
    joint_names: list[str] | None = None,
    copy: bool = False,
    overwrite: bool = False,
) -> CheckpointMetadata:
    """Check ``source`` (an OpenVLA folder) and write ``<model_dir>/<name>/ceed_vla.yaml`` for it."""
    source = Path(source).resolve()
    if not source.is_dir():
        raise CheckpointError(f"{source}: not a folder")
    refuse_pickles(source)
    config = read_openvla_config(source)
    shards = check_weights(source, config)
    tokenizer = load_tokenizer(source)
    stats, stats_file = dataset_statistics(source, config)
    if unnorm_key is None:
        if len(stats) != 1:
            raise CheckpointError(
                f"{stats_file}: statistics of {len(stats)} datasets; choose one with --unnorm-key "
                f"({', '.join(sorted(stats))})"
            )
        unnorm_key = next(iter(stats))
    if unnorm_key not in stats:
        raise CheckpointError(
            f"{stats_file}: unknown unnorm_key {unnorm_key!r}; choose from {', '.join(sorted(stats))}"
        )
    action = stats[unnorm_key].get("action") or {}
    try:
        q01, q99 = [float(v) for v in action["q01"]], [float(v) for v in action["q99"]]
        norm = NormStats(tuple(q01), tuple(q99), tuple(bool(m) for m in action.get("mask", [True] * len(q01))))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{stats_file}: {unnorm_key}.action statistics unusable ({error})") from error
    if config.image_resize_strategy not in ("resize-naive", "resize-crop"):
        raise CheckpointError(
            f"{source / 'config.json'}: image_resize_strategy {config.image_resize_strategy!r} is "
            "not supported (resize-naive, resize-crop)"
        )
    norms, interpolation = tower_normalization(source, config)
    size = int(config.image_sizes[0])
    dims = norm.dims
    names = joint_names or (DIMENSION_NAMES_7 if dims == 7 else [f"a{i}" for i in range(dims)])
    target = resolve_checkpoint_path(model_dir, name)
    if (target / METADATA_FILE).exists() and not overwrite:
        raise CheckpointError(f"{target / METADATA_FILE}: exists (pass --overwrite to replace it)")
    target.mkdir(parents=True, exist_ok=True)
    if copy:
        for file in source.iterdir():
            if file.is_file() and file.suffix != ".py":  # remote code is not needed and not copied
                shutil.copy2(file, target / file.name)
        source_dir = None
    else:
        source_dir = str(source)
    digest = weights_digest(source, shards)
    metadata = CheckpointMetadata(
        name=name,
        action_space=action_space,
        joint_names=list(names),
        action_dims=dims,
        chunk_len=chunk_len,
        dt=dt,
        action_norm=norm,
        n_bins=config.n_action_bins,
        vocab_size=config.text_config.vocab_size,
        image=ImageSpec(
            height=size,
            width=size,
            resize=interpolation,
            crop="center_square" if config.image_resize_strategy == "resize-crop" else "none",
            mean=tuple(norms[0]["mean"]),
            std=tuple(norms[0]["std"]),
        ),
        prompt_template=OPENVLA_PROMPT,
        provenance=Provenance(
            role="teacher", data=f"{source}", notes=f"imported OpenVLA folder, unnorm_key {unnorm_key}"
        ),
        backend="openvla",
        action_token_scheme="openvla",
        action_vocab_size=config.action_vocab_size,
        source_dir=source_dir,
        backend_options={"unnorm_key": unnorm_key, "image_normalization": norms},
        weights_sha256=digest,
        checkpoint_id=f"{name}-{digest[:8]}",
    )
    metadata = dataclasses.replace(metadata, provenance=stamp_created(metadata))
    check_consistency_or_raise(config, tokenizer, metadata, source)
    (target / METADATA_FILE).write_text(metadata.to_yaml())
    return metadata


def check_consistency_or_raise(config, tokenizer, metadata, source: Path) -> None:
    try:
        check_consistency(config, tokenizer, metadata)
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from error


# -- a tiny random OpenVLA folder in the exact upstream layout (tests) ----------------------------------
TINY_TOWERS = ({"embed_dim": 32, "depth": 3, "num_heads": 2}, {"embed_dim": 48, "depth": 3, "num_heads": 2})


def build_llama_style_tokenizer(words: Iterable[str], vocab_size: int = 32000) -> PreTrainedTokenizerFast:
    """A byte-fallback BPE tokenizer shaped like Llama 2's tokenizer.json: <unk> 0, <s> 1, </s> 2, the 256
    byte tokens 3..258, "▁" at 29871, the pieces of ``words`` (each as "▁word"), fillers to ``vocab_size``,
    then the added "<PAD>" (32000 for Llama 2 sizes)."""
    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = 3 + byte
    pieces: list[str] = []
    merges: list[tuple[str, str]] = []
    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz:?"))
    pieces += [c for c in chars if c != EMPTY_TOKEN]
    for word in sorted({w for w in words if w}):
        piece = EMPTY_TOKEN + word[0]
        if (EMPTY_TOKEN, word[0]) not in merges:
            merges.append((EMPTY_TOKEN, word[0]))
        pieces.append(piece)
        for char in word[1:]:
            if (piece, char) not in merges:
                merges.append((piece, char))
            piece += char
            pieces.append(piece)
    next_id = len(vocab)
    for piece in dict.fromkeys(pieces):
        if next_id == EMPTY_TOKEN_ID:
            next_id += 1
        if piece not in vocab:
            vocab[piece] = next_id
            next_id += 1
    vocab[EMPTY_TOKEN] = EMPTY_TOKEN_ID
    filler = 0
    used = set(vocab.values())
    for i in range(vocab_size):
        if i not in used:
            vocab[f"<unused_{filler}>"] = i
            filler += 1
    merges = [(a, b) for a, b in merges if a in vocab and b in vocab and a + b in vocab]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(EMPTY_TOKEN), normalizers.Replace(" ", EMPTY_TOKEN)])
    backend.decoder = decoders.Sequence(
        [decoders.Replace(EMPTY_TOKEN, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    return tokenizer


def build_tiny_openvla_folder(
    path: str | Path,
    *,
    seed: int = 0,
    action_dims: int = 7,
    norm_stats: dict | None = None,
    fine_tune_statistics: dict | None = None,
    instructions: Iterable[str] = ("pick up the red block",),
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    towers: tuple[dict, ...] = TINY_TOWERS,
    image_size: int = 224,
    shards: int = 2,
    init_std: float = 0.02,
) -> Path:
    """Write a randomly initialised OpenVLA folder in the published layout (config.json with the upstream
    fields and auto_map, sharded safetensors + index, Llama-style tokenizer files, preprocessor_config.json,
    remote-code .py stubs that must never run); only ``vision_tower_overrides`` in config.json is ours.

    ``norm_stats`` (config.json) default: one dataset ``tiny_dataset`` with ``action_dims`` dims;
    ``fine_tune_statistics`` are written to dataset_statistics.json (a fine-tune's file)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = {
        w
        for text in [OPENVLA_PROMPT.replace("{instruction}", " "), *instructions]
        for w in text.lower().replace("\n", " ").split()
    }
    tokenizer = build_llama_style_tokenizer(words)
    vocab = 32000 + 64  # Llama 2's 32000 + <PAD>, padded to a multiple of 64
    if norm_stats is None:
        norm_stats = {
            "tiny_dataset": {
                "action": {
                    "q01": [-1.0 + 0.1 * i for i in range(action_dims)],
                    "q99": [1.0 + 0.2 * i for i in range(action_dims)],
                    "mask": [True] * (action_dims - 1) + [False],
                }
            }
        }
    config = OpenVlaConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=2048,
            pad_token_id=32000,
            bos_token_id=1,
            eos_token_id=2,
            initializer_range=init_std,
            model_type="llama",
        ),
        vision_backbone_id="dinosiglip-vit-so-224px",
        llm_backbone_id="llama2-7b-pure",
        arch_specifier="no-align+fused-gelu-mlp",
        use_fused_vision_backbone=True,
        image_resize_strategy="resize-naive",
        llm_max_length=2048,
        pad_token_id=32000,
        pad_to_multiple_of=64,
        timm_model_ids=["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        timm_override_act_layers=[None, None],
        image_sizes=[image_size, image_size],
        hf_llm_id="meta-llama/Llama-2-7b-hf",
        norm_stats=norm_stats,
        n_action_bins=256,
        vision_tower_overrides=[dict(t) for t in towers],
    )
    torch.manual_seed(seed)
    model = OpenVlaForActionPrediction(config).eval()
    with torch.no_grad():  # larger weights than init: a random model whose argmax is not flat
        for name, parameter in model.named_parameters():
            if name.endswith("weight") and parameter.ndim == 2:
                parameter.normal_(0.0, init_std)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    names = sorted(state)
    weight_map = {}
    total = 0
    per_shard = -(-len(names) // shards)
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in names[i * per_shard : (i + 1) * per_shard]}
        save_file(part, str(path / shard), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, shard)
        total += sum(t.numel() * t.element_size() for t in part.values())
    (path / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    data = config.to_dict()
    data.update(
        {
            "architectures": ["OpenVLAForActionPrediction"],
            "auto_map": {
                "AutoConfig": "configuration_prismatic.OpenVLAConfig",
                "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
            },
            "model_type": "openvla",
            "torch_dtype": "float32",
            "transformers_version": "4.40.1",
        }
    )
    (path / "config.json").write_text(json.dumps(data, indent=2))
    (path / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32000})
    )
    tokenizer.save_pretrained(path)
    (path / "added_tokens.json").write_text(json.dumps({"<PAD>": 32000}))
    norms = [{"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, {"mean": [0.5] * 3, "std": [0.5] * 3}]
    processor = preprocessor_config(config, norms, "bicubic") | {
        "auto_map": {
            "AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
            "AutoProcessor": "processing_prismatic.PrismaticProcessor",
        }
    }
    (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    if fine_tune_statistics is not None:
        (path / "dataset_statistics.json").write_text(json.dumps(fine_tune_statistics, indent=2))
    for module in ("configuration_prismatic", "modeling_prismatic", "processing_prismatic"):
        (path / f"{module}.py").write_text(
            "# remote code stub of a tiny test folder: importing it marks the folder and fails\n"
            "import pathlib\n"
            f"pathlib.Path(__file__).with_name('REMOTE_CODE_RAN_{module}').touch()\n"
            "raise RuntimeError('remote code must never run')\n"
        )
    return path


def tiny_openvla_checkpoint(source: Path, model_dir: Path, name: str, **import_options) -> Checkpoint:
    """Import ``source`` as ``name`` into ``model_dir`` and load it (tests)."""
    from ceed_vla_ros.checkpoint import load_checkpoint

    import_openvla(source, model_dir, name, **import_options)
    return load_checkpoint(model_dir, name)
