"""`export`: fold the class embeddings and write an INT8 QDQ ONNX bundle: deploy/ (the deploy graph,
manifest.json, classnames.txt: what a device gets) and validation/ (reference.pt, the other graphs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..config import CALIB_IMAGES
from ..quant import profiles
from ._common import DataOpt, DeviceOpt, JsonOpt, WorkersOpt, emit


def export(
    source: Annotated[str, typer.Argument(metavar="RUN_OR_MODEL", help="A trained run directory, or a MODEL (open_clip name, checkpoint, model dir).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write: a new or empty folder, not the RUN or inside it. --force replaces only a folder that holds a p4q-export bundle.")],
    profile: Annotated[str | None, typer.Option("--profile", help=f"{profiles.choices_help(exportable=True)}. Default: the run's profile, "
                                                 f"{profiles.DEFAULT} for a MODEL.")] = None,
    data: DataOpt = None,
    uint8_input: Annotated[bool, typer.Option("--uint8-input", help="Fold mean/std into the graph: input uint8 NCHW 0-255.")] = False,
    calib_images: Annotated[int, typer.Option("--calib-images", help="Calibration images for a bare MODEL (PTQ on --data's training split, "
                                        "the same seeded sample as `train` and `eval --quant`). 1280 is the paper's setting; "
                                        "256 keeps a ViT-B export on 2 CPU cores within 2 minutes.")] = CALIB_IMAGES,
    embedding: Annotated[bool, typer.Option("--embedding/--no-embedding", help="Also output the normalized image embedding ('embedding'): "
                                            "for retrieval, and what `validate` compares.")] = True,
    keep_fp: Annotated[list[str] | None, typer.Option("--keep-fp", metavar="PATTERN", help="Leave the matching image-tower layers in FP "
                                                   "(fnmatch over layer names, repeatable; a RUN keeps its recipe's keep_fp).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="The deploy graph: int8-fp16 (Q/DQ, FP16 elsewhere, "
                                                   "LayerNorm/Softmax/normalization/logits FP32: strongly typed TensorRT 10 and 11), "
                                                   "int8 (Q/DQ, FP32 elsewhere), fp16 or fp32 (no Q/DQ). Default: the profile's, "
                                                   + ", ".join(f"{s.deploy_precision} for {s.name}" for s in profiles.profile_specs(exportable=True))
                                                   + ". It goes to OUT/deploy/; model.onnx (int8) is always written, and quantized "
                                                   "bundles carry the FP16 twin model.fp16.onnx, in OUT/validation/ unless deployed.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT when it holds a p4q-export bundle (never a run or other files).")] = False,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export a run (learned prompts + QAdapter) or a bare MODEL (zero-shot head of --data's classes) to an INT8 QDQ ONNX bundle.

    OUT/deploy/ is what a device needs (copy it alone: predict, bench and build-engine take it);
    OUT/validation/ holds what only validate reads. Every command takes OUT or OUT/deploy."""
    from ..tasks.export import export_to_bundle

    result = export_to_bundle(source, out, profile=profile, data=data, calib_images=calib_images, uint8_input=uint8_input,
                              embedding=embedding, keep_fp=keep_fp, precision=precision, force=force, device=device,
                              workers=workers)
    emit(result, json_out, lambda d: f"wrote {d['out']}: profile {d['profile']}, {d['precision']} deploy graph "
         f"({', '.join(d['graphs'].values())}), {d['tower_family']} tower: {d['quantized_layers']} INT8 layers, "
         f"{100 * d['int8_mac_fraction']:.1f}% of its MACs in INT8, "
         f"{d['classes']} classes, {d['seconds']:.1f}s; {d['deploy']['dir']} {d['deploy']['bytes'] / 1e6:.1f} MB (what a device "
         f"needs), {d['validation']['dir']} {d['validation']['bytes'] / 1e6:.1f} MB (for validate)")
