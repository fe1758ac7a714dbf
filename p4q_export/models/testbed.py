"""The test-bed models: shipped with the project (p4q_export/testbeds/: weights with the token
embedding in FP16, and a manifest), or pretrained once per recipe into the cache when the recipe
differs from the shipped one's."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import PretrainRecipe, load_recipe, recipe_hash
from ..progress import log

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO_ROOT / "recipes" / "testbed-pretrain.yaml"
GLYPHS_RECIPE = REPO_ROOT / "recipes" / "glyphs-pretrain.yaml"
CONV_RECIPE = REPO_ROOT / "recipes" / "testbed-conv-pretrain.yaml"
SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "testbeds"
# model aliases -> the pretraining recipe of the cached test bed they name
ALIASES = {"testbed": DEFAULT_RECIPE, "glyphs": GLYPHS_RECIPE, "testbed-conv": CONV_RECIPE}


def cache_root() -> Path:
    return Path(os.environ.get("P4Q_CACHE", Path.home() / ".cache" / "p4q-export"))


def testbed_dir(recipe: PretrainRecipe) -> Path:
    return cache_root() / f"testbed-{recipe_hash(recipe)[:12]}"


def shipped_testbed(recipe: PretrainRecipe) -> Path | None:
    """The bed shipped in p4q_export/testbeds/ for this very recipe, when its files are intact: the
    same weights, hence the README's numbers, on every machine. A recipe edited since is pretrained."""
    from ..manifest import files_intact

    want = recipe_hash(recipe)
    for manifest_path in sorted(SHIPPED_ROOT.glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if manifest.get("recipe_sha256") != want:
            continue
        folder = manifest_path.parent
        if files_intact(folder, manifest.get("files") or {}):
            return folder
        log(f"the shipped test bed {folder} does not match its manifest's hashes: pretraining it instead")
    return None


def ensure_testbed(recipe_path: Path | str = DEFAULT_RECIPE, device: str = "cpu") -> Path:
    """Path of the test-bed model: the shipped one for this recipe, else the cached pretraining
    (pretrained first, on `device`, when this recipe has no cache)."""
    from .pretrain import cached_pretrain

    recipe = load_recipe(recipe_path, None, PretrainRecipe)
    shipped = shipped_testbed(recipe)
    if shipped is not None:
        return shipped
    out = testbed_dir(recipe)
    cached_pretrain(recipe, out, device=device)
    return out
