"""What a finished run leaves behind: RUN/metrics.json and the RUN/run.json manifest (one seed),
or their mean ± std over several seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import recipe_dict
from ..progress import log
from .checkpoint import CHECKPOINT

if TYPE_CHECKING:
    from .learner import Learner
    from .prepare import Prepared

RUN_MANIFEST = "run.json"
METRICS = "metrics.json"
RUN_KIND = "p4q-export/run"


@dataclass
class SeedResult:
    seed: int
    top1: float | None
    top5: float | None
    history: list
    train_seconds: float
    resumed_from: int
    learner: Learner
    cache_seconds: float = 0.0  # building the feature cache (0 when uncached)
    epoch_seconds: list = field(default_factory=list)  # wall time of each epoch trained here
    eval_seconds: float = 0.0


def seed_run_dir(out: Path, seed: int, seeds: list[int]) -> Path:
    """Where a seed's run lives: OUT itself for a single seed, OUT/seed-S/ for each of several."""
    return out if len(seeds) == 1 else out / seed_run_name(seed)


def seed_run_name(seed: int) -> str:
    return f"seed-{seed}"


def write_seed_outputs(prep: Prepared, result: SeedResult, run_dir: Path, seconds: float, calib_rel: str | None) -> dict:
    from ..devices import describe_device
    from ..manifest import file_sha256, versions, write_json_atomic

    recipe = prep.recipe
    epoch_s = [round(t, 3) for t in result.epoch_seconds]
    timings = {**prep.timings, "cache_s": round(result.cache_seconds, 3), "epoch_s": epoch_s,
               "train_s": round(result.train_seconds, 3), "eval_s": round(result.eval_seconds, 3)}
    metrics = {
        "method": recipe.method,
        "accuracy": {**prep.zero_shot, "trained": result.top1},
        "top5": {**prep.zero_shot_top5, "trained": result.top5},
        "n_eval": len(prep.eval.labels) if prep.eval is not None else 0,
        "eval_split": recipe.eval_split,
        "eval_images": prep.eval_images,
        "seconds": round(seconds, 3),
        "train_seconds": round(result.train_seconds, 3),
        "resumed_from_epoch": result.resumed_from,
        "device": describe_device(prep.device),
        "workers": prep.workers,
        "timings": timings,
        "seeds": [result.seed],
        "history": [{k: v for k, v in h.items() if k != "step_losses"} for h in result.history],
        "recipe": recipe_dict(recipe),
        "versions": versions(),
    }
    write_json_atomic(run_dir / METRICS, metrics)
    files = {CHECKPOINT: file_sha256(run_dir / CHECKPOINT), METRICS: file_sha256(run_dir / METRICS)}
    if calib_rel:
        files[calib_rel] = file_sha256(run_dir / calib_rel)
    manifest = {
        "kind": RUN_KIND,
        "format": 1,
        "method": recipe.method,
        "seed": result.seed,
        "model": prep.model_ref,
        "recipe": recipe_dict(recipe),
        "profile": prep.profile.as_dict() if prep.profile is not None else None,
        "quantize_text": bool(recipe.quantize_text) if prep.quantized else False,
        "calibration": None if not prep.quantized else {
            "list": calib_rel,
            "sha256": prep.ptq_info.get("calibration_sha256"),
            "n": prep.ptq_info.get("n_calib"),
            "seed": prep.ptq_info.get("calib_seed"),
        },
        "classnames": list(prep.classnames),
        "classnames_source": "recipe:" + recipe.classnames if recipe.classnames else prep.train_ds.meta.get("classnames_source"),
        "data": recipe.data,
        "device": metrics["device"],
        "files": files,
        "versions": metrics["versions"],
    }
    write_json_atomic(run_dir / RUN_MANIFEST, manifest)
    log(f"wrote {run_dir} ({', '.join(sorted([*files, RUN_MANIFEST]))})")
    return metrics


def aggregate(prep: Prepared, per_seed: dict[int, dict], seconds: float) -> dict:
    from ..manifest import versions

    top1 = np.array([m["accuracy"]["trained"] for m in per_seed.values()], dtype=np.float64)
    mean, std = float(top1.mean()), float(top1.std(ddof=1)) if len(top1) > 1 else 0.0
    return {
        "method": prep.recipe.method,
        "accuracy": {**prep.zero_shot, "trained": round(mean, 6), "trained_std": round(std, 6)},
        "trained_per_seed": {str(s): m["accuracy"]["trained"] for s, m in per_seed.items()},
        "trained_mean_std": f"{100 * mean:.2f} ± {100 * std:.2f}",
        "n_eval": next(iter(per_seed.values()))["n_eval"],
        "eval_split": prep.recipe.eval_split,
        "eval_images": prep.eval_images,
        "seconds": round(seconds, 3),
        "device": next(iter(per_seed.values()))["device"],
        "timings": {str(s): m["timings"] for s, m in per_seed.items()},
        "seeds": [int(s) for s in per_seed],
        "seed_runs": {str(s): seed_run_name(s) for s in per_seed},
        "recipe": recipe_dict(prep.recipe),
        "versions": versions(),
    }
