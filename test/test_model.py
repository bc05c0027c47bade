"""The tiny CEED-VLA model: shapes, registration, offline save/load, padding, learning from pixels."""

import os

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from ceed_vla_ros.model import FROZEN_VISION_MODULES, CeedVlaConfig, CeedVlaForActionPrediction, CeedVlaVisionEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VOCAB = 40


def tiny_config(proprio_dim: int = 3, hidden: int = 32) -> CeedVlaConfig:
    text = LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )
    return CeedVlaConfig(
        text_config=text, image_size=32, vision_channels=[8, 16], vision_strides=[2, 1], num_keypoints=8,
        vision_mlp_hidden=32, num_image_tokens=2, proprio_dim=proprio_dim, image_token_id=4, proprio_token_id=5,
    )


def make_model(proprio_dim: int = 3, seed: int = 0) -> CeedVlaForActionPrediction:
    torch.manual_seed(seed)
    return CeedVlaForActionPrediction(tiny_config(proprio_dim)).eval()


def prompt(model: CeedVlaForActionPrediction, words: list[int]) -> torch.Tensor:
    return torch.tensor([model.prefix_token_ids() + words])


def test_forward_shapes_and_keypoints():
    model = make_model()
    ids = prompt(model, [10, 11, 12])
    out = model(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32), proprio=torch.randn(1, 3))
    assert ids.shape[1] == 2 + 1 + 3
    assert out.logits.shape == (1, 6, VOCAB)
    assert out.keypoints.shape == (1, 8, 2)
    assert out.keypoints.abs().max() <= 1.0
    assert isinstance(model.vision_encoder, CeedVlaVisionEncoder)
    direct = model.vision_encoder(torch.zeros(2, 3, 32, 32))
    assert direct.image_embeds.shape == (2, 2, 32) and direct.keypoints.shape == (2, 8, 2)



def test_cached_vision_features_stand_in_for_pixels():
    model = make_model()
    pixels, proprio = torch.randn(2, 3, 32, 32), torch.randn(2, 3)
    features = model.vision_encoder.features(pixels)
    assert features.shape == (2, model.vision_encoder.feature_size) == (2, 2 * 8 + 16)
    ids = torch.cat([prompt(model, [10, 11, 12])] * 2)
    direct = model(input_ids=ids, pixel_values=pixels, proprio=proprio)
    cached = model(input_ids=ids, vision_features=features, proprio=proprio)
    assert torch.equal(direct.logits, cached.logits) and torch.equal(direct.keypoints, cached.keypoints)
    with pytest.raises(ValueError, match="not both"):
        model(input_ids=ids, pixel_values=pixels, vision_features=features, proprio=proprio)

def test_freeze_vision_stops_gradients_into_the_cnn_stage_only():
    model = make_model().train()
    model.freeze_vision()
    frozen = tuple(f"vision_encoder.{name}." for name in FROZEN_VISION_MODULES)
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (not name.startswith(frozen)), name
    assert any(name.startswith(frozen) for name, _ in model.named_parameters())
    assert model.vision_encoder.projector[0].weight.requires_grad



def test_image_and_proprio_change_the_output():
    model = make_model()
    ids = prompt(model, [10, 11])
    base = model(input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32), proprio=torch.zeros(1, 3)).logits
    other_image = model(input_ids=ids, pixel_values=torch.ones(1, 3, 32, 32), proprio=torch.zeros(1, 3)).logits
    other_proprio = model(input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32), proprio=torch.ones(1, 3)).logits
    assert not torch.allclose(base[0, -1], other_image[0, -1])
    assert not torch.allclose(base[0, -1], other_proprio[0, -1])


def test_no_proprio_token_when_proprio_dim_is_zero():
    model = make_model(proprio_dim=0)
    assert model.prefix_token_ids() == [4, 4]
    out = model(input_ids=prompt(model, [10]), pixel_values=torch.zeros(1, 3, 32, 32))
    assert out.logits.shape == (1, 3, VOCAB)
    with pytest.raises(ValueError, match="proprio_dim=0"):
        model(input_ids=prompt(model, [10]), pixel_values=torch.zeros(1, 3, 32, 32), proprio=torch.zeros(1, 1))


def test_placeholder_count_mismatch_is_an_error():
    model = make_model()
    ids = torch.tensor([[4, 5, 10, 11]])  # one image placeholder, two expected
    with pytest.raises(ValueError, match="image placeholder"):
        model(input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32), proprio=torch.zeros(1, 3))


def test_registered_with_auto_classes_and_offline_round_trip(tmp_path):
    model = make_model(seed=3)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    config = AutoConfig.from_pretrained(tmp_path, local_files_only=True)
    assert isinstance(config, CeedVlaConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True, use_safetensors=True)
    assert isinstance(loaded, CeedVlaForActionPrediction)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    ids = prompt(model, [10, 11])
    inputs = dict(pixel_values=torch.randn(1, 3, 32, 32), proprio=torch.randn(1, 3))
    # Weights are bit-identical; the forward may differ in the last bits (memory layout of mmapped weights).
    torch.testing.assert_close(model(input_ids=ids, **inputs).logits, loaded.eval()(input_ids=ids, **inputs).logits)


