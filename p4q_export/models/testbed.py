"""The cached test-bed model: pretrained once per recipe, reused by `make demo` and the tests."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import PretrainRecipe, load_recipe, recipe_hash

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO_ROOT / "recipes" / "testbed-pretrain.yaml"
GLYPHS_RECIPE = REPO_ROOT / "recipes" / "glyphs-pretrain.yaml"
CONV_RECIPE = REPO_ROOT / "recipes" / "testbed-conv-pretrain.yaml"
# model aliases -> the pretraining recipe of the cached test bed they name
ALIASES = {"testbed": DEFAULT_RECIPE, "glyphs": GLYPHS_RECIPE, "testbed-conv": CONV_RECIPE}


def cache_root() -> Path:
    return Path(os.environ.get("P4Q_CACHE", Path.home() / ".cache" / "p4q-export"))


def testbed_dir(recipe: PretrainRecipe) -> Path:
    return cache_root() / f"testbed-{recipe_hash(recipe)[:12]}"


def ensure_testbed(recipe_path: Path | str = DEFAULT_RECIPE, device: str = "cpu") -> Path:
    """Path of the pretrained test-bed model, pretraining it first (on `device`) if this recipe
    has no cache."""
    from .pretrain import cached_pretrain

    recipe = load_recipe(recipe_path, None, PretrainRecipe)
    out = testbed_dir(recipe)
    cached_pretrain(recipe, out, device=device)
    return out
