"""`eval`: top-1/top-5 of FP zero-shot, PTQ zero-shot, a trained run, or an exported bundle."""

from __future__ import annotations

from typing import Annotated

import typer

from ..config import CALIB_IMAGES
from ..quant import profiles
from ..runtime.backends import DEFAULT, choices_help, reference_spec
from ._common import AmpOpt, DataOpt, DeviceOpt, JsonOpt, WorkersOpt, emit


def eval_command(
    target: Annotated[str, typer.Argument(help="MODEL (open_clip name[:tag], checkpoint file or dir), a RUN dir, or a BUNDLE dir.")],
    data: DataOpt = None,
    quant: Annotated[str | None, typer.Option("--quant", help=f"PTQ profile: {profiles.choices_help()}.")] = None,
    bits: Annotated[str | None, typer.Option("--bits", help="W/A bits for --quant, e.g. 8/8, 4/4, 3/3.")] = None,
    quantize_text: Annotated[bool, typer.Option("--quantize-text", help="Quantize the text tower too.")] = False,
    backend: Annotated[str | None, typer.Option("--backend", help=choices_help(notes={
        reference_spec().name: "default for models and runs", DEFAULT: "default for bundles"}) + ".")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Evaluate on a fixed subset of N test images (0 = all).")] = 0,
    calib_images: Annotated[int, typer.Option("--calib-images", help="Calibration images for --quant (the same seeded sample as `train` and `export MODEL`).")] = CALIB_IMAGES,
    act_observer: Annotated[str | None, typer.Option("--act-observer", help="Activation observer for --quant: minmax, percentile[:P] or omse.")] = None,
    weight_observer: Annotated[str | None, typer.Option("--weight-observer", help="Weight observer for --quant: minmax, percentile[:P] or omse.")] = None,
    keep_fp: Annotated[list[str] | None, typer.Option("--keep-fp", metavar="PATTERN", help="With --quant: leave the matching layers in FP "
                                                   "(fnmatch over layer names, repeatable; see `inspect --suggest`).")] = None,
    prompts: Annotated[str, typer.Option("--prompts", help="Class names and templates for a MODEL's zero-shot: '' = the dataset's own, "
                                         "glyphs = the glyph test bed's (as `train --set prompts=glyphs`).")] = "",
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    amp: AmpOpt = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass (torch).")] = 500,
    json_out: JsonOpt = False,
) -> None:
    """Top-1/top-5 accuracy on the test split of --data."""
    from ..tasks.evaluate import EvalRequest, evaluate

    result = evaluate(
        EvalRequest(
            target=target, data=data, quant=quant, bits=bits,
            quantize_text=quantize_text, backend=backend, limit=limit, calib_images=calib_images,
            act_observer=act_observer, weight_observer=weight_observer,
            device=device, workers=workers, amp=amp, batch_size=batch_size, keep_fp=keep_fp or None, prompts=prompts,
        )
    )
    emit(result, json_out, _human)


def _human(r: dict) -> str:
    # percentages, as `train` prints them
    where = f" on {r['device']}, {r['images_per_s']} img/s" if r.get("device") else ""
    return (f"{r.get('mode', 'eval')}: top-1 {100 * r['top1']:.2f}%  top-5 {100 * r['top5']:.2f}% on {r['n']} "
            f"{r.get('split', 'test')} images of {r.get('data')} ({r['backend']}{where})")
