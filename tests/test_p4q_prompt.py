"""Prompt layout, the text path against open_clip's encode_text, and the adapter (random-weight
test-bed architecture: no pretraining needed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from p4q_export.errors import UserError
from p4q_export.p4q.adapter import QAdapter
from p4q_export.p4q.prompt_learner import (
    PromptLearner,
    class_embeddings,
    encode_prompt_embeddings,
    token_count,
)

CLASSES = ["t-shirt", "ankle boot", "bag"]


@pytest.fixture(scope="module")
def loaded():
    from p4q_export.models import load_model

    torch.manual_seed(0)
    return load_model("p4q-testbed")


def test_layout_end(loaded):
    tok = loaded.tokenizer
    pl = PromptLearner(loaded.model, tok, CLASSES, n_ctx=4, generator=torch.Generator().manual_seed(0))
    emb, ids = pl()
    assert emb.shape == (3, loaded.model.positional_embedding.shape[0], pl.ctx.shape[-1])
    table = loaded.model.token_embedding.weight
    sos, eos = ids[0, 0].item(), ids[0].max().item()
    for c, name in enumerate(CLASSES):
        n = token_count(tok, name)
        eos_pos = int(ids[c].argmax())
        assert ids[c, 0].item() == sos and torch.equal(emb[c, 0], table[sos])  # SOS first
        assert torch.equal(emb[c, 1:5], pl.ctx)  # then the context
        name_ids = tok([name])[0][1 : 1 + n]
        assert torch.equal(ids[c, 5 : 5 + n], name_ids)  # the class tokens
        assert torch.equal(emb[c, 5 : 5 + n], table[name_ids])
        assert eos_pos == 5 + n + 1 and ids[c, eos_pos].item() == eos  # "." then EOS
        assert torch.equal(emb[c, eos_pos], table[eos])


@pytest.mark.parametrize("position", ["middle", "front"])
def test_layout_middle_front(loaded, position):
    tok = loaded.tokenizer
    pl = PromptLearner(loaded.model, tok, CLASSES, n_ctx=4, class_token_position=position)
    emb, ids = pl()
    table = loaded.model.token_embedding.weight
    for c, name in enumerate(CLASSES):
        n = token_count(tok, name)
        name_emb = table[tok([name])[0][1 : 1 + n]]
        if position == "middle":
            assert torch.equal(emb[c, 1:3], pl.ctx[:2])
            assert torch.equal(emb[c, 3 : 3 + n], name_emb)
            assert torch.equal(emb[c, 3 + n : 5 + n], pl.ctx[2:])
        else:
            assert torch.equal(emb[c, 1 : 1 + n], name_emb)
            assert torch.equal(emb[c, 1 + n : 5 + n], pl.ctx)
        assert int(ids[c].argmax()) == 5 + n + 1  # EOS does not move


def test_class_specific_context(loaded):
    pl = PromptLearner(loaded.model, loaded.tokenizer, CLASSES, n_ctx=2, csc=True)
    assert pl.ctx.shape == (3, 2, pl.token_prefix.shape[-1])
    emb, _ = pl()
    assert torch.equal(emb[1, 1:3], pl.ctx[1])


def test_text_path_matches_open_clip(loaded):
    """Context initialised from a phrase reproduces encode_text of the plain sentence."""
    model, tok = loaded.model, loaded.tokenizer
    pl = PromptLearner(model, tok, CLASSES, ctx_init="a photo of a")
    assert pl.n_ctx == 4
    with torch.no_grad():
        ours = encode_prompt_embeddings(model, *pl())
        ref = model.encode_text(tok([f"a photo of a {c}." for c in CLASSES]))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(class_embeddings(model, pl).detach(), F.normalize(ref, dim=-1), rtol=1e-5, atol=1e-5)


def test_state_dict_holds_only_context(loaded):
    pl = PromptLearner(loaded.model, loaded.tokenizer, CLASSES, n_ctx=4)
    assert list(pl.state_dict()) == ["ctx"]
    assert [n for n, _ in pl.named_parameters()] == ["ctx"]
    assert abs(pl.ctx.std().item() - 0.02) < 0.01


def test_too_long_context_is_a_user_error(loaded):
    with pytest.raises(UserError, match="n_ctx"):
        PromptLearner(loaded.model, loaded.tokenizer, CLASSES, n_ctx=40)


def test_adapter_mix_and_norm():
    torch.manual_seed(0)
    ad = QAdapter(128, reduction=4, ratio=0.2)
    f = torch.randn(5, 128)
    hidden = F.relu(f @ ad.fc.in_fc.weight.T + ad.fc.in_fc.bias)
    expect = F.normalize(0.2 * (hidden @ ad.fc.out_fc.weight.T + ad.fc.out_fc.bias) + 0.8 * f, dim=-1)
    torch.testing.assert_close(ad(f), expect)
    assert ad.fc.in_fc.out_features == 32


def test_quantized_adapter_calibrates():
    from p4q_export.quant import get_profile

    torch.manual_seed(0)
    ad = QAdapter(128, profile=get_profile("paper", "8/8"), bits=8)
    ad.set_quantization(False)
    f = torch.randn(64, 128)
    fp = ad(f)
    ad.calibrate(f)
    ad.eval()
    q = ad(f)
    assert not torch.equal(q, fp)
    assert F.cosine_similarity(q, fp).min() > 0.99


def test_text_path_matches_quantized_encode_text():
    """Through a W4A4-quantized text tower (explicit attention, QuantProjection) too."""
    from p4q_export.models import load_model
    from p4q_export.quant import calibrate_clip, get_profile, quantize_clip

    torch.manual_seed(1)
    lm = load_model("p4q-testbed")
    model, tok = lm.model, lm.tokenizer
    quantize_clip(model, get_profile("paper", "4/4"), quantize_text=True)
    calibrate_clip(model, torch.randn(8, 3, 32, 32), tok([f"a photo of a {c}." for c in CLASSES]))
    pl = PromptLearner(model, tok, CLASSES, ctx_init="a photo of a")
    with torch.no_grad():
        ours = encode_prompt_embeddings(model, *pl())
        ref = model.encode_text(tok([f"a photo of a {c}." for c in CLASSES]))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def custom_text_model(tmp_path_factory):
    """A model folder of the test-bed architecture built as open_clip's CustomTextCLIP (the text
    tower under `.text`, as MobileCLIP, EVA and SigLIP have it), random weights."""
    import json

    import open_clip

    from p4q_export.models.loading import CONFIG_FILE, WEIGHTS_FILE
    from p4q_export.models.registry import CONFIG_DIR

    cfg = {**json.loads((CONFIG_DIR / "p4q-testbed.json").read_text()), "custom_text": True}
    root = tmp_path_factory.mktemp("custom-text")
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
    torch.save(model.state_dict(), root / WEIGHTS_FILE)
    (root / CONFIG_FILE).write_text(json.dumps({"model_name": "p4q-testbed-custom-text", "model_cfg": cfg}))
    return root


@pytest.mark.parametrize("quantize_text", [False, True])
def test_text_path_matches_encode_text_of_a_custom_text_clip(custom_text_model, quantize_text):
    """The learned-prompt path runs a CustomTextCLIP's own text tower: the same features as its
    encode_text, FP and with the text tower quantized."""
    import open_clip

    from p4q_export.models import load_model
    from p4q_export.models.text import text_tower
    from p4q_export.quant import calibrate_clip, get_profile, quantize_clip

    lm = load_model(str(custom_text_model))
    model, tok = lm.model, lm.tokenizer
    assert isinstance(model, open_clip.CustomTextCLIP) and not hasattr(model, "token_embedding")
    assert text_tower(model) is model.text
    sentences = tok([f"a photo of a {c}." for c in CLASSES])
    with torch.no_grad():
        fp_ref = model.encode_text(sentences)
    if quantize_text:
        quantize_clip(model, get_profile("paper", "4/4"), quantize_text=True)
        assert type(model.text.text_projection).__name__ == "QuantProjection"
        calibrate_clip(model, torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2)), sentences)
    pl = PromptLearner(model, tok, CLASSES, ctx_init="a photo of a")
    assert torch.equal(pl.token_prefix[:, 0], model.text.token_embedding.weight[sentences[:, 0]])
    with torch.no_grad():
        ours = encode_prompt_embeddings(model, *pl())
        ref = model.encode_text(sentences)
    torch.testing.assert_close(ours, ref, rtol=1e-4 if quantize_text else 1e-5, atol=1e-4 if quantize_text else 1e-5)
    # quantized, the text tower computes other features (4-bit weights and activations)
    assert ((ref - fp_ref).abs().max() > 1e-2) == quantize_text


def test_train_on_a_custom_text_clip_and_load_the_run(custom_text_model, tmp_path, cli):
    """P4Q trains prompts through a CustomTextCLIP's text tower (quantized too) from the CLI, and
    load_run scores the run as train did."""
    import json

    from p4q_export.data import load_dataset, preprocess_dataset
    from p4q_export.data.samplers import eval_subset_indices
    from p4q_export.p4q.run import load_run

    out = tmp_path / "run"
    proc = cli("--json", "train", "--recipe", "recipes/testbed-p4q-w8a8.yaml", "--out", str(out), "--shots", "2",
               "--set", f"model={custom_text_model}", "--set", "epochs=3", "--set", "calib_images=64",
               "--set", "eval_limit=200", "--set", "quantize_text=true", "--set", "threads=1", check=True)
    metrics = json.loads(proc.stdout)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3] and metrics["n_eval"] == 200
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    run = load_run(out)
    assert type(run.loaded.model).__name__ == "CustomTextCLIP"
    ds = load_dataset("fashion-mnist", "test")
    ds = ds.subset(eval_subset_indices(len(ds), 200))
    logits = run.logits(preprocess_dataset(ds, run.loaded.preprocess))
    top1 = (logits.argmax(1) == torch.as_tensor(ds.labels)).float().mean().item()
    assert top1 == pytest.approx(metrics["accuracy"]["trained"], abs=1e-6)
