"""The P4Q loss against a hand computation, gradients reaching only prompts and adapter, and the
cached training loop matching the uncached one (random-weight test-bed architecture, in process)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from p4q_export.config import TrainRecipe
from p4q_export.p4q.distributed import DistContext
from p4q_export.p4q.learner import batch_loss, build_learner
from p4q_export.p4q.losses import p4q_loss
from p4q_export.p4q.prepare import prepare
from p4q_export.p4q.schedule import adapter_lr, epoch_order, prompt_lr
from p4q_export.p4q.trainer import train_seed


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    s = torch.randn(3, 4) * 3
    t = torch.randn(3, 4) * 3
    y = torch.tensor([0, 2, 3])

    def log_softmax(row):
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        return [v - lse for v in row]

    def softmax(row):
        return [math.exp(v) for v in log_softmax(row)]

    ce = sum(-log_softmax(s[i].tolist())[y[i]] for i in range(3)) / 3
    # official: F.cross_entropy(input=t_probs, target=s_probs) = -Σ s_probs · log_softmax(t_probs)
    official = 0.0
    for i in range(3):
        tp, sp = softmax(t[i].tolist()), softmax(s[i].tolist())
        official += -sum(a * b for a, b in zip(sp, log_softmax(tp)))
    official /= 3
    temp = 2.0
    kl = 0.0
    for i in range(3):
        lt, ls = log_softmax((t[i] / temp).tolist()), log_softmax((s[i] / temp).tolist())
        kl += sum(math.exp(a) * (a - b) for a, b in zip(lt, ls))
    kl = kl / 3 * temp * temp

    loss, parts = p4q_loss(s, y, t, form="official", weight=0.5)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert parts["distill"].item() == pytest.approx(official, rel=1e-5)
    assert loss.item() == pytest.approx(ce + 0.5 * official, rel=1e-5)
    loss, parts = p4q_loss(s, y, t, form="kl", temperature=temp)
    assert loss.item() == pytest.approx(ce + kl, rel=1e-5)
    loss, parts = p4q_loss(s, y, t, form="none")
    assert loss.item() == pytest.approx(ce, rel=1e-5)
    # a shard normalized by the global batch: two halves add up to the whole
    a, _ = p4q_loss(s[:2], y[:2], t[:2], batch_size=3)
    b, _ = p4q_loss(s[2:], y[2:], t[2:], batch_size=3)
    whole, _ = p4q_loss(s, y, t)
    assert (a + b).item() == pytest.approx(whole.item(), rel=1e-5)


def test_schedules():
    r = TrainRecipe(epochs=2, prompt_lr=1.0, adapter_lr=2.0)
    assert prompt_lr(r, 0, 10) == pytest.approx(1.0)
    assert prompt_lr(r, 10, 10) == pytest.approx(1e-3)
    assert adapter_lr(r, 5, 10) == pytest.approx(1.0)
    p1, v1 = epoch_order(1, 3, 50, 2)
    p2, v2 = epoch_order(1, 3, 50, 2)
    assert torch.equal(p1, p2) and torch.equal(v1, v2)
    assert not torch.equal(epoch_order(1, 4, 50, 2)[0], p1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A W8A8 (text quantized too) random-weight test-bed CLIP, calibrated on 64 images."""
    torch.manual_seed(0)
    recipe = TrainRecipe(
        model="p4q-testbed", profile="paper", bits="8/8", quantize_text=True, calib_images=64,
        shots=4, batch_size=16, n_ctx=4, epochs=3, distill="official",
    )
    return prepare(recipe, tmp_path_factory.mktemp("prep"), DistContext(), evaluate=False)


def test_only_prompts_and_adapter_get_gradients(prepared):
    learner = build_learner(prepared.recipe, prepared.model, prepared.loaded.tokenizer, prepared.classnames, prepared.profile, seed=1)
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        student = prepared.model.encode_image(images)
        from p4q_export.quant import quantization_disabled

        with quantization_disabled(prepared.model):
            teacher = F.normalize(prepared.model.encode_image(images), dim=-1)
    loss, _ = batch_loss(prepared, learner, student, teacher, torch.tensor([0, 1, 2, 3, 4, 5]), 6)
    loss.backward()
    assert learner.prompt_learner.ctx.grad is not None and learner.prompt_learner.ctx.grad.abs().sum() > 0
    for name, p in learner.adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in prepared.model.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    # the prompts ran through the quantized text tower
    assert type(prepared.model.text_projection).__name__ == "QuantProjection"


def test_cached_and_uncached_losses_match(prepared, tmp_path: Path):
    runs = [
        train_seed(prepared, 1, tmp_path / str(cached), DistContext(), max_epochs=2, cache_features=cached,
                   resume=False, evaluate=False)
        for cached in (True, False)
    ]
    cached, uncached = ([l for h in r.history for l in h["step_losses"]] for r in runs)
    assert len(cached) == len(uncached) == 2 * math.ceil(40 / 16)
    assert cached == pytest.approx(uncached, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(runs[0].learner.prompt_learner.ctx, runs[1].learner.prompt_learner.ctx, rtol=1e-3, atol=1e-5)
    # checkpoints are plain tensors / numbers: weights_only loading works
    state = torch.load(tmp_path / "True" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and not state["done"]


def test_run_identity_ignores_later_keys_at_their_defaults():
    """Runs written before `amp`, `keep_fp` and `prompts` existed keep their identity (they resume
    and count as finished); setting any of them makes another run."""
    import hashlib
    import json

    from p4q_export.config import TrainRecipe, recipe_dict
    from p4q_export.p4q.checkpoint import (
        RUN_NEUTRAL_KEYS,
        comparable_recipe,
        run_for_seed_key,
    )

    recipe = TrainRecipe()
    earlier = {k: v for k, v in recipe_dict(recipe).items() if k not in ("amp", "keep_fp", "prompts")}  # as stored then
    assert comparable_recipe(earlier) == comparable_recipe(recipe)
    key = {k: v for k, v in earlier.items() if k not in RUN_NEUTRAL_KEYS} | {"seed": 1}
    assert run_for_seed_key(recipe, 1) == hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    assert run_for_seed_key(TrainRecipe(amp=True), 1) != run_for_seed_key(recipe, 1)
    assert run_for_seed_key(TrainRecipe(keep_fp=["visual.*"]), 1) != run_for_seed_key(recipe, 1)
    assert run_for_seed_key(TrainRecipe(prompts="glyphs"), 1) != run_for_seed_key(recipe, 1)
