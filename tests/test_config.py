"""Recipes: YAML + --set overrides, unknown keys and wrong types rejected."""

from __future__ import annotations

import pytest

from p4q_export.config import (
    PretrainRecipe,
    TrainRecipe,
    load_recipe,
    parse_overrides,
    recipe_hash,
)
from p4q_export.errors import UserError


def test_overrides_are_typed_and_win(repo_root):
    r = load_recipe(repo_root / "recipes/testbed-pretrain.yaml", ["epochs=1", "data=mnist", "flip=false"], PretrainRecipe)
    assert r.epochs == 1.0 and isinstance(r.epochs, float) and r.data == "mnist" and r.flip is False


def test_unknown_key_is_rejected(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: p4q-testbed\nepochz: 3\n")
    with pytest.raises(UserError, match="unknown key.*epochz"):
        load_recipe(p, None, PretrainRecipe)
    with pytest.raises(UserError, match="unknown key.*nope"):
        load_recipe(None, ["nope=1"], TrainRecipe)


def test_wrong_type_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="'shots' must be int"):
        load_recipe(None, ["shots=many"], TrainRecipe)
    p = tmp_path / "bad.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(p, None, PretrainRecipe)
    with pytest.raises(UserError, match="key=value"):
        parse_overrides(["novalue"])


def test_recipe_hash_tracks_content():
    a, b = PretrainRecipe(), PretrainRecipe(seed=1)
    assert recipe_hash(a) == recipe_hash(PretrainRecipe()) and recipe_hash(a) != recipe_hash(b)
