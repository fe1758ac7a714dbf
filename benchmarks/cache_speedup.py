"""`make bench`: how much faster the training loop is with the frozen towers' features cached."""

from __future__ import annotations

import tempfile
from pathlib import Path

from p4q_export.config import TrainRecipe
from p4q_export.p4q.distributed import DistContext
from p4q_export.p4q.prepare import prepare
from p4q_export.p4q.recipe import view_count
from p4q_export.p4q.trainer import train_seed


def benchmark_cache_speedup(recipe: TrainRecipe | None = None, epochs: int = 2, seed: int | None = None,
                            workdir: Path | str | None = None) -> dict:
    """Train the first `epochs` epochs of `recipe` twice — frozen-tower features cached, and
    recomputed every step — and compare seconds per epoch and the losses of every step.

    The cached timing counts only the epochs; building the cache (one pass over the images per
    view) is reported separately as `cache_seconds`.
    """
    from p4q_export.config import load_recipe
    from p4q_export.models.testbed import REPO_ROOT

    if recipe is None:
        recipe = load_recipe(REPO_ROOT / "recipes" / "testbed-p4q-w8a8.yaml", None, TrainRecipe)
    seed = recipe.seed if seed is None else seed
    dist = DistContext()
    with tempfile.TemporaryDirectory(prefix="p4q-bench-", dir=workdir) as tmp:
        tmp = Path(tmp)
        prep = prepare(recipe, tmp, dist, evaluate=False)
        runs = {}
        for cached in (True, False):
            runs[cached] = train_seed(prep, seed, tmp / ("cached" if cached else "uncached"), dist,
                                      max_epochs=epochs, cache_features=cached, resume=False, evaluate=False)
    fast, slow = runs[True], runs[False]
    cached_epoch = sum(fast.epoch_seconds) / len(fast.epoch_seconds)
    uncached_epoch = sum(slow.epoch_seconds) / len(slow.epoch_seconds)
    a = [l for h in fast.history for l in h["step_losses"]]
    b = [l for h in slow.history for l in h["step_losses"]]
    return {
        "epochs": epochs,
        "images": recipe.shots * len(prep.classnames),
        "views": view_count(recipe),
        "cached_seconds_per_epoch": cached_epoch,
        "uncached_seconds_per_epoch": uncached_epoch,
        "cache_seconds": fast.cache_seconds,
        "speedup": uncached_epoch / cached_epoch,
        "speedup_including_cache_build": sum(slow.epoch_seconds) / (sum(fast.epoch_seconds) + fast.cache_seconds),
        "max_abs_loss_diff": max(abs(x - y) for x, y in zip(a, b)),
        "steps": len(a),
    }
