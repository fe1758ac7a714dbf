"""What a finished run leaves behind: RUN/metrics.json and the RUN/run.json manifest (one seed),
or their mean ± std over several seeds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import recipe_dict
from .checkpoint import CHECKPOINT

if TYPE_CHECKING:
    from .trainer import Prepared, SeedResult

RUN_MANIFEST = "run.json"
METRICS = "metrics.json"
RUN_KIND = "p4q-export/run"


def seed_run_dir(out: Path, seed: int, seeds: list[int]) -> Path:
    """Where a seed's run lives: OUT itself for a single seed, OUT/seed-S/ for each of several."""
    return out if len(seeds) == 1 else out / seed_run_name(seed)


def seed_run_name(seed: int) -> str:
    return f"seed-{seed}"


def weights_file(path: Path) -> Path:
    """The weights of a local model: the file itself, or an open_clip directory's weights file."""
    return path / "open_clip_pytorch_model.bin" if path.is_dir() else path


def model_reference(loaded) -> dict:
    """The model as given, plus an absolute path and the weights' SHA-256 when it is a local
    file/dir (runs move; the cwd too)."""
    ref = loaded.describe()
    spec = Path(loaded.source)
    if spec.exists():
        ref["path"] = str(spec.resolve())
        if weights_file(spec).is_file():
            from ..manifest import file_sha256

            ref["weights_sha256"] = file_sha256(weights_file(spec))
    return ref


def same_weights_as_recorded(ref: dict) -> bool:
    """False when a run's model (as `model_reference` recorded it) now holds other weights under
    the same path, e.g. a re-pretrained test bed; True when nothing was recorded or it is gone."""
    from ..manifest import file_sha256

    digest, path = ref.get("weights_sha256"), ref.get("path")
    if not digest or not path or not weights_file(Path(path)).is_file():
        return True
    return file_sha256(weights_file(Path(path))) == digest


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
        "seconds": round(seconds, 3),
        "device": next(iter(per_seed.values()))["device"],
        "timings": {str(s): m["timings"] for s, m in per_seed.items()},
        "seeds": [int(s) for s in per_seed],
        "seed_runs": {str(s): seed_run_name(s) for s in per_seed},
        "recipe": recipe_dict(prep.recipe),
        "versions": versions(),
    }
