"""`inspect`: per-layer quantization diagnosis (SQNR, input ranges, top-1 effect), a ranked table,
a plot, and `--suggest K` layers to keep in floating point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..config import CALIB_IMAGES
from ..progress import pct
from ..quant import profiles
from ._common import DataOpt, DeviceOpt, JsonOpt, WorkersOpt, emit


def _interval(r: dict) -> str:
    lo, hi = r["interval"]
    return "" if lo is None else f" (95% interval {100 * lo:.0f}..{100 * hi:.0f}%)"


def _table(report: dict, top: int) -> str:
    acc = "top1_quantized" in report
    lines = []
    if acc:
        sel = report["selection"]
        lines.append(f"{sel['data']}")
        lines.append(f"top-1 on the {sel['n_select']} selection images: FP {pct(report['top1_fp'])}, quantized {pct(report['top1_quantized'])}")
    head = f"{'rank':>4}  {'layer':<44} {'tower':<5} {'SQNR dB':>8} {'cosine':>8} {'max|x|':>8} {'max/p99.9':>9} {'ch spread':>9}"
    lines.append(head + ("  KL cut  keep-FP gain (95% interval)" if acc else ""))
    by_name = {r["name"]: r for r in report["layers"]}
    rows = [by_name[n] for n in report["ranking"]]  # worst first, as the report ranks them
    for i, r in enumerate(rows[: top or None], 1):
        line = (f"{i:>4}  {r['name']:<44} {r['tower']:<5} {r['sqnr_db']:>8.2f} {r['cosine']:>8.4f} {r['in_max']:>8.3g} "
                f"{r['outlier_ratio']:>9.1f} {r['channel_spread']:>9.1f}")
        if acc:
            gain = r.get("gain_keep_fp")
            if gain is None:
                line += "       -  -"
            else:
                lo, hi = r["gain_interval"]
                line += (f"  {r['kl_reduction']:>6.3f}  {100 * gain:+.2f} pt ({100 * lo:+.2f}..{100 * hi:+.2f})"
                         + (" within noise" if r["gain_within_noise"] else ""))
        lines.append(line)
    if len(rows) > (top or len(rows)):
        lines.append(f"... {len(rows) - top} more layers (--top 0 lists all)")
    s = report.get("suggest")
    if s:
        for st in s["steps"]:
            lines.append(f"keep {st['layer']} FP -> top-1 {pct(st['top1'])}, KL {st['kl']:.3f}")
        if s["keep_fp"]:
            e = s["expected"]
            frac = e["recovered_fraction"]
            where = "the same images" if e["same_images_as_selection"] else f"{e['n']} other held-out images"
            lines.append(("no drop to recover" if frac is None else f"expected to recover {100 * frac:.0f}% of the drop"
                          + _interval(e)) + f" (measured on {where}); recipe line:")
            lines.append(s["recipe_line"])
            v = s.get("verify")
            if v:
                vf = v["recovered_fraction"]
                lines.append(f"verified on the {v['n']} test images: " + ("no drop" if vf is None else f"recovers {100 * vf:.0f}%")
                             + _interval(v) + (", inside the expected interval" if v["within_expected_interval"] else ", OUTSIDE the expected interval"))
        else:
            lines.append("no layer kept in FP improves the selection measure on this sample")
        if s.get("warning"):
            lines.append("warning: " + s["warning"])
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def inspect(
    target: Annotated[str, typer.Argument(metavar="MODEL_OR_RUN", help="A MODEL (with --quant) or a trained RUN dir.")],
    data: DataOpt = None,
    quant: Annotated[str | None, typer.Option("--quant", help=f"PTQ profile for a MODEL: {profiles.choices_help()}.")] = None,
    bits: Annotated[str | None, typer.Option("--bits", help="W/A bits for --quant, e.g. 8/8, 4/4.")] = None,
    quantize_text: Annotated[bool, typer.Option("--quantize-text", help="Quantize (and inspect) the text tower too.")] = False,
    act_observer: Annotated[str | None, typer.Option("--act-observer", help="Activation observer for --quant.")] = None,
    weight_observer: Annotated[str | None, typer.Option("--weight-observer", help="Weight observer for --quant.")] = None,
    calib_images: Annotated[int, typer.Option("--calib-images", help="Calibration images (the seeded sample `eval --quant` uses).")] = CALIB_IMAGES,
    stats_images: Annotated[int, typer.Option("--stats-images", min=1, help="The first N calibration images feed SQNR and range statistics.")] = 256,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Held-out images to select layers on (as many others estimate the "
                                       "suggestion's recovery; 0 = all, half each). With --select-on test: the `eval --limit` sample.")] = 2000,
    select_by: Annotated[str, typer.Option("--select-by", help="kl (of the logits from the FP model's: resolves small effects on fewer "
                                           "images) or top1.")] = "kl",
    select_on: Annotated[str, typer.Option("--select-on", help="heldout (the training split less what calibration and training used) "
                                           "or test (selects on the reported images: optimistic).")] = "heldout",
    verify: Annotated[bool, typer.Option("--verify", help="With --suggest: measure the suggestion's recovery on the test split.")] = False,
    verify_limit: Annotated[int, typer.Option("--verify-limit", min=0, help="Test images for --verify (the `eval --limit` sample; 0 = all).")] = 0,
    accuracy: Annotated[bool, typer.Option("--accuracy/--no-accuracy", help="Measure each layer's top-1 effect (one forward of the sample per layer).")] = True,
    accuracy_top: Annotated[int, typer.Option("--accuracy-top", min=0, help="Measure accuracy only for the N lowest-SQNR layers (0 = all).")] = 0,
    alone: Annotated[bool, typer.Option("--alone", help="Also top-1 with each layer quantized alone (the rest FP).")] = False,
    suggest: Annotated[int, typer.Option("--suggest", min=0, help="Propose up to K layers to keep FP (greedy on --select-by), with the recovery it expects.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Write the report JSON here and the plot beside it (.png).")] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Rows of the printed table (0 = all).")] = 0,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 250,
    json_out: JsonOpt = False,
) -> None:
    """Rank the quantized layers by the harm they do (SQNR, activation ranges, top-1 when kept FP)."""
    from ..tasks.inspecting import InspectRequest, inspect_layers

    report = inspect_layers(InspectRequest(
        target=target, data=data, quant=quant, bits=bits, quantize_text=quantize_text, act_observer=act_observer,
        weight_observer=weight_observer, calib_images=calib_images, stats_images=stats_images, limit=limit,
        accuracy=accuracy, accuracy_top=accuracy_top, alone=alone, suggest=suggest, device=device, workers=workers,
        batch_size=batch_size, select_by=select_by, select_on=select_on, verify=verify,
        verify_limit=verify_limit, out=out,
    ))
    emit(report, json_out, lambda r: _table(r, top))
