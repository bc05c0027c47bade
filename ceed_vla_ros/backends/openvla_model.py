"""OpenVLA (Prismatic) as plain torch + transformers modules, reading the published checkpoints as they are.

Written from the public facts of OpenVLA's code (``prismatic/extern/hf/modeling_prismatic.py``,
``configuration_prismatic.py``) and timm 0.9.16's ``VisionTransformer``; nothing from a checkpoint
folder is imported and timm is not needed (it imports torchvision, whose reachable wheels are CUDA
builds that fail beside a CPU torch). The parameter names equal the published state dict:

* ``vision_backbone.featurizer.*``: DINOv2 ViT-L/14 with 4 registers (timm
  ``vit_large_patch14_reg4_dinov2``: class token + 4 register tokens, position embeddings for the
  patches only, LayerScale whose ``gamma`` OpenVLA stores as ``scale_factor``);
* ``vision_backbone.fused_featurizer.*``: SigLIP so400m/14 (timm ``vit_so400m_patch14_siglip_224``:
  no class token, MAP attention-pool head ``attn_pool.*``, unused for features but in the file);
* ``projector.fc1/fc2/fc3`` (``fused-gelu-mlp``: vision_dim -> 4 vision_dim -> llm -> llm, GELU
  between) or ``projector.fc1/fc2`` (``gelu-mlp``);
* ``language_model.*``: transformers' ``LlamaForCausalLM`` of ``text_config``.

Forward (as upstream): both towers read the patch tokens after their SECOND-TO-LAST block (no final
norm); the 6 channels of ``pixel_values`` are split 3 + 3 (each tower's own normalisation); the
features are concatenated (1024 + 1152 = 2176 for the 7B), projected, and the patch embeddings are
inserted right after BOS. Here "after BOS" is after each row's first attended position, so LEFT
padded batches work too; ``attention_mask`` is always given in the caller's (text) coordinates,
one entry per input id, and the patch positions are added to it inside (also on cached steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, LlamaConfig, LlamaForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from ceed_vla_ros.model import cache_keyword, output_cache

MODEL_TYPE = "openvla"

# The towers OpenVLA's vision_backbone_ids use (timm 0.9.16 definitions, pretrained tag stripped).
TIMM_ARCHITECTURES: dict[str, dict] = {
    "vit_large_patch14_reg4_dinov2": dict(
        patch_size=14,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        mlp_ratio=4.0,
        layer_scale=True,
        class_token=True,
        reg_tokens=4,
        no_embed_class=True,
        global_pool="token",
    ),
    "vit_so400m_patch14_siglip_224": dict(
        patch_size=14,
        embed_dim=1152,
        depth=27,
        num_heads=16,
        mlp_ratio=3.7362,
        layer_scale=False,
        class_token=False,
        reg_tokens=0,
        no_embed_class=False,
        global_pool="map",
    ),
    "vit_so400m_patch14_siglip_384": dict(
        patch_size=14,
        embed_dim=1152,
        depth=27,
        num_heads=16,
        mlp_ratio=3.7362,
        layer_scale=False,
        class_token=False,
        reg_tokens=0,
        no_embed_class=False,
        global_pool="map",
    ),
}
TOWER_KEYS = ("featurizer", "fused_featurizer")
SUPPORTED_PROJECTORS = ("fused-gelu-mlp", "gelu-mlp")


def tower_architecture(timm_id: str, override: dict | None = None) -> dict:
    """Architecture of a timm id (``name.tag``); ``override`` (tiny test models) replaces fields."""
    name = timm_id.split(".", 1)[0]
    if name not in TIMM_ARCHITECTURES:
        raise ValueError(f"vision tower {timm_id!r} is not supported; known: {', '.join(TIMM_ARCHITECTURES)}")
    return {**TIMM_ARCHITECTURES[name], **(override or {})}


class OpenVlaConfig(PreTrainedConfig):
    """config.json of an OpenVLA folder (``model_type: openvla``), upstream field names.

    ``vision_tower_overrides`` is ours (not upstream): per tower, architecture fields replacing the
    timm defaults; only the tiny test folders carry it.
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=LlamaConfig)}

    text_config: dict | LlamaConfig | None = None
    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    llm_backbone_id: str = "llama2-7b-pure"
    arch_specifier: str = "no-align+fused-gelu-mlp"
    use_fused_vision_backbone: bool | None = None
    image_resize_strategy: str = "resize-naive"
    llm_max_length: int = 2048
    pad_token_id: int | None = 32000
    pad_to_multiple_of: int = 64
    output_projector_states: bool = False
    timm_model_ids: list | None = None
    timm_override_act_layers: list | None = None
    image_sizes: list | None = None
    hf_llm_id: str | None = None
    norm_stats: dict | None = None
    n_action_bins: int = 256
    vision_tower_overrides: list | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        if self.use_fused_vision_backbone is None:
            self.use_fused_vision_backbone = self.vision_backbone_id.startswith(("dinoclip", "dinosiglip"))
        if not self.timm_model_ids:
            raise ValueError("config.json needs timm_model_ids (written by OpenVLA's configuration)")
        if len(self.timm_model_ids) != (2 if self.use_fused_vision_backbone else 1):
            raise ValueError(f"timm_model_ids {self.timm_model_ids} do not match use_fused_vision_backbone")
        if any(act not in (None, "gelu") for act in self.timm_override_act_layers or []):
            raise ValueError(
                f"timm_override_act_layers {self.timm_override_act_layers}: only the default GELU towers "
                "(dinosiglip) are supported"
            )
        if self.projector_type not in SUPPORTED_PROJECTORS:
            raise ValueError(f"arch_specifier {self.arch_specifier!r}: projector must be one of {SUPPORTED_PROJECTORS}")
        if not self.image_sizes:
            raise ValueError("config.json needs image_sizes")

    @property
    def projector_type(self) -> str:
        return self.arch_specifier.split("+")[-1]

    def towers(self) -> list[dict]:
        overrides = self.vision_tower_overrides or [None] * len(self.timm_model_ids)
        return [
            {**tower_architecture(timm_id, override), "image_size": int(size)}
            for timm_id, override, size in zip(self.timm_model_ids, overrides, self.image_sizes)
        ]

    @property
    def num_patches(self) -> int:
        """Patch embeddings inserted after BOS (256 for 224 px / patch 14)."""
        tower = self.towers()[0]
        return (tower["image_size"] // tower["patch_size"]) ** 2

    @property
    def action_vocab_size(self) -> int:
        """OpenVLA's id base of the action tokens: the text vocabulary minus its padding (32000)."""
        return self.text_config.vocab_size - self.pad_to_multiple_of


# -- the vision towers (timm VisionTransformer parameter names) -----------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((dim,), 1e-5))  # timm's gamma, renamed as OpenVLA saves it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, layer_scale: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionPoolLatent(nn.Module):
    """timm's MAP head (SigLIP): parameters only -- OpenVLA reads patch features, never the pooled vector."""

    def __init__(self, dim: int, mlp_hidden: int) -> None:
        super().__init__()
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)


