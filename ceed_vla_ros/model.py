"""A tiny vision-language-action model built from transformers parts, designed to learn on a CPU.

Architecture (``CeedVlaForActionPrediction``):

* vision encoder (:class:`CeedVlaVisionEncoder`): a small CNN over the RGB image plus two coordinate
  channels (x, y in [-1, 1]), a 1x1 conv to ``num_keypoints`` heat maps, a spatial softmax giving the
  expected (x, y) of every heat map (the *keypoints*), and global-average-pooled CNN features; an MLP
  maps [keypoints, pooled] to ``num_image_tokens`` token embeddings;
* optional instruction conditioning of the vision tokens (``vision_prompt_conditioning``, as RT-1
  conditions its image encoder on the instruction): the MLP also reads the mean of the
  RMS-normalised embeddings of the prompt's text tokens, so it can pick out what the instruction
  names (e.g. which cube) before the decoder sees the image;
* proprioception: normalised joint positions (``proprio_dim`` values, may be 0) -> one token by a
  linear layer;
* decoder: a transformers ``LlamaForCausalLM`` (``config.text_config``).

Input sequence: ``[image tokens][proprio token][prompt tokens] -> action tokens``. The image and
proprio positions are placeholders in ``input_ids`` (``config.image_token_id`` repeated
``num_image_tokens`` times, then ``config.proprio_token_id`` once when ``proprio_dim > 0``) whose
embeddings are replaced by the vision / proprio embeddings, as in LLaVA. :meth:`prefix_token_ids`
gives the placeholder ids to put in front of the tokenised prompt.

Batches: prompts of different lengths are LEFT-padded with the pad token and an ``attention_mask``
is passed (RoPE only sees relative positions, so left padding does not change what a sample
attends to). Placeholders are found by id, so they may sit anywhere after the padding.

Generation: ``generate(input_ids, pixel_values=..., proprio=...)`` works like LLaVA; image and
proprio inputs are only used on the prefill step.

Importing this module registers the ``ceed_vla`` model type with ``AutoConfig`` and
``AutoModelForCausalLM`` (our own code; ``trust_remote_code`` is never needed or used).
"""

import inspect
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast, ModelOutput
from transformers.utils.deprecation import deprecate_kwarg

from ceed_vla_ros.metadata import DEFAULT_PROMPT_TEMPLATE, CheckpointMetadata

MODEL_TYPE = "ceed_vla"


def cache_keyword(model: nn.Module) -> str:
    """The forward keyword that takes the KV cache: ``cache`` since transformers 5.2x, earlier
    ``past_key_values`` (transformers 5.20.2 is the newest release for Python 3.10, i.e. Humble)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(outputs) -> Cache | None:
    """The KV cache of a model output, under either name (see :func:`cache_keyword`)."""
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else getattr(outputs, "past_key_values", None)


class CeedVlaConfig(PreTrainedConfig):
    """Configuration of :class:`CeedVlaForActionPrediction`.

    Args:
        text_config: the Llama decoder configuration (``vocab_size`` includes the action tokens).
        image_size: side of the square input image in pixels.
        vision_channels: output channels of the 3x3 conv layers.
        vision_strides: stride of each conv layer (same length as ``vision_channels``).
        num_keypoints: spatial-softmax heat maps (each gives one expected (x, y)).
        vision_mlp_hidden: hidden width of the MLP from vision features to image tokens.
        num_image_tokens: image token embeddings fed to the decoder.
        proprio_dim: length of the proprioception vector (0: no proprio token).
        image_token_id: placeholder id of the image tokens in ``input_ids``.
        proprio_token_id: placeholder id of the proprio token in ``input_ids``.
        vision_prompt_conditioning: the image-token MLP also reads the mean embedding of the
            prompt's text tokens (see :meth:`CeedVlaForActionPrediction.embed_inputs`).
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=LlamaConfig)}

    text_config: dict | LlamaConfig | None = None
    image_size: int = 64
    vision_channels: list[int] | tuple[int, ...] = (32, 32, 64, 64)
    vision_strides: list[int] | tuple[int, ...] = (2, 1, 2, 1)
    num_keypoints: int = 32
    vision_mlp_hidden: int = 256
    num_image_tokens: int = 4
    proprio_dim: int = 0
    image_token_id: int = 4
    proprio_token_id: int = 5
    vision_prompt_conditioning: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        self.vision_channels = [int(c) for c in self.vision_channels]
        self.vision_strides = [int(s) for s in self.vision_strides]
        if len(self.vision_channels) != len(self.vision_strides) or not self.vision_channels:
            raise ValueError("vision_channels and vision_strides must be non-empty and of equal length")
        if self.num_image_tokens < 1 or self.num_keypoints < 1 or self.proprio_dim < 0:
            raise ValueError("num_image_tokens and num_keypoints must be >= 1, proprio_dim >= 0")
        vocab = self.text_config.vocab_size
        for name in ("image_token_id", "proprio_token_id"):
            if not 0 <= getattr(self, name) < vocab:
                raise ValueError(f"{name}={getattr(self, name)} is outside the vocabulary (size {vocab})")

    @property
    def prefix_length(self) -> int:
        """Number of placeholder positions (image tokens + proprio token) in front of the prompt."""
        return self.num_image_tokens + (1 if self.proprio_dim > 0 else 0)


