"""`validate`: a backend against the PyTorch reference on real images; exit 1 below threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import CheckFailed, UserError
from ..progress import log, pct
from ..registry import or_list
from ..runtime.backends import backend_specs, choices_help, compared_specs
from ._common import DataOpt, DeviceOpt, JsonOpt, WorkersOpt, emit

ORT = "ort"  # --backend ort: ONNX Runtime in --ort-mode; ort-MODE names the mode


def _ort_modes() -> dict[str, str]:
    """--ort-mode → the backend it picks (each backend's `ort_mode`)."""
    return {s.ort_mode: s.name for s in backend_specs() if s.ort_mode}


def _choices() -> dict[str, str]:
    """--backend (other than plain `ort`) → the backend it runs."""
    choices = {s.name: s.name for s in compared_specs()}
    choices.update({f"{ORT}-{mode}": name for mode, name in _ort_modes().items()})
    return choices


def validate(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="An exported bundle directory.")],
    backend: Annotated[str, typer.Option("--backend", help=f"{choices_help(compared_specs())}. {ORT} alone runs in --ort-mode, "
                                         f"{ORT}-MODE in that mode.")] = ORT,
    ort_mode: Annotated[str, typer.Option("--ort-mode", help=or_list(f"{mode} (as {name})" for mode, name in _ort_modes().items())
                                          + "; use fast with ort-x86 bundles.")] = "exact",
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
    from ..runtime.validate import validate_bundle

    backend = _resolve_backend(backend, ort_mode)
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


def _resolve_backend(backend: str, ort_mode: str) -> str:
    modes = _ort_modes()
    if ort_mode not in modes:
        raise UserError(f"--ort-mode must be {or_list(sorted(modes))}, got '{ort_mode}'")
    if backend == ORT:
        return modes[ort_mode]
    choices = _choices()
    if backend not in choices:
        raise UserError(f"unknown --backend '{backend}' (expected {or_list(sorted({ORT, *choices}))})")
    return choices[backend]
