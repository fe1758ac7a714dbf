"""`validate`: a backend against the PyTorch reference on real images; exit 1 below threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import CheckFailed
from ..progress import log, pct
from ._common import DataOpt, DeviceOpt, JsonOpt, WorkersOpt, emit


def validate(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="An exported bundle directory.")],
    backend: Annotated[str, typer.Option("--backend", help="ort | ort-exact | trt. ORT runs in --ort-mode (default exact: Q/DQ computed exactly, the CPU stand-in for TensorRT).")] = "ort",
    ort_mode: Annotated[str, typer.Option("--ort-mode", help="exact (what TensorRT computes) or fast (ORT's INT8 kernels; use with ort-x86 bundles).")] = "exact",
    data: DataOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Validate on N images (every k-th of the test split).")] = None,
    cosine_min: Annotated[float | None, typer.Option("--cosine-min", help="Minimum per-image cosine of the embedding output, or of the logits for a bundle without one (default: manifest, 0.999).")] = None,
    top1_agreement_min: Annotated[float | None, typer.Option("--top1-agreement-min", help="Minimum top-1 agreement on the images the reference does not tie (default: manifest, 0.99).")] = None,
    tie_cosine: Annotated[float | None, typer.Option("--tie-cosine", help="The reference's two best classes closer than this in cosine make a tie, left out of top-1 agreement (default: manifest, 0.001).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="The graph to validate: int8-fp16, int8, fp16 or fp32 "
                                                   "(default: the bundle's deploy graph). Quantized graphs are compared with the "
                                                   "fake-quant reference, fp16/fp32 with the same network with quantizers off.")] = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare a backend's outputs with the PyTorch reference; writes BUNDLE/deploy/validation.json.

    The cosine that gates is the image embedding's where the bundle has that output (the default
    export), else the logits'. Top-1 agreement leaves out the images the reference ties."""
    from ..errors import UserError
    from ..runtime.validate import validate_bundle

    backend = _resolve_backend(backend, ort_mode, UserError)
    r = validate_bundle(bundle, backend, data, limit, cosine_min, top1_agreement_min, tie_cosine, device=device, workers=workers,
                        precision=precision)
    emit(r, json_out, lambda d: f"{'PASSED' if d['passed'] else 'FAILED'} {d['backend']} {d['precision']} vs torch on {d['n']} images: "
         f"{d['compared']} cosine min {d['cosine_min']:.6f} mean {d['cosine_mean']:.6f}, "
         f"top-1 agreement {pct(d['top1_agreement'])} ({d['ties']} ties left out; {pct(d['top1_agreement_all'])} on all), "
         f"max |diff| {d['max_abs_diff']:.4g}; top-1 {pct(d['accuracy'][d['backend']]['top1'])} vs torch {pct(d['accuracy']['torch']['top1'])}")
    if r.get("report_file"):
        log(f"wrote {r['report_file']}")
    if not r["passed"]:
        t = r["thresholds"]
        raise CheckFailed(f"{r['backend']} does not match the reference: {r['compared']} cosine_min {r['cosine_min']:.6f} (need {t['cosine_min']}), "
                          f"top-1 agreement {pct(r['top1_agreement'])} (need {pct(t['top1_agreement_min'])})")


def _resolve_backend(backend: str, ort_mode: str, UserError) -> str:
    if ort_mode not in ("exact", "fast"):
        raise UserError(f"--ort-mode must be exact or fast, got '{ort_mode}'")
    if backend == "ort":
        return "ort-exact" if ort_mode == "exact" else "ort"
    if backend in ("ort-exact", "ort-fast"):
        return "ort-exact" if backend == "ort-exact" else "ort"
    if backend == "trt":
        return backend
    raise UserError(f"unknown --backend '{backend}' (expected ort, ort-exact, ort-fast or trt)")