@dataclass
class VisionEncoderOutput(ModelOutput):
    """Output of :class:`CeedVlaVisionEncoder`.

    Attributes:
        image_embeds: (batch, num_image_tokens, hidden) token embeddings for the decoder.
        keypoints: (batch, num_keypoints, 2) expected (x, y) in [-1, 1] of each heat map.
    """

    image_embeds: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None


@dataclass
class CeedVlaOutput(CausalLMOutputWithPast):
    """Causal-LM output plus the keypoints of the vision encoder (when ``pixel_values`` were given).

    The KV cache field is transformers' own: ``cache``, or ``past_key_values`` before 5.2x."""

    keypoints: torch.Tensor | None = None


def coordinate_grid(
    height: int, width: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) pixel-centre coordinates in [-1, 1], each of shape (height, width)."""
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return grid_x, grid_y


class SpatialSoftmax(nn.Module):
    """Expected (x, y) position of each channel's softmax over the image plane, learnable temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        weights = torch.softmax(features.flatten(2) / self.log_temperature.exp(), dim=-1)
        grid_x, grid_y = coordinate_grid(height, width, features.device, features.dtype)
        x = (weights * grid_x.reshape(1, 1, -1)).sum(-1)
        y = (weights * grid_y.reshape(1, 1, -1)).sum(-1)
        return torch.stack((x, y), dim=-1)


