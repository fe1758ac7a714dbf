"""`inspect`: per-layer quantization diagnosis (SQNR, input ranges, top-1 effect), a ranked table,
a plot, and `--suggest K` layers to keep in floating point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..config import CALIB_IMAGES
from ..errors import UserError
from ..progress import log, pct
from ._common import DataOpt, DeviceOpt, JsonOpt, WorkersOpt, emit


def _table(report: dict, top: int) -> str:
    from ..inspecting import rank

    acc = "top1_quantized" in report
    lines = []
    if acc:
        lines.append(f"top-1 on {report['n_eval_images']} test images: FP {pct(report['top1_fp'])}, quantized {pct(report['top1_quantized'])}")
    head = f"{'rank':>4}  {'layer':<44} {'tower':<5} {'SQNR dB':>8} {'cosine':>8} {'max|x|':>8} {'p99.9':>8} {'max/p99.9':>9} {'ch spread':>9}"
    lines.append(head + ("  keep-FP gain" if acc else ""))
    rows = rank(report["layers"])
    for i, r in enumerate(rows[: top or None], 1):
        line = (f"{i:>4}  {r['name']:<44} {r['tower']:<5} {r['sqnr_db']:>8.2f} {r['cosine']:>8.4f} {r['in_max']:>8.3g} "
                f"{r['in_p999']:>8.3g} {r['outlier_ratio']:>9.1f} {r['channel_spread']:>9.1f}")
        if acc:
            gain = r.get("gain_keep_fp")
            line += "  " + ("-" if gain is None else f"{100 * gain:+.2f} pt")
        lines.append(line)
    if len(rows) > (top or len(rows)):
        lines.append(f"... {len(rows) - top} more layers (--top 0 lists all)")
    s = report.get("suggest")
    if s:
        for st in s["steps"]:
            lines.append(f"keep {st['layer']} FP -> top-1 {pct(st['top1'])}")
        if s["keep_fp"]:
            frac = s["recovered_fraction"]
            lines.append(("n/a (no drop)" if frac is None else f"recovers {100 * frac:.0f}% of the drop") + " on this sample; recipe line:")
            lines.append(s["recipe_line"])
        else:
            lines.append("no layer kept in FP improves top-1 on this sample")
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def inspect(
    target: Annotated[str, typer.Argument(metavar="MODEL_OR_RUN", help="A MODEL (with --quant) or a trained RUN dir.")],
    data: DataOpt = None,
    quant: Annotated[str | None, typer.Option("--quant", help="PTQ profile for a MODEL: trt, ort-x86 or paper.")] = None,
    bits: Annotated[str | None, typer.Option("--bits", help="W/A bits for --quant, e.g. 8/8, 4/4.")] = None,
    quantize_text: Annotated[bool, typer.Option("--quantize-text", help="Quantize (and inspect) the text tower too.")] = False,
    act_observer: Annotated[str | None, typer.Option("--act-observer", help="Activation observer for --quant.")] = None,
    weight_observer: Annotated[str | None, typer.Option("--weight-observer", help="Weight observer for --quant.")] = None,
    calib_images: Annotated[int, typer.Option("--calib-images", help="Calibration images (the seeded sample `eval --quant` uses).")] = CALIB_IMAGES,
    stats_images: Annotated[int, typer.Option("--stats-images", min=1, help="The first N calibration images feed SQNR and range statistics.")] = 256,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Test images for the accuracy effects (the `eval --limit` sample; 0 = all).")] = 1000,
    accuracy: Annotated[bool, typer.Option("--accuracy/--no-accuracy", help="Measure each layer's top-1 effect (one forward of the sample per layer).")] = True,
    accuracy_top: Annotated[int, typer.Option("--accuracy-top", min=0, help="Measure accuracy only for the N lowest-SQNR layers (0 = all).")] = 0,
    alone: Annotated[bool, typer.Option("--alone", help="Also top-1 with each layer quantized alone (the rest FP).")] = False,
    suggest: Annotated[int, typer.Option("--suggest", min=0, help="Propose up to K layers to keep FP (greedy on measured top-1).")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Write the report JSON here and the plot beside it (.png).")] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Rows of the printed table (0 = all).")] = 0,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 250,
    json_out: JsonOpt = False,
) -> None:
    """Rank the quantized layers by the harm they do (SQNR, activation ranges, top-1 when kept FP)."""
    from ..inspecting import InspectRequest, inspect_layers, write_plot
    from ..manifest import write_json_atomic
    from ..outdir import check_writable

    if out is not None:
        if out.is_dir():
            raise UserError(f"--out {out} is a folder: give the report's file name, e.g. {out / 'inspect.json'}")
        check_writable(out.parent, "inspect report")  # before minutes of measuring, not after
    report = inspect_layers(InspectRequest(
        target=target, data=data, quant=quant, bits=bits, quantize_text=quantize_text, act_observer=act_observer,
        weight_observer=weight_observer, calib_images=calib_images, stats_images=stats_images, limit=limit,
        accuracy=accuracy, accuracy_top=accuracy_top, alone=alone, suggest=suggest, device=device, workers=workers,
        batch_size=batch_size,
    ))
    if out is not None:
        report["plot"] = str(write_plot(report, out.with_suffix(".png")))
        write_json_atomic(out, json.loads(json.dumps(report, default=str)))
        log(f"wrote {out} and {report['plot']}")
    emit(report, json_out, lambda r: _table(r, top))
