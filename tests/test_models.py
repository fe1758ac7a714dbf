"""Model loading (names, directories, checkpoints, bad files) and the pretrained test bed."""

from __future__ import annotations

import json

import pytest
import torch

from p4q_export.errors import UserError
from p4q_export.models import load_model


def test_project_config_loads_by_name_with_random_weights():
    lm = load_model("p4q-testbed")
    assert lm.preprocess.image_size == 32
    assert sum(p.numel() for p in lm.model.visual.parameters()) > 500_000  # a real ViT tower
    assert len(lm.model.visual.transformer.resblocks) == 4


def test_unknown_model_and_missing_path():
    with pytest.raises(UserError, match="unknown model"):
        load_model("ViT-Q-99")
    with pytest.raises(UserError, match="not found"):
        load_model("/no/such/model.pt")


def test_truncated_and_foreign_checkpoints(tmp_path, testbed_model):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "open_clip_config.json").write_text((testbed_model / "open_clip_config.json").read_text())
    torch.save(load_model(str(testbed_model)).model.state_dict(), bad / "open_clip_pytorch_model.bin")
    blob = (bad / "open_clip_pytorch_model.bin").read_bytes()
    (bad / "open_clip_pytorch_model.bin").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_model(str(bad))
    (bad / "open_clip_pytorch_model.bin").write_text("hello")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_model(str(bad / "open_clip_pytorch_model.bin"))
    torch.save({"step": 3}, bad / "open_clip_pytorch_model.bin")
    with pytest.raises(UserError, match="no model weights"):
        load_model(str(bad))


def test_pretrained_checkpoint_is_open_clip_loadable(testbed_model):
    import open_clip

    model = open_clip.create_model(f"local-dir:{testbed_model}").eval()
    ours = load_model(str(testbed_model)).model
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), ours.encode_image(x), atol=1e-5)
    assert all(p.dtype == torch.float32 for p in ours.parameters())  # FP16 on disk, FP32 in memory


@pytest.mark.parametrize("alias", ["testbed", "glyphs"])
def test_model_aliases_load_the_shipped_bed_without_pretraining(alias, tmp_path, monkeypatch):
    from p4q_export.config import PretrainRecipe, load_recipe, recipe_hash
    from p4q_export.models.testbed import ALIASES, SHIPPED_ROOT, ensure_testbed

    monkeypatch.setenv("P4Q_CACHE", str(tmp_path / "cache"))
    assert ensure_testbed(ALIASES[alias]) == SHIPPED_ROOT / alias
    assert not (tmp_path / "cache").exists()  # nothing pretrained, nothing cached
    manifest = json.loads((SHIPPED_ROOT / alias / "manifest.json").read_text())
    assert manifest["recipe_sha256"] == recipe_hash(load_recipe(ALIASES[alias], None, PretrainRecipe))
    assert manifest["made_by"][0].startswith("p4q-export pretrain --recipe recipes/")
    assert manifest["pretraining"]["versions"]["torch"] and manifest["shipped_on"]["model"]
    assert (SHIPPED_ROOT / alias / "open_clip_model.safetensors").stat().st_size < 20e6  # the README's size


@pytest.mark.parametrize("alias,data,prompts", [("testbed", "mnist", ""), ("glyphs", "mnist", "glyphs")])
def test_shipped_bed_scores_what_its_manifest_says(cli, alias, data, prompts):
    """The shipped weights (token embedding FP16) score exactly what the FP32 pretraining scored:
    the number the README's ladders start from, on any machine."""
    from p4q_export.models.testbed import SHIPPED_ROOT

    manifest = json.loads((SHIPPED_ROOT / alias / "manifest.json").read_text())
    out = json.loads(cli("eval", alias, "--data", data, "--prompts", prompts, "--json", check=True).stdout)
    assert out["n"] == 1000
    assert out["top1"] == manifest["zero_shot_test_top1"]["shipped"][data]["top1"]
    assert out["top1"] == manifest["zero_shot_test_top1"]["fp32"][data]["top1"]


def test_a_damaged_or_outdated_shipped_bed_is_not_used(tmp_path, monkeypatch, repo_root):
    import shutil

    from p4q_export.config import PretrainRecipe, load_recipe
    from p4q_export.models import testbed

    copy = tmp_path / "testbeds"
    shutil.copytree(testbed.SHIPPED_ROOT / "testbed", copy / "testbed")
    monkeypatch.setattr(testbed, "SHIPPED_ROOT", copy)
    recipe = load_recipe(repo_root / "recipes/testbed-pretrain.yaml", None, PretrainRecipe)
    assert testbed.shipped_testbed(recipe) == copy / "testbed"
    edited = load_recipe(repo_root / "recipes/testbed-pretrain.yaml", ["epochs=2"], PretrainRecipe)
    assert testbed.shipped_testbed(edited) is None  # another recipe: pretrained, not the shipped weights
    weights = copy / "testbed" / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert testbed.shipped_testbed(recipe) is None


@pytest.mark.parametrize(
    "args,needle",
    [
        (["eval", "/no/such/dir", "--data", "mnist"], "not found"),
        (["eval", "p4q-testbed", "--data", "cifar-77"], "unknown data spec"),
        (["pretrain", "--recipe", "recipes/testbed-pretrain.yaml", "--set", "epochz=1", "--out", "/tmp/never"], "unknown key"),
        (["pretrain", "--recipe", "recipes/nope.yaml", "--out", "/tmp/never"], "recipe not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli, args, needle):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_pretraining_is_bit_reproducible_for_a_seed(tmp_path, repo_root):
    """Same recipe and seed, same weights to the bit; another seed, other weights (a few steps on
    MNIST keep it short; the full recipe runs the same code)."""
    from p4q_export.config import PretrainRecipe, load_recipe
    from p4q_export.manifest import file_sha256
    from p4q_export.models.pretrain import pretrain

    def weights(seed: int, name: str) -> str:
        recipe = load_recipe(repo_root / "recipes/testbed-pretrain.yaml",
                             ["data=mnist", "epochs=0.2", f"seed={seed}"], PretrainRecipe)
        pretrain(recipe, tmp_path / name)
        return file_sha256(tmp_path / name / "open_clip_pytorch_model.bin")

    first = weights(0, "a")
    assert weights(0, "b") == first
    assert weights(1, "c") != first