class CeedVlaVisionEncoder(nn.Module):
    """CoordConv CNN -> spatial-softmax keypoints + pooled features -> MLP -> image token embeddings."""

    def __init__(self, config: CeedVlaConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3 + 2  # RGB + coordinate channels
        for out_channels, stride in zip(config.vision_channels, config.vision_strides):
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                nn.GroupNorm(min(8, out_channels), out_channels),
                nn.ReLU(),
            ]
            in_channels = out_channels
        self.cnn = nn.Sequential(*layers)
        self.keypoint_conv = nn.Conv2d(in_channels, config.num_keypoints, 1)
        self.spatial_softmax = SpatialSoftmax()
        hidden = config.text_config.hidden_size
        self.num_image_tokens = config.num_image_tokens
        self.feature_size = 2 * config.num_keypoints + in_channels
        """Length of one row of :meth:`features` (2 * num_keypoints + pooled channels)."""
        self.condition_size = hidden if config.vision_prompt_conditioning else 0
        hidden_layer = nn.Linear(self.feature_size + self.condition_size, config.vision_mlp_hidden)
        hidden_layer.he_init = True  # see CeedVlaPreTrainedModel._init_weights
        self.projector = nn.Sequential(
            hidden_layer,
            nn.GELU(),
            nn.Linear(config.vision_mlp_hidden, config.num_image_tokens * hidden),
        )

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The CNN stage: (batch, feature_size) = [keypoints (x, y) flattened, pooled CNN features].

        ``pixel_values``: (batch, 3, H, W), preprocessed (see ``policy.preprocess_images``). A
        training run with a frozen CNN computes these once per image and trains :meth:`project`.
        """
        batch, _, height, width = pixel_values.shape
        grid_x, grid_y = coordinate_grid(height, width, pixel_values.device, pixel_values.dtype)
        coords = torch.stack((grid_x, grid_y)).expand(batch, 2, height, width)
        features = self.cnn(torch.cat((pixel_values, coords), dim=1))
        keypoints = self.spatial_softmax(self.keypoint_conv(features))
        return torch.cat((keypoints.flatten(1), features.mean(dim=(2, 3))), dim=1)

    def project(self, features: torch.Tensor, condition: torch.Tensor | None = None) -> VisionEncoderOutput:
        """The MLP stage: :meth:`features` rows (+ the prompt ``condition`` (batch, hidden) when the
        config asks for it) -> image token embeddings (and the keypoints)."""
        batch = features.shape[0]
        keypoints = features[:, : 2 * self.keypoint_conv.out_channels].reshape(batch, -1, 2)
        if self.condition_size:
            if condition is None:
                raise ValueError("this vision encoder is conditioned on the prompt: give condition")
            features = torch.cat((features, condition.to(features.dtype)), dim=1)
        tokens = self.projector(features)
        return VisionEncoderOutput(image_embeds=tokens.reshape(batch, self.num_image_tokens, -1), keypoints=keypoints)

    def forward(self, pixel_values: torch.Tensor, condition: torch.Tensor | None = None) -> VisionEncoderOutput:
        """``pixel_values``: (batch, 3, H, W), preprocessed (see ``policy.preprocess_images``)."""
        return self.project(self.features(pixel_values), condition)


class CeedVlaPreTrainedModel(PreTrainedModel):
    config_class = CeedVlaConfig
    base_model_prefix = "ceed_vla"
    input_modalities = ("image", "text")
    _supports_sdpa = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, SpatialSoftmax):
            init.zeros_(module.log_temperature)
        elif isinstance(module, nn.Conv2d) or getattr(module, "he_init", False):
            # The CNN and the hidden MLP layer are trained from scratch: He init, not normal(0.02).
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)


FROZEN_VISION_MODULES = ("cnn", "keypoint_conv", "spatial_softmax")
"""Parts of the vision encoder that :meth:`CeedVlaForActionPrediction.freeze_vision` keeps fixed."""


class CeedVlaForActionPrediction(CeedVlaPreTrainedModel, GenerationMixin):
    """Image + proprio + prompt -> action tokens; a Llama decoder with a CNN keypoint vision encoder."""

    def __init__(self, config: CeedVlaConfig) -> None:
        super().__init__(config)
        self.vision_encoder = CeedVlaVisionEncoder(config)
        hidden = config.text_config.hidden_size
        self.proprio_projector = nn.Linear(config.proprio_dim, hidden) if config.proprio_dim > 0 else None
        self.language_model = LlamaForCausalLM(config.text_config)
        self._lm_cache_keyword = cache_keyword(self.language_model)
        self.post_init()

    def freeze_vision(self) -> None:
        """Stop gradients into the CNN stage of the vision encoder (:meth:`CeedVlaVisionEncoder.features`:
        the parts named in :data:`FROZEN_VISION_MODULES`); the projector MLP, the proprio projector and
        the decoder keep training. The frozen features of an image can then be computed once
        (``vision_encoder.features``) and passed as ``vision_features``."""
        for name in FROZEN_VISION_MODULES:
            getattr(self.vision_encoder, name).requires_grad_(False)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def prefix_token_ids(self) -> list[int]:
        """Placeholder ids that must precede the tokenised prompt (image tokens, then proprio)."""
        return prefix_token_ids(self.config)

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        prompt_length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings with the image / proprio placeholders replaced; also returns the keypoints.

        ``vision_features`` (rows of ``vision_encoder.features``, precomputed) may replace
        ``pixel_values``: training with a frozen CNN.

        With ``config.vision_prompt_conditioning`` the image tokens also depend on the mean
        embedding of the prompt's text tokens: every position before ``prompt_length`` (default:
        all of ``input_ids``, as in a prefill) that is neither padding nor a placeholder. Training
        forwards that append action tokens to the prompt pass ``prompt_length``.

        Only the first ``num_image_tokens`` image placeholders (first proprio placeholder) of each
        row are replaced. Without ``pixel_values`` / ``proprio`` (decode steps after the prefill)
        and after those first positions every id, including a placeholder id, is an ordinary token.

        Raises:
            ValueError: the number of placeholders does not match the given image / proprio inputs.
        """
        embeds = self.get_input_embeddings()(input_ids)
        keypoints = None
        if pixel_values is not None and vision_features is not None:
            raise ValueError("give pixel_values or vision_features, not both")
        if pixel_values is not None or vision_features is not None:
            condition = (
                self._prompt_condition(input_ids, embeds, prompt_length)
                if self.config.vision_prompt_conditioning
                else None
            )
            if vision_features is None:
                vision = self.vision_encoder(pixel_values.to(embeds.dtype), condition)
            else:
                vision = self.vision_encoder.project(vision_features.to(embeds.dtype), condition)
            keypoints = vision.keypoints
            image_mask = input_ids == self.config.image_token_id
            embeds = _scatter_placeholders(embeds, image_mask, vision.image_embeds, "image")
        if proprio is not None:
            if self.proprio_projector is None:
                raise ValueError("this model has proprio_dim=0 but proprio was given")
            proprio_mask = input_ids == self.config.proprio_token_id
            proprio_embeds = self.proprio_projector(proprio.to(embeds.dtype)).unsqueeze(1)
            embeds = _scatter_placeholders(embeds, proprio_mask, proprio_embeds, "proprio")
        return embeds, keypoints

    def _prompt_condition(
        self, input_ids: torch.Tensor, embeds: torch.Tensor, prompt_length: int | None
    ) -> torch.Tensor:
        """(batch, hidden) mean of the RMS-normalised embeddings of the prompt's text tokens (see
        :meth:`embed_inputs`). Normalising each token first keeps the instruction's distinguishing
        words at unit scale; raw embeddings start at std 0.02 and would hardly move the MLP."""
        length = input_ids.shape[1] if prompt_length is None else int(prompt_length)
        ids = input_ids[:, :length]
        text = (ids != self.config.image_token_id) & (ids != self.config.proprio_token_id)
        if self.config.text_config.pad_token_id is not None:
            text &= ids != self.config.text_config.pad_token_id
        tokens = embeds[:, :length]
        tokens = tokens * torch.rsqrt(tokens.pow(2).mean(-1, keepdim=True) + 1e-6)
        weights = text.to(embeds.dtype).unsqueeze(-1)
        return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        vision_features: torch.Tensor | None = None,
        prompt_length: int | None = None,
        **kwargs,
    ) -> CeedVlaOutput:
        """Causal-LM forward. ``labels`` are aligned with ``input_ids`` (shifted inside), -100 = ignored.

        ``pixel_values`` (batch, 3, H, W) and ``proprio`` (batch, proprio_dim) are only needed when
        ``input_ids`` contain their placeholders (the prefill / training step); precomputed
        ``vision_features`` may stand in for ``pixel_values``; ``prompt_length`` marks where the
        prompt ends when tokens follow it (see :meth:`embed_inputs`).
        """
        keypoints = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds, keypoints = self.embed_inputs(
                input_ids, pixel_values, proprio, vision_features, prompt_length
            )
        kwargs.pop("return_dict", None)
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{self._lm_cache_keyword: cache},
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            return_dict=True,
            **kwargs,
        )
        return CeedVlaOutput(
            loss=outputs.loss,
            logits=outputs.logits,
            **{self._lm_cache_keyword: output_cache(outputs)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            keypoints=keypoints,
        )

    def prepare_inputs_for_generation(
        self,
        *args,
        pixel_values: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        """As the base class, but image and proprio inputs only go to the prefill step."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["pixel_values"] = pixel_values
            model_inputs["proprio"] = proprio
        return model_inputs


def prefix_token_ids(config: CeedVlaConfig) -> list[int]:
    """Placeholder ids in front of the prompt: ``num_image_tokens`` image ids, then one proprio id."""
    ids = [config.image_token_id] * config.num_image_tokens
    if config.proprio_dim > 0:
        ids.append(config.proprio_token_id)
    return ids


def _scatter_placeholders(embeds: torch.Tensor, mask: torch.Tensor, values: torch.Tensor, what: str) -> torch.Tensor:
    """Replace the first ``values.shape[1]`` placeholder positions of each row by ``values``.

    Later occurrences of the placeholder id (e.g. inside a Jacobi guess drawn from the prompt) stay
    ordinary tokens, exactly as they are when the same ids are decoded on top of a KV cache.
    """
    per_row = values.shape[1]
    first = mask & (mask.cumsum(dim=1) <= per_row)
    found = first.sum(dim=1)
    if bool((found != per_row).any()):
        raise ValueError(f"input_ids contain {found.tolist()} {what} placeholder tokens per row, expected {per_row}")
    return embeds.masked_scatter(first.unsqueeze(-1), values.to(embeds.dtype))


AutoConfig.register(MODEL_TYPE, CeedVlaConfig, exist_ok=True)
AutoModelForCausalLM.register(CeedVlaConfig, CeedVlaForActionPrediction, exist_ok=True)


# -- building a model: its tokenizer, config and random weights ---------------------------------------
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>", "<proprio>")


def action_token(bin_index: int) -> str:
    """Tokenizer string of the action token of bin ``bin_index``."""
    return f"<act_{bin_index}>"


def encode_prompt(
    tokenizer: PreTrainedTokenizerFast, metadata: CheckpointMetadata, config: CeedVlaConfig, instruction: str
) -> list[int]:
    """Prompt ids: placeholders (``prefix_token_ids``) + tokenised ``prompt_template`` (no BOS/EOS)."""
    text = metadata.prompt_template.format(instruction=instruction.strip())
    return prefix_token_ids(config) + tokenizer(text, add_special_tokens=False)["input_ids"]


def build_tokenizer(
    texts: Iterable[str], n_bins: int = 256, template: str = DEFAULT_PROMPT_TEMPLATE
) -> PreTrainedTokenizerFast:
    """WordLevel tokenizer: specials, the lower-cased words of ``template`` and ``texts``, then actions.

    Ids: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3, ``<image>`` 4, ``<proprio>`` 5, the words
    (sorted), and last the ``n_bins`` action tokens so that ``id = vocab_size - 1 - bin``.
    """
    pre_tokenizer = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for text in [template.replace("{instruction}", " "), *texts]:
        words.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(text.lower()))
    tokens = list(SPECIAL_TOKENS) + sorted(words - set(SPECIAL_TOKENS))
    tokens += [action_token(b) for b in range(n_bins - 1, -1, -1)]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<image>", "<proprio>"],
    )


def make_model_config(
    tokenizer: PreTrainedTokenizerFast,
    metadata: CheckpointMetadata,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    num_image_tokens: int = 4,
    num_keypoints: int = 32,
    vision_channels: tuple[int, ...] = (32, 32, 64, 64),
    vision_strides: tuple[int, ...] = (2, 1, 2, 1),
    vision_mlp_hidden: int = 256,
    max_position_embeddings: int = 512,
    vision_prompt_conditioning: bool = False,
) -> CeedVlaConfig:
    """A :class:`CeedVlaConfig` matching the tokenizer and metadata (vocab, proprio dim, image size)."""
    if metadata.image.height != metadata.image.width:
        raise ValueError("the model expects square images (image.height == image.width)")
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return CeedVlaConfig(
        text_config=text_config,
        image_size=metadata.image.height,
        vision_channels=list(vision_channels),
        vision_strides=list(vision_strides),
        num_keypoints=num_keypoints,
        vision_mlp_hidden=vision_mlp_hidden,
        num_image_tokens=num_image_tokens,
        vision_prompt_conditioning=vision_prompt_conditioning,
        proprio_dim=metadata.proprio_dim,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        proprio_token_id=tokenizer.convert_tokens_to_ids("<proprio>"),
    )


def new_model(config: CeedVlaConfig, seed: int) -> CeedVlaForActionPrediction:
    """A randomly initialised model, reproducible from ``seed``."""
    torch.manual_seed(seed)
    return CeedVlaForActionPrediction(config).eval()
