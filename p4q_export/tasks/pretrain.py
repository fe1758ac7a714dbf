"""`pretrain`: a small test-bed CLIP from its recipe, reused where OUT already holds that recipe's model."""

from __future__ import annotations

from pathlib import Path

from ..config import PretrainRecipe, load_recipe
from ..outdir import check_out


def pretrain_testbed(recipe: Path | None, overrides: list[str] | None, *, out: Path | None, force: bool, device: str) -> dict:
    """OUT (default: the shared cache for the recipe), whether it was reused, the time and the zero-shot accuracy."""
    from ..devices import resolve_device
    from ..models.pretrain import cached_pretrain
    from ..models.testbed import testbed_dir

    r = load_recipe(recipe, overrides, PretrainRecipe)
    out = out or testbed_dir(r)
    check_out(out, "model", force=True)  # only a model pretrain wrote is ever replaced
    manifest, reused = cached_pretrain(r, out, force=force, device=resolve_device(device))
    return {"out": str(out), "reused": reused, "seconds": manifest["seconds"], "accuracy": manifest["accuracy"]}
