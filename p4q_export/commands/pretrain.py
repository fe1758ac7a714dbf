"""`pretrain`: the small test-bed CLIP, from scratch on real offline data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..config import PretrainRecipe, load_recipe
from ..outdir import check_out
from ..progress import pct
from ._common import DeviceOpt, JsonOpt, emit


def pretrain(
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (open_clip-loadable: config + weights + manifest). Default: the shared cache for this recipe ($P4Q_CACHE, ~/.cache/p4q-export), which the tests reuse.")] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="YAML recipe, e.g. recipes/testbed-pretrain.yaml.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe key: --set epochs=1.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if OUT already holds this recipe's model.")] = False,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Pretrain a small CLIP from scratch with caption templates (reuses OUT if it matches the recipe)."""
    from ..devices import resolve_device
    from ..models.pretrain import cached_pretrain
    from ..models.testbed import testbed_dir

    r = load_recipe(recipe, set_, PretrainRecipe)
    out = out or testbed_dir(r)
    check_out(out, "model", force=True)  # only a model pretrain wrote is ever replaced
    manifest, reused = cached_pretrain(r, out, force=force, device=resolve_device(device))
    result = {"out": str(out), "reused": reused, "seconds": manifest["seconds"], "accuracy": manifest["accuracy"]}
    emit(result, json_out, lambda d: f"{'reused' if reused else 'wrote'} {out}: zero-shot "
         + ", ".join(f"{k} top-1 {pct(v['top1'])}" for k, v in d["accuracy"].items()))
