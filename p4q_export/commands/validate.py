"""`validate`: a backend against the PyTorch reference on real images; exit 1 below threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..progress import log, pct
from ..registry import or_list
from ..runtime.backends import choices_help, compared_specs
from ..tasks.validate import ORT, ort_modes
from ._common import DataOpt, DeviceOpt, JsonOpt, WorkersOpt, emit


def validate(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="An exported bundle directory.")],
    backend: Annotated[str, typer.Option("--backend", help=f"{choices_help(compared_specs())}. {ORT} alone runs in --ort-mode, "
                                         f"{ORT}-MODE in that mode.")] = ORT,
    ort_mode: Annotated[str, typer.Option("--ort-mode", help=or_list(f"{mode} (as {name})" for mode, name in ort_modes().items())
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
    from ..tasks.validate import validate_backend

    validate_backend(bundle, backend=backend, ort_mode=ort_mode, data=data, limit=limit, cosine_min=cosine_min,
                     top1_agreement_min=top1_agreement_min, tie_cosine=tie_cosine, precision=precision, device=device,
                     workers=workers, show=lambda r: _show(r, json_out))


def _show(r: dict, json_out: bool) -> None:
    emit(r, json_out, lambda d: f"{'PASSED' if d['passed'] else 'FAILED'} {d['backend']} {d['precision']} vs torch on {d['n']} images: "
         f"{d['compared']} cosine min {d['cosine_min']:.6f} mean {d['cosine_mean']:.6f}, "
         f"top-1 agreement {pct(d['top1_agreement'])} ({d['ties']} ties left out; {pct(d['top1_agreement_all'])} on all), "
         f"max |diff| {d['max_abs_diff']:.4g}; top-1 {pct(d['accuracy'][d['backend']]['top1'])} vs torch {pct(d['accuracy']['torch']['top1'])}")
    if r.get("report_file"):
        log(f"wrote {r['report_file']}")
