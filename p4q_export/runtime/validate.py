"""Validation (a backend against the PyTorch reference on real images) and bundle evaluation.

Statistics, for every output of the bundle: per-image cosine (min / mean) and polygraphy's
comparators for the error statistics (max / mean / median absolute difference) and the cosine of
the whole tensor; plus top-1 agreement of the logits. Thresholds: the CLI's, else the manifest's
`validation_thresholds`.

Which cosine gates: the image embedding's where the bundle outputs one (`export --embedding`, the
default), else the logits'. The embedding is what the quantized tower computes; the logits are
that embedding times the fixed class matrix, and their per-image cosine says more about the class
matrix than about the backend: when the class embeddings barely differ (a random-weight model,
near-synonymous classes) every logit vector is almost flat and an error the embedding shows as
1e-4 becomes 1e-2 there.

Top-1 agreement gates in every case, counted on the images where the reference decides: an image
whose two best classes are within `tie_cosine` (default 0.001) of each other in cosine, i.e.
within tie_cosine × logit_scale in logits, is a tie that any arithmetic, FP16 included, may break
either way. `top1_agreement_all` counts every image and `ties` says how many were set aside.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import numpy as np

from ..data import load_dataset, parse_spec
from ..data.samplers import eval_subset
from ..deploy.bundle import Bundle, load_bundle, validation_file
from ..errors import UserError
from ..manifest import write_json_atomic
from ..progress import log, progress_iter, slow_step
from ..registry import or_list
from .backends import DEFAULT, backend_spec, compared_specs, reference_spec
from .base import open_runner
from .inputs import dataset_input_batches

BATCH = 250


def batch_size_for(runners, default: int = BATCH) -> int:
    """The largest batch every runner takes: a TensorRT engine stops at its profile's max."""
    return min([default, *[int(r.max_batch) for r in runners if getattr(r, "max_batch", None)]])


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