class VisionTower(nn.Module):
    """A timm ``VisionTransformer`` (num_classes 0) whose forward is OpenVLA's featurizer: the patch
    tokens after the second-to-last block, prefix (class / register) tokens dropped, no final norm."""

    def __init__(self, arch: dict) -> None:
        super().__init__()
        dim = arch["embed_dim"]
        self.arch = arch
        self.num_prefix_tokens = int(arch["class_token"]) + arch["reg_tokens"]
        num_patches = (arch["image_size"] // arch["patch_size"]) ** 2
        self.patch_embed = PatchEmbed(arch["patch_size"], dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if arch["class_token"] else None
        self.reg_token = nn.Parameter(torch.zeros(1, arch["reg_tokens"], dim)) if arch["reg_tokens"] else None
        embed_len = num_patches if arch["no_embed_class"] else num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, dim))
        mlp_hidden = int(dim * arch["mlp_ratio"])
        self.blocks = nn.Sequential(
            *[Block(dim, arch["num_heads"], mlp_hidden, arch["layer_scale"]) for _ in range(arch["depth"])]
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn_pool = AttentionPoolLatent(dim, mlp_hidden) if arch["global_pool"] == "map" else None
        self.feature_block = arch["depth"] - 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.arch["no_embed_class"]:
            x = torch.cat([*prefix, x + self.pos_embed], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + self.pos_embed
        for block in self.blocks[: self.feature_block + 1]:
            x = block(x)
        return x[:, self.num_prefix_tokens :]


class PrismaticVisionBackbone(nn.Module):
    def __init__(self, config: OpenVlaConfig) -> None:
        super().__init__()
        towers = config.towers()
        self.featurizer = VisionTower(towers[0])
        self.fused_featurizer = VisionTower(towers[1]) if config.use_fused_vision_backbone else None
        self.embed_dim = sum(t["embed_dim"] for t in towers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.fused_featurizer is None:
            return self.featurizer(pixel_values)
        image, image_fused = torch.split(pixel_values, [3, 3], dim=1)
        return torch.cat([self.featurizer(image), self.fused_featurizer(image_fused)], dim=2)


class PrismaticProjector(nn.Module):
    def __init__(self, projector_type: str, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        if projector_type == "fused-gelu-mlp":
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
            self.fc3 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(F.gelu(self.fc1(x)))
        return x if self.fc3 is None else self.fc3(F.gelu(x))


# -- the VLA -----------------------------------------------------------------------------------------
@dataclass
class OpenVlaOutput(CausalLMOutputWithPast):
    """Logits over the multimodal sequence (text positions + ``num_patches`` after BOS)."""


class OpenVlaPreTrainedModel(PreTrainedModel):
    config_class = OpenVlaConfig
    base_model_prefix = "openvla"
    input_modalities = ("image", "text")
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["Block", "LlamaDecoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, LayerScale):
            nn.init.constant_(module.scale_factor, 1e-5)
        elif isinstance(module, VisionTower):
            nn.init.normal_(module.pos_embed, std=std)
            for token in (module.cls_token, module.reg_token):
                if token is not None:
                    nn.init.normal_(token, std=1e-6)
        elif isinstance(module, AttentionPoolLatent):
            nn.init.normal_(module.latent, std=module.latent.shape[-1] ** -0.5)
        else:
            super()._init_weights(module)


class OpenVlaForActionPrediction(OpenVlaPreTrainedModel, GenerationMixin):
    """OpenVLA's ``OpenVLAForActionPrediction``, natively (see the module docstring)."""

    def __init__(self, config: OpenVlaConfig) -> None:
        super().__init__(config)
        self.vision_backbone = PrismaticVisionBackbone(config)
        self.projector = PrismaticProjector(
            config.projector_type, self.vision_backbone.embed_dim, config.text_config.hidden_size
        )
        self.language_model = LlamaForCausalLM(config.text_config)
        self._lm_cache_keyword = cache_keyword(self.language_model)
        self.num_patches = config.num_patches
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def freeze_vision(self) -> None:
        """No gradients into the two towers (projector and LLM keep training)."""
        self.vision_backbone.requires_grad_(False)

    def patch_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W) -> projected patch embeddings (B, num_patches, hidden)."""
        dtype = self.projector.fc1.weight.dtype
        return self.projector(self.vision_backbone(pixel_values.to(dtype)))

    @staticmethod
    def insert_positions(attention_mask: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """(B,) where the patches go: right after each row's first attended position (BOS)."""
        if attention_mask is None:
            return torch.ones(batch, dtype=torch.long, device=device)
        return attention_mask.long().argmax(dim=1) + 1

    def splice(self, text: torch.Tensor, patches: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Insert ``patches`` (B, P, ...) into ``text`` (B, L, ...) before index ``at`` (B,) of each row."""
        batch, length = text.shape[:2]
        count = patches.shape[1]
        j = torch.arange(length + count, device=text.device).unsqueeze(0)
        at = at.unsqueeze(1)
        index = torch.where(j < at, j, torch.where(j < at + count, length + j - at, j - count))
        combined = torch.cat((text, patches.to(text.dtype)), dim=1)
        if combined.ndim == 3:
            index = index.unsqueeze(-1).expand(-1, -1, combined.shape[-1])
        return combined.gather(1, index)

    def text_positions(self, attention_mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
        """(B, L) multimodal positions of the L text positions (the inverse of :meth:`splice`)."""
        at = self.insert_positions(attention_mask, batch, device).unsqueeze(1)
        t = torch.arange(length, device=device).unsqueeze(0)
        return torch.where(t < at, t, t + self.num_patches)

    def _full_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        ones = attention_mask.new_ones(attention_mask.shape[0], self.num_patches)
        at = self.insert_positions(attention_mask, attention_mask.shape[0], attention_mask.device)
        return self.splice(attention_mask, ones, at)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> OpenVlaOutput:
        """``attention_mask``: one entry per id of the text sequence so far (see the module docstring);
        ``pixel_values`` (B, 6, H, W) on the step that holds BOS (prefill / training); ``labels``
        aligned with ``input_ids`` (the patch positions get -100)."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds = self.get_input_embeddings()(input_ids)
        batch, length = inputs_embeds.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        if pixel_values is not None:
            if past:
                raise ValueError("pixel_values go with the first forward (the one holding BOS), not a cached step")
            at = self.insert_positions(attention_mask, batch, inputs_embeds.device)
            inputs_embeds = self.splice(inputs_embeds, self.patch_embeddings(pixel_values), at)
            if attention_mask is not None:
                attention_mask = self._full_mask(attention_mask)
            if labels is not None:
                ignore = labels.new_full((batch, self.num_patches), -100)
                labels = self.splice(labels, ignore, at)
        elif attention_mask is not None and past and attention_mask.shape[1] + self.num_patches == past + length:
            attention_mask = self._full_mask(attention_mask)
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
        return OpenVlaOutput(
            loss=outputs.loss,
            logits=outputs.logits,
            **{self._lm_cache_keyword: output_cache(outputs)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def count_parameters_from_config(config: OpenVlaConfig) -> int:
    """Parameters of the model ``config`` describes, by formula (checks the module tree)."""
    total = 0
    for arch in config.towers():
        d, patches = arch["embed_dim"], (arch["image_size"] // arch["patch_size"]) ** 2
        hidden = int(d * arch["mlp_ratio"])
        prefix = int(arch["class_token"]) + arch["reg_tokens"]
        total += 3 * arch["patch_size"] ** 2 * d + d  # patch embedding
        total += prefix * d + (patches if arch["no_embed_class"] else patches + prefix) * d
        block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
        block += 2 * d if arch["layer_scale"] else 0
        total += arch["depth"] * block + 2 * d
        if arch["global_pool"] == "map":
            total += (
                d + (d * d + d) + (2 * d * d + 2 * d) + (d * d + d) + 2 * d + (d * hidden + hidden) + (hidden * d + d)
            )
    vision = sum(a["embed_dim"] for a in config.towers())
    text = config.text_config
    llm = text.hidden_size
    if config.projector_type == "fused-gelu-mlp":
        total += (vision * 4 * vision + 4 * vision) + (4 * vision * llm + llm) + (llm * llm + llm)
    else:
        total += (vision * llm + llm) + (llm * llm + llm)
    kv = text.num_key_value_heads * (llm // text.num_attention_heads)
    layer = llm * llm * 2 + 2 * llm * kv + 3 * llm * text.intermediate_size + 2 * llm
    total += text.num_hidden_layers * layer + llm + 2 * text.vocab_size * llm
    return total
