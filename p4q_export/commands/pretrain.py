"""`pretrain`: the small test-bed CLIP, from scratch on real offline data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    from ..tasks.pretrain import pretrain_testbed

    result = pretrain_testbed(recipe, set_, out=out, force=force, device=device)
    emit(result, json_out, lambda d: f"{'reused' if d['reused'] else 'wrote'} {d['out']}: zero-shot "
         + ", ".join(f"{k} top-1 {pct(v['top1'])}" for k, v in d["accuracy"].items()))