def test_vision_encoder_uses_he_init():
    model = make_model()
    conv = model.vision_encoder.cnn[0]
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.3)


def test_left_padded_batch_matches_single_samples():
    model = make_model(seed=1)
    short, long = [10, 11], [12, 13, 14, 15]
    pad = model.config.text_config.pad_token_id
    prefix = model.prefix_token_ids()
    ids = torch.tensor([[pad, pad] + prefix + short, prefix + long])
    mask = (torch.arange(ids.shape[1]) >= torch.tensor([[2], [0]])).long()
    images, proprio = torch.randn(2, 3, 32, 32), torch.randn(2, 3)
    batch = model(input_ids=ids, attention_mask=mask, pixel_values=images, proprio=proprio).logits
    for row, words in enumerate((short, long)):
        single = model(
            input_ids=prompt(model, words), pixel_values=images[row : row + 1], proprio=proprio[row : row + 1]
        )
        n = single.logits.shape[1]
        torch.testing.assert_close(batch[row, -n:], single.logits[0], atol=1e-5, rtol=1e-4)


def test_generate_uses_the_image_only_on_prefill():
    model = make_model(seed=2)
    ids = prompt(model, [10, 11])
    out = model.generate(
        ids, pixel_values=torch.randn(1, 3, 32, 32), proprio=torch.randn(1, 3), max_new_tokens=6, do_sample=False
    )
    assert out.shape == (1, ids.shape[1] + 6)


def test_learns_a_pixel_position_from_scratch():
    """Pixels must reach the action token: left vs right bright square -> two different tokens."""
    torch.manual_seed(0)
    model = make_model(seed=0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        side = torch.randint(0, 2, (size,), generator=generator)
        images = torch.full((size, 3, 32, 32), -1.0)
        for i in range(size):
            x = int(torch.randint(0, 12, (1,), generator=generator)) + 18 * int(side[i])
            y = int(torch.randint(0, 26, (1,), generator=generator))
            images[i, :, y : y + 6, x : x + 6] = 1.0
        return images, side

    ids = prompt(model, [10, 11]).expand(16, -1)
    for _ in range(60):
        images, side = batch(16)
        targets = 30 + side
        labels = torch.full((16, ids.shape[1] + 1), -100)
        labels[:, -1] = targets
        full = torch.cat((ids, targets[:, None]), dim=1)
        loss = model(input_ids=full, pixel_values=images, proprio=torch.zeros(16, 3), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    images, side = batch(64)
    with torch.no_grad():
        logits = model(
            input_ids=prompt(model, [10, 11]).expand(64, -1), pixel_values=images, proprio=torch.zeros(64, 3)
        ).logits
    accuracy = (logits[:, -1, 30:32].argmax(-1) == side).float().mean().item()
    assert accuracy >= 0.95


def test_config_validation():
    text = LlamaConfig(vocab_size=10, hidden_size=16, num_attention_heads=2, num_hidden_layers=1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CeedVlaConfig(text_config=text, image_token_id=12)
    with pytest.raises(ValueError, match="equal length"):
        CeedVlaConfig(text_config=text, vision_channels=[8, 8], vision_strides=[1])


def conditioned_model(seed: int = 0) -> CeedVlaForActionPrediction:
    torch.manual_seed(seed)
    config = tiny_config()
    config.vision_prompt_conditioning = True
    return CeedVlaForActionPrediction(config).eval()


def test_prompt_conditioned_image_tokens_depend_on_the_instruction_only():
    model = conditioned_model()
    assert model.vision_encoder.projector[0].in_features == model.vision_encoder.feature_size + 32
    pixels, proprio = torch.randn(1, 3, 32, 32), torch.randn(1, 3)
    red, blue = prompt(model, [10, 11, 12]), prompt(model, [10, 13, 12])
    embeds_red, _ = model.embed_inputs(red, pixels, proprio)
    embeds_blue, _ = model.embed_inputs(blue, pixels, proprio)
    assert not torch.allclose(embeds_red[0, :2], embeds_blue[0, :2])  # the image tokens differ
    # Tokens after the prompt (actions in training) do not change the image tokens when the
    # prompt length is given, so a training forward sees what the prefill saw.
    longer = torch.cat((red, torch.tensor([[20, 21, 22]])), dim=1)
    embeds_longer, _ = model.embed_inputs(longer, pixels, proprio, prompt_length=red.shape[1])
    assert torch.equal(embeds_longer[0, :2], embeds_red[0, :2])
    unbounded, _ = model.embed_inputs(longer, pixels, proprio)
    assert not torch.allclose(unbounded[0, :2], embeds_red[0, :2])
    # Left padding is not part of the prompt.
    padded = torch.cat((torch.zeros(1, 2, dtype=torch.long), red), dim=1)
    embeds_padded, _ = model.embed_inputs(padded, pixels, proprio)
    torch.testing.assert_close(embeds_padded[0, 2:4], embeds_red[0, :2])
    with pytest.raises(ValueError, match="condition"):
        model.vision_encoder(pixels)
