"""Validation (a backend against the PyTorch reference on real images) and bundle evaluation.

Statistics: per-image cosine of the logit vectors (min / mean), top-1 agreement, and polygraphy's
comparators for the error statistics (max / mean / median absolute difference) and the cosine of
the whole output tensor. Thresholds: the CLI's, else the manifest's `validation_thresholds`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import numpy as np

from ..data import load_dataset, parse_spec
from ..data.samplers import eval_subset
from ..deploy.bundle import VALIDATION_FILE, Bundle, load_bundle
from ..errors import UserError
from ..manifest import write_json_atomic
from ..progress import log, progress_iter
from .base import open_runner
from .inputs import dataset_inputs

BATCH = 250


def _dataset_for(bundle: Bundle, data: str | None, limit: int | None):
    spec = data or bundle.manifest.get("data")
    if not spec:
        raise UserError("no --data SPEC given and the bundle records none")
    parse_spec(spec)
    ds = eval_subset(load_dataset(spec, "test"), limit)
    if list(ds.classnames) != bundle.classnames:
        raise UserError(f"the classes of {spec} differ from the bundle's ({len(ds.classnames)} vs {len(bundle.classnames)}: "
                        f"{ds.classnames[:3]}... vs {bundle.classnames[:3]}...)")
    return spec, ds


def _logits(runners, bundle: Bundle, ds) -> list[np.ndarray]:
    outs: list[list[np.ndarray]] = [[] for _ in runners]
    for start in progress_iter(range(0, len(ds), BATCH), desc="running"):
        x = dataset_inputs(bundle, ds, start, min(start + BATCH, len(ds)))
        for i, r in enumerate(runners):
            outs[i].append(np.asarray(r(x), dtype=np.float32))
    return [np.concatenate(o) for o in outs]


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> dict:
    k = min(5, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    return {"top1": round(float((top[:, 0] == labels).mean()), 6), "top5": round(float((top == labels[:, None]).any(1).mean()), 6)}


@contextlib.contextmanager
def _polygraphy_quiet():
    """Polygraphy logs on stdout; stdout is reserved for --json."""
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.ERROR), contextlib.redirect_stdout(sys.stderr):
        yield


def compare_logits(reference: np.ndarray, test: np.ndarray) -> dict:
    from polygraphy.comparator import CosineSimilarityCompareFunc, IterationResult, SimpleCompareFunc

    a = reference.astype(np.float64)
    b = test.astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    with _polygraphy_quiet():
        r0 = IterationResult({"logits": reference}, runner_name="torch")
        r1 = IterationResult({"logits": test}, runner_name="backend")
        err = SimpleCompareFunc(atol=np.inf, rtol=np.inf, check_shapes=True)(r0, r1)["logits"]
        glob = CosineSimilarityCompareFunc(cosine_similarity_threshold=-1.0)(r0, r1)["logits"]
    return {
        "cosine_min": round(float(cos.min()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "cosine_global": round(float(glob.cosine_similarity), 6),
        "top1_agreement": round(float((reference.argmax(1) == test.argmax(1)).mean()), 6),
        "max_abs_diff": float(err.max_absdiff),
        "mean_abs_diff": float(err.mean_absdiff),
        "median_abs_diff": float(err.median_absdiff),
    }


def validate_bundle(bundle_dir: Path | str, backend: str = "ort-exact", data: str | None = None, limit: int | None = None,
                    cosine_min: float | None = None, top1_agreement_min: float | None = None, write: bool = True,
                    **runner_opts) -> dict:
    """Returns the report (key `passed`); writes BUNDLE/validation.json. Raising on failure is the
    caller's choice (the CLI raises CheckFailed after printing the report)."""
    started = time.time()
    if backend == "torch":
        raise UserError("validate compares a backend with the torch reference: use --backend ort, ort-exact or trt")
    bundle = load_bundle(bundle_dir)
    spec, ds = _dataset_for(bundle, data, limit)
    thresholds = bundle.thresholds
    cmin = cosine_min if cosine_min is not None else float(thresholds.get("cosine_min", 0.999))
    amin = top1_agreement_min if top1_agreement_min is not None else float(thresholds.get("top1_agreement_min", 0.99))
    runner = open_runner(bundle, backend, **runner_opts)
    reference = open_runner(bundle, "torch")
    log(f"validating {backend} against the torch reference on {len(ds)} images of {spec} ...")
    test_logits, ref_logits = _logits([runner, reference], bundle, ds)
    stats = compare_logits(ref_logits, test_logits)
    passed = bool(stats["cosine_min"] >= cmin and stats["top1_agreement"] >= amin and np.isfinite(test_logits).all())
    report = {
        "backend": runner.backend,
        "precision": runner.precision,
        **stats,
        "passed": passed,
        "thresholds": {"cosine_min": cmin, "top1_agreement_min": amin},
        "accuracy": {runner.backend: _accuracy(test_logits, ds.labels), "torch": _accuracy(ref_logits, ds.labels)},
        "n": int(len(ds)),
        "data": spec,
        "seconds": round(time.time() - started, 2),
    }
    if write:
        write_json_atomic(bundle.path / VALIDATION_FILE, report)
    return report


def evaluate_bundle(bundle_dir: Path | str, data_spec: str | None, backend: str = "ort-exact", limit: int | None = None, **runner_opts) -> dict:
    """Top-1/top-5 of a bundle on DATA's test split with one backend: {top1, top5, n, backend}."""
    bundle = load_bundle(bundle_dir)
    spec, ds = _dataset_for(bundle, data_spec, limit)
    runner = open_runner(bundle, backend, **runner_opts)
    (logits,) = _logits([runner], bundle, ds)
    return {**_accuracy(logits, ds.labels), "n": int(len(ds)), "backend": runner.backend, "precision": runner.precision, "data": spec}