def _all_outputs(runners, bundle: Bundle, ds, workers: int | None = None) -> list[dict[str, np.ndarray]]:
    """Every output of every runner on the dataset, by name (inputs streamed, outputs kept)."""
    outs: list[dict[str, list[np.ndarray]]] = [{} for _ in runners]
    batch = batch_size_for(runners)
    batches = dataset_input_batches(bundle, ds, batch, workers=workers)
    for x in progress_iter(batches, desc="running", total=-(-len(ds) // batch)):
        for i, r in enumerate(runners):
            for name, value in r.run_all(x).items():
                outs[i].setdefault(name, []).append(np.asarray(value, dtype=np.float32))
    return [{name: np.concatenate(chunks) for name, chunks in o.items()} for o in outs]


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> dict:
    """{top1, top5}: the same count as eval of a MODEL or RUN (models.zeroshot.topk_accuracy)."""
    from ..models.zeroshot import topk_accuracy

    acc = topk_accuracy(logits, labels)
    return {"top1": acc.top1, "top5": acc.top5}


@contextlib.contextmanager
def _polygraphy_quiet():
    """Polygraphy logs on stdout; stdout is reserved for --json."""
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.ERROR), contextlib.redirect_stdout(sys.stderr):
        yield


def compare_outputs(reference: np.ndarray, test: np.ndarray, name: str = "logits") -> dict:
    """Agreement of one output (rows = images) between the reference and a backend."""
    from polygraphy.comparator import (
        CosineSimilarityCompareFunc,
        IterationResult,
        SimpleCompareFunc,
    )

    a = reference.astype(np.float64)
    b = test.astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    with _polygraphy_quiet():
        r0 = IterationResult({name: reference}, runner_name="torch")
        r1 = IterationResult({name: test}, runner_name="backend")
        err = SimpleCompareFunc(atol=np.inf, rtol=np.inf, check_shapes=True)(r0, r1)[name]
        glob = CosineSimilarityCompareFunc(cosine_similarity_threshold=-1.0)(r0, r1)[name]
    return {
        "cosine_min": round(float(cos.min()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "cosine_global": round(float(glob.cosine_similarity), 6),
        "max_abs_diff": float(err.max_absdiff),
        "mean_abs_diff": float(err.mean_absdiff),
        "median_abs_diff": float(err.median_absdiff),
    }


def compare_logits(reference: np.ndarray, test: np.ndarray, tie_margin: float = 0.0) -> dict:
    """Output agreement plus top-1 agreement; images whose reference top-1 leads the runner-up
    by `tie_margin` or less (in logits) are ties and left out of `top1_agreement`."""
    agree = reference.argmax(1) == test.argmax(1)
    top2 = np.sort(reference, axis=1)[:, -2:] if reference.shape[1] > 1 else np.zeros((len(reference), 2))
    decisive = (top2[:, 1] - top2[:, 0]) > tie_margin
    return {
        **compare_outputs(reference, test, "logits"),
        "top1_agreement": round(float(agree[decisive].mean()), 6) if decisive.any() else 1.0,
        "top1_agreement_all": round(float(agree.mean()), 6),
        "ties": int((~decisive).sum()),
    }


def check_thresholds(cosine_min: float | None, top1_agreement_min: float | None, tie_cosine: float | None) -> None:
    """Thresholds outside their range are bad input, not a failed check (None: not given)."""
    if cosine_min is not None and not -1.0 <= cosine_min <= 1.0:
        raise UserError(f"--cosine-min must be in [-1, 1], got {cosine_min}")
    if top1_agreement_min is not None and not 0.0 <= top1_agreement_min <= 1.0:
        raise UserError(f"--top1-agreement-min must be in [0, 1], got {top1_agreement_min}")
    if tie_cosine is not None and not 0.0 <= tie_cosine < 1.0:
        raise UserError(f"--tie-cosine must be in [0, 1), got {tie_cosine}")


def validate_bundle(bundle_dir: Path | str, backend: str = DEFAULT, data: str | None = None, limit: int | None = None,
                    cosine_min: float | None = None, top1_agreement_min: float | None = None, tie_cosine: float | None = None,
                    write: bool = True, device: str = "cpu", workers: int | None = None, precision: str | None = None,
                    **runner_opts) -> dict:
    """Returns the report (key `passed`); writes BUNDLE/validation.json (validation.<precision>.json
    for a graph other than the deploy graph). Raising on failure is the caller's choice (the validate
    task raises CheckFailed after the report is printed). `device` is where the PyTorch reference runs
    (FP32 there too: see devices.py). `precision` picks the graph (default: the deploy graph); a
    quantized graph is compared with the fake-quant reference, the FP16/FP32 twins with the same
    network with its quantizers off."""
    from ..devices import describe_device, resolve_device

    started = time.time()
    check_thresholds(cosine_min, top1_agreement_min, tie_cosine)  # the user's, before any work
    torch_device = resolve_device(device)
    chosen, reference_name = backend_spec(backend), reference_spec().name
    if chosen.reference:
        raise UserError(f"validate compares a backend with the {reference_name} reference: "
                        f"use --backend {or_list(s.name for s in compared_specs())}")
    bundle = load_bundle(bundle_dir)
    spec, ds = _dataset_for(bundle, data, limit)
    thresholds = bundle.thresholds
    cmin = cosine_min if cosine_min is not None else float(thresholds.get("cosine_min", 0.999))
    amin = top1_agreement_min if top1_agreement_min is not None else float(thresholds.get("top1_agreement_min", 0.99))
    tie = tie_cosine if tie_cosine is not None else float(thresholds.get("tie_cosine", 0.001))
    check_thresholds(cmin, amin, tie)
    from ..deploy.precision import check_precision

    precision = check_precision(precision or bundle.precision)
    runner = open_runner(bundle, backend, precision=precision, **runner_opts)
    graph = bundle.graphs.get(precision, {}).get("file")
    if chosen.tensorrt:  # an engine says which graph it was built from (int8 asks for any INT8 engine)
        precision, graph = runner.precision, runner.engine_entry.get("graph")
    quantized = bundle.graph_is_quantized(precision)
    reference = open_runner(bundle, reference_name, device=str(torch_device), precision="int8" if quantized else "fp32")
    # said once it takes a while: a damaged image among the first is then the only line
    with slow_step(f"validating {backend} ({precision}) against the torch reference on {len(ds)} images of {spec}"):
        test_out, ref_out = _all_outputs([runner, reference], bundle, ds, workers)
    test_logits, ref_logits = test_out["logits"], ref_out["logits"]
    outputs = {"logits": compare_logits(ref_logits, test_logits, tie * reference.logit_scale)}
    if "embedding" in test_out and "embedding" in ref_out:
        outputs["embedding"] = compare_outputs(ref_out["embedding"], test_out["embedding"], "embedding")
    gated = "embedding" if "embedding" in outputs else "logits"
    stats = dict(outputs[gated])
    for key in ("top1_agreement", "top1_agreement_all", "ties"):
        stats[key] = outputs["logits"][key]
    finite = all(np.isfinite(v).all() for v in test_out.values())
    passed = bool(stats["cosine_min"] >= cmin and stats["top1_agreement"] >= amin and finite)
    aligned = None
    if not passed and finite and quantized and chosen.rounding_replay and precision == "int8":
        aligned = _rounding_aligned(bundle, precision, reference, ds, test_out, gated, cmin, amin, tie, workers)
        passed = aligned["passed"]
    report = {
        "backend": runner.backend,
        "precision": precision,
        "graph": graph,
        "reference": "fake-quant (int8 grid, FP32 arithmetic)" if quantized else "the same network, quantizers off (FP32)",
        "compared": gated,  # whose cosine the top-level cosine_* and *_abs_diff are
        **stats,
        "outputs": outputs,
        "passed": passed,
        **({"rounding_aligned": aligned} if aligned is not None else {}),
        "thresholds": {"cosine_min": cmin, "top1_agreement_min": amin, "tie_cosine": tie},
        "accuracy": {runner.backend: _accuracy(test_logits, ds.labels), reference.backend: _accuracy(ref_logits, ds.labels)},
        "n": len(ds),
        "data": spec,
        "reference_device": describe_device(torch_device),
        "seconds": round(time.time() - started, 2),
    }
    if write:
        path = bundle.path / validation_file(precision, bundle.precision)
        write_json_atomic(path, report)
        report = {**report, "report_file": str(path)}
    return report


def _rounding_aligned(bundle, precision, reference, ds, test_out, gated, cmin, amin, tie, workers) -> dict:
    """A failed exact comparison, replayed with ORT's rounding decisions (runtime/rounding.py): it
    passes when the graph computes what the reference computes up to quantizer rounding ties."""
    from .inputs import dataset_input_batches
    from .rounding import BATCH, aligned_reference

    log("the exact comparison failed: replaying the reference with ONNX Runtime's rounding ties ...")
    ref, stats = aligned_reference(bundle.graph_path(precision), reference.model,
                                   dataset_input_batches(bundle, ds, BATCH, workers=workers))
    emb = compare_outputs(ref[gated], test_out[gated], gated)
    logits = compare_logits(ref["logits"], test_out["logits"], tie * reference.logit_scale)
    passed = bool(emb["cosine_min"] >= cmin and logits["top1_agreement"] >= amin and stats["beyond_tolerance_fraction"] == 0)
    return {"cosine_min": emb["cosine_min"], "cosine_mean": emb["cosine_mean"], "max_abs_diff": emb["max_abs_diff"],
            "top1_agreement": logits["top1_agreement"], **stats, "passed": passed}


def evaluate_bundle(bundle_dir: Path | str, data_spec: str | None, backend: str = DEFAULT, limit: int | None = None,
                    workers: int | None = None, **runner_opts) -> dict:
    """Top-1/top-5 of a bundle on DATA's test split with one backend: {top1, top5, n, backend}.
    ONNX Runtime runs the deploy graph unless `precision` says otherwise."""
    bundle = load_bundle(bundle_dir)
    spec, ds = _dataset_for(bundle, data_spec, limit)
    runner = open_runner(bundle, backend, **runner_opts)
    logits = _all_outputs([runner], bundle, ds, workers)[0]["logits"]
    return {**_accuracy(logits, ds.labels), "n": len(ds), "backend": runner.backend, "precision": runner.precision, "data": spec,
            "split": ds.split_name}
