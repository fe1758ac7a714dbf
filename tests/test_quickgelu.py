"""Tags trained with QuickGELU load with QuickGELU (open_clip 3 builds `ViT-B-32` with GELU even
for the `openai` tag and only warns). Nothing here downloads: weights stay random."""

from __future__ import annotations

import pytest

from p4q_export.models.loading import create_kwargs_for


def test_tag_decides_force_quick_gelu():
    assert create_kwargs_for("ViT-B-32", "openai") == {"force_quick_gelu": True}
    assert create_kwargs_for("ViT-B-32", "laion2b_s34b_b79k") == {}
    assert create_kwargs_for("ViT-B-32-quickgelu", "openai") == {}  # the config already says so
    assert create_kwargs_for("ViT-B-32", None) == {} and create_kwargs_for("ViT-B-32", "") == {}
    assert create_kwargs_for("ViT-B-32", "/some/file.pt") == {}  # a file carries no tag config


@pytest.fixture
def no_download(monkeypatch):
    """open_clip.create_model that records its kwargs and builds the architecture with random
    weights (pretrained=None), so load_model's NAME:TAG path runs without the internet."""
    import open_clip

    real = open_clip.create_model
    calls = []

    def fake(name, pretrained=None, **kwargs):
        calls.append({"name": name, "pretrained": pretrained, **kwargs})
        return real(name, pretrained=None, **kwargs)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(open_clip, "create_model", fake)
    return calls


@pytest.mark.parametrize(("tag", "quick"), [("openai", True), ("laion2b_s34b_b79k", False)])
def test_load_model_builds_the_tags_activation(no_download, tag, quick):
    from open_clip.transformer import QuickGELU

    from p4q_export.models import load_model

    lm = load_model(f"ViT-B-32:{tag}")
    assert no_download[-1]["pretrained"] == tag
    assert no_download[-1].get("force_quick_gelu", False) is quick
    mlps = [b.mlp.gelu for b in lm.model.visual.transformer.resblocks + lm.model.transformer.resblocks]
    assert all(isinstance(m, QuickGELU) for m in mlps) is quick
    assert any(isinstance(m, QuickGELU) for m in mlps) is quick
    # manifests show it, and the bundle reference (open_clip.CLIP(**model_cfg)) rebuilds it
    assert lm.model_cfg.get("quick_gelu", False) is quick
    assert lm.describe().get("create_kwargs", {}) == ({"force_quick_gelu": True} if quick else {})


def test_random_weights_are_the_same_in_every_process():
    """An architecture name without a tag is random-initialised from a fixed seed, so the torchrun
    ranks (and the train and eval commands of a benchmark) all hold the same model; the caller's
    global RNG is left as it was."""
    import subprocess
    import sys

    import torch

    from p4q_export.models import load_model

    code = ("from p4q_export.models import load_model; "
            "print(float(sum(p.double().sum() for p in load_model('p4q-testbed').model.parameters())))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    here = load_model("p4q-testbed").model
    assert torch.equal(torch.rand(3), expected)
    assert float(sum(p.detach().double().sum() for p in here.parameters())) == float(other)
