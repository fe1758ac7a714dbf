"""Quantizing an open_clip ViT-B-32 (random weights, offline): explicit attention is numerically
identical, the layer inventory, FP teacher switch, calibration-state round trips."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from p4q_export.errors import UserError
from p4q_export.quant import (
    ExplicitAttention,
    QuantConv2d,
    QuantLinear,
    calibrate_clip,
    get_profile,
    load_quant_state,
    make_attention_explicit,
    quant_layers,
    quant_state_dict,
    quantization_disabled,
    quantize_clip,
)


@pytest.fixture(scope="module")
def vit_b32():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32").eval()
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat.", "a sneaker", "the digit 7, written by hand."])
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    return model, images, tokens


def test_explicit_attention_is_numerically_identical_on_vit_b32(vit_b32):
    model, images, tokens = vit_b32
    model = copy.deepcopy(model)
    with torch.no_grad():
        img_ref, txt_ref = model.encode_image(images), model.encode_text(tokens)
        make_attention_explicit(model)
        img, txt = model.encode_image(images), model.encode_text(tokens)
    assert sum(isinstance(m, ExplicitAttention) for m in model.modules()) == 24
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    assert (img - img_ref).abs().max().item() <= 1e-5
    assert (txt - txt_ref).abs().max().item() <= 1e-5
    assert img_ref.abs().max().item() > 0.1  # a real signal, not a vanishing output


def test_explicit_attention_matches_mha_masks_and_layouts():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
        x = torch.randn(2, 7, 32) if batch_first else torch.randn(7, 2, 32)
        causal = torch.full((7, 7), float("-inf")).triu(1)
        explicit = ExplicitAttention.from_mha(mha)
        for mask in (None, causal, causal.isinf()):
            ref, _ = mha(x, x, x, need_weights=False, attn_mask=mask)
            out, _ = explicit(x, x, x, need_weights=False, attn_mask=mask)
            assert (out - ref).abs().max().item() <= 1e-5
        ref, ref_w = mha(x, x, x, need_weights=True, attn_mask=causal)
        out, w = explicit(x, x, x, need_weights=True, attn_mask=causal)
        assert (out - ref).abs().max().item() <= 1e-5 and (w - ref_w).abs().max().item() <= 1e-6


@pytest.fixture(scope="module")
def quantized_b32(vit_b32):
    model, images, tokens = vit_b32
    qmodel = quantize_clip(copy.deepcopy(model), get_profile("trt"), quantize_text=True)
    calibrate_clip(qmodel, images, tokens, batch_size=2)
    return qmodel


def test_vit_b32_layer_inventory(vit_b32, quantized_b32):
    image_layers = [n for n in quant_layers(quantized_b32) if n.startswith("visual.")]
    assert len(image_layers) == 12 * 4 + 1
    assert image_layers[:4] == [
        "visual.transformer.resblocks.0.attn.qkv",
        "visual.transformer.resblocks.0.attn.out_proj",
        "visual.transformer.resblocks.0.mlp.c_fc",
        "visual.transformer.resblocks.0.mlp.c_proj",
    ]
    assert image_layers[-1] == "visual.proj"
    names = list(quant_layers(quantized_b32))
    assert len(names) == 2 * 49 and names[-1] == "text_projection"
    # the image tower alone, with the patch embedding
    model, _, _ = vit_b32
    with_conv = quantize_clip(copy.deepcopy(model), get_profile("paper", "4/4", quantize_patch_embed=True))
    layers = quant_layers(with_conv)
    assert len(layers) == 50 and isinstance(layers["visual.conv1"], QuantConv2d)
    assert next(iter(layers)) == "visual.conv1"
    # per-layer numbers an exporter needs
    wq = layers["visual.transformer.resblocks.0.attn.qkv"].weight_quantizer
    assert wq.scale.shape == (3 * 768,) and wq.bits == 4


def test_quantized_outputs_close_but_not_equal_and_teacher_is_fp(vit_b32, quantized_b32):
    model, images, _tokens = vit_b32
    with torch.no_grad():
        ref = model.encode_image(images)
        out = quantized_b32.encode_image(images)
        with quantization_disabled(quantized_b32):
            teacher = quantized_b32.encode_image(images)
        again = quantized_b32.encode_image(images)
    cos = F.cosine_similarity(out, ref).min().item()
    assert 0.99 < cos < 0.999999
    assert (teacher - ref).abs().max().item() <= 1e-5
    assert torch.equal(again, out)  # flags restored after the context


def test_projection_matmul_and_weight_grid(quantized_b32):
    proj = quant_layers(quantized_b32)["visual.proj"]
    assert isinstance(proj, QuantLinear) and tuple(proj.weight.shape) == (512, 768)
    x = torch.randn(2, 768)
    torch.testing.assert_close(x @ proj, proj(x))
    wq = proj.weight_quantizer(proj.weight)
    codes = wq / proj.weight_quantizer.scale[:, None]
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-3)
    assert round(codes.abs().max().item()) == 127  # narrow symmetric grid, reached by the max weight


def test_calibration_state_round_trips(vit_b32, quantized_b32):
    model, images, tokens = vit_b32
    state = quant_state_dict(quantized_b32)
    assert len(state) == 2 * 98 * 3  # input + weight quantizers × (scale, zero_point, calibrated)
    assert state["visual.transformer.resblocks.0.attn.qkv.input_quantizer.scale"].ndim == 0
    with torch.no_grad():
        expected_img = quantized_b32.encode_image(images)
        expected_txt = quantized_b32.encode_text(tokens)
    fresh = quantize_clip(copy.deepcopy(model), get_profile("trt"), quantize_text=True)
    with pytest.raises(RuntimeError, match="before calibration"), torch.no_grad():
        fresh.encode_image(images)
    load_quant_state(fresh, state)
    with torch.no_grad():
        assert torch.equal(fresh.encode_image(images), expected_img)
        assert torch.equal(fresh.encode_text(tokens), expected_txt)
    # full state_dict into a freshly quantized model with other random weights
    import open_clip

    torch.manual_seed(123)
    other = quantize_clip(open_clip.create_model("ViT-B-32").eval(), get_profile("trt"), quantize_text=True)
    other.load_state_dict(quantized_b32.state_dict())
    with torch.no_grad():
        assert torch.equal(other.encode_image(images), expected_img)
    # a state from another setup is refused clearly
    image_only = quantize_clip(copy.deepcopy(model), get_profile("trt"))
    with pytest.raises(UserError, match="does not match"):
        load_quant_state(image_only, state)


def test_text_tower_needs_tokens(vit_b32):
    model, images, _ = vit_b32
    q = quantize_clip(copy.deepcopy(model), get_profile("trt"), quantize_text=True)
    with pytest.raises(UserError, match="text_tokens"):
        calibrate_clip(q, images)


def test_text_calibration_observes_only_what_prompts_run(vit_b32):
    """Text calibration runs the tower cut after the batch's last EOS, as learned prompts run in
    training and export: the padding positions of the 77-token context are never observed."""
    model, images, tokens = vit_b32
    qmodel = quantize_clip(copy.deepcopy(model), get_profile("trt"), quantize_text=True)
    first = qmodel.transformer.resblocks[0].mlp.c_fc
    lengths = []
    hook = first.register_forward_pre_hook(lambda _m, args: lengths.append(args[0].shape[1]))
    calibrate_clip(qmodel, images[:1], tokens, batch_size=8)
    hook.remove()
    longest = int(tokens.argmax(dim=-1).max()) + 1  # the EOS token has the largest id
    assert lengths == [longest] and longest < tokens.shape[1] == 77


def test_adapter_calibrates_on_the_fp_forward_like_the_towers():
    """QAdapter.calibrate uses `calibrating`: out_fc's input range is observed on the FP forward
    (in_fc's weights not quantized), as every tower layer is."""
    from p4q_export.p4q.adapter import QAdapter

    torch.manual_seed(0)
    adapter = QAdapter(64, profile=get_profile("trt"), bits=8)
    adapter.set_quantization(False)
    feats = torch.randn(256, 64) * 3
    adapter.calibrate(feats)
    in_fc, out_fc = adapter.fc.in_fc, adapter.fc.out_fc
    fp_hidden = F.relu(F.linear(feats, in_fc.weight, in_fc.bias))
    assert out_fc.input_quantizer.scale.item() == pytest.approx(fp_hidden.abs().max().item() / 127, rel=1e-6)
    assert in_fc.input_quantizer.scale.item() == pytest.approx(feats.abs().max().item() / 127, rel=1e-6)
    assert all(q.enabled for q in adapter.quantizers())
