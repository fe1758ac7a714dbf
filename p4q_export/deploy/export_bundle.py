"""`export` end to end: fold → QDQ ONNX → TensorRT lint → reference.pt → manifest, all into a
staging dir renamed into place only when every step succeeded. The deploy graph and class names go
to deploy/, the rest to validation/ (bundle.py)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import onnx
import torch

from ..config import CALIB_IMAGES
from ..errors import UserError
from ..manifest import versions
from ..outdir import check_out
from ..progress import log, slow_step
from . import bundle as B
from .export_onnx import OPSET, export_onnx, io_spec
from .fold import FoldedModel, fold_model, fold_run
from .macs import mac_summary
from .precision import (
    FILES,
    FP16_OPSET,
    FP32_OPS,
    check_precision,
    default_precision,
    fp16_compute_nodes,
    graphs_for,
    head_nodes,
    make_graph,
    tensor_types,
)
from .trt_lint import check_trt_compatible

DEFAULT_THRESHOLDS = {"cosine_min": 0.999, "top1_agreement_min": 0.99, "tie_cosine": 0.001}


def fold_source(source: str, profile: str | None, data: str | None, calib_images: int, uint8_input: bool,
                with_embedding: bool, calibration_dir: Path, device: torch.device, workers: int | None,
                keep_fp: list[str] | None = None) -> FoldedModel:
    """Fold on `device` (calibration and the text side are the heavy part), then bring the network
    to the CPU: the ONNX export and reference.pt are device-independent."""
    if _is_run(Path(source)):
        folded = fold_run(source, profile, uint8_input=uint8_input, with_embedding=with_embedding, device=device, keep_fp=keep_fp)
    else:
        folded = fold_model(source, data, profile, calib_images=calib_images, uint8_input=uint8_input,
                            with_embedding=with_embedding, calibration_dir=calibration_dir, device=device, workers=workers,
                            keep_fp=keep_fp)
    folded.module.cpu()
    return folded


def _is_run(path: Path) -> bool:
    from ..p4q.run import is_run_dir

    return path.is_dir() and is_run_dir(path)


def _quantized_modules(folded: FoldedModel) -> set[str]:
    from ..quant import quant_layers

    return set(quant_layers(folded.module))


def tower_info(visual) -> dict:
    """The image tower as quantize_clip left it: family, deployed-form changes and the quantized
    layers (full names, network order)."""
    return {**visual.p4q_tower, "quantized_layers": list(visual.p4q_quantized)}


def _release_memory() -> None:
    """Hand the freed graph copies back to the OS between graphs: glibc keeps them in its arenas
    otherwise, and ViT-B-32's peak RSS grew by about 0.9 GB per graph."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def _folder(key: str, precision: str, deploy: Path, validation: Path) -> Path:
    """The deploy graph goes to deploy/, every other graph to validation/."""
    return deploy if key == precision else validation


def _write_graphs(model, int8_entry: dict, precision: str, deploy: Path, validation: Path, quantized: set[str],
                  started: float) -> dict:
    """Every graph of the bundle but model.onnx (int8, written already), each linted; their manifest entries."""
    graphs = {"int8": int8_entry}
    for key in graphs_for(precision):
        if key == "int8":
            continue
        log(f"[{time.time() - started:.0f}s] making the {key} graph ...")
        graph = make_graph(model, key)
        is_q, fp16 = key == "int8-fp16", key in ("int8-fp16", "fp16")
        head = head_nodes(graph) if fp16 else None
        types = tensor_types(graph) if fp16 else None  # shape inference once, for the lint and the count
        rep = check_trt_compatible(graph, expected_layers=len(quantized) if is_q else 0,
                                   quantized_modules=quantized if is_q else set(), fp32_nodes=head, types=types)
        folder = _folder(key, precision, deploy, validation)
        onnx.save(graph, str(folder / FILES[key]))
        graphs[key] = {"file": FILES[key], "folder": folder.name, "opset": FP16_OPSET if fp16 else OPSET, "quantized": is_q,
                       "compute": "fp16" if fp16 else "fp32", "qdq_pairs": rep.qdq_pairs, "quantized_layers": len(rep.quantized_layers),
                       "trt_lint": "passed"}
        if fp16:
            graphs[key].update(fp32_ops=list(FP32_OPS), fp32_head_nodes=head, fp16_compute_nodes=fp16_compute_nodes(graph, types))
        del graph
        _release_memory()
    return graphs


def _manifest(folded: FoldedModel, report, graphs: dict, precision: str, started: float, uint8_input: bool, with_embedding: bool,
              macs: dict) -> dict:
    cfg = folded.reference_config
    inputs, outputs = io_spec(folded.preprocess.image_size, uint8_input, cfg["num_classes"], cfg["embed_dim"], with_embedding)
    preprocessing = dict(folded.preprocess.as_dict(), folded_into_graph=bool(uint8_input))
    return {
        "format": B.FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": folded.model_info,
        "source": folded.source_kind,
        "data": folded.data,
        "recipe": folded.recipe,
        "profile": folded.profile.as_dict(),
        "tower": tower_info(folded.module.visual),
        "classnames": folded.classnames,
        "preprocessing": preprocessing,
        "inputs": inputs,
        "outputs": outputs,
        "onnx": {"file": B.ONNX_FILE, "folder": graphs["int8"]["folder"], "opset": OPSET, "quantized_layers": len(report.quantized_layers),
                 "qdq_pairs": report.qdq_pairs, "trt_lint": "passed", **macs,
                 "weight_form": "int8 initializer -> DequantizeLinear (per-channel axis 0)"},
        "precision": precision,  # the deploy graph: graphs[precision]
        "graphs": graphs,
        "reference": {"file": B.REFERENCE_FILE, "folder": B.VALIDATION_DIR, "config": cfg},
        "accuracy": folded.accuracy,
        "ptq": folded.ptq_info,
        "validation_thresholds": dict(DEFAULT_THRESHOLDS),
        "versions": versions(),
        "export_seconds": round(time.time() - started, 2),
    }


def export_bundle(source: str, out: Path, profile: str | None = None, data: str | None = None, calib_images: int = CALIB_IMAGES,
                  uint8_input: bool = False, with_embedding: bool = True, force: bool = False, device: str = "auto",
                  workers: int | None = None, keep_fp: list[str] | None = None, precision: str | None = None) -> dict:
    from ..devices import describe_device, resolve_device

    started = time.time()
    if precision is not None:
        check_precision(precision)
    out = Path(out)
    if ":" not in source and ("/" in source or source.startswith(".")) and not Path(source).exists():
        raise UserError(f"{source} not found (export takes a RUN directory or a MODEL)")
    check_out(out, "bundle", force, inputs=(source,))
    if calib_images < 1:
        raise UserError("--calib-images must be at least 1")
    torch_device = resolve_device(device)
    calib_tmp = Path(tempfile.mkdtemp(prefix=".p4q-calib-", dir=out.parent if out.parent.exists() else None))
    try:
        with slow_step(f"folding {source}"):  # silent when its input is refused at once: one line
            folded = fold_source(source, profile, data, calib_images, uint8_input, with_embedding, calib_tmp, torch_device,
                                 workers, keep_fp)
        folded.model_info = {**folded.model_info, "folded_on": describe_device(torch_device)}
        return _write(folded, out, calib_tmp, started, uint8_input, with_embedding, force,
                      precision or default_precision(folded.profile.name))
    finally:
        shutil.rmtree(calib_tmp, ignore_errors=True)


def _write(folded: FoldedModel, out: Path, calib_dir: Path, started: float, uint8_input: bool, with_embedding: bool, force: bool,
           precision: str) -> dict:
    quantized = _quantized_modules(folded)

    def write(deploy: Path, validation: Path) -> dict:
        log(f"[{time.time() - started:.0f}s] exporting ONNX (opset {OPSET}, profile {folded.profile.name}) ...")
        meta = {"p4q_export.profile": folded.profile.name, "p4q_export.classnames": json.dumps(folded.classnames)}
        int8_dir = _folder("int8", precision, deploy, validation)
        model = export_onnx(folded.module, int8_dir / B.ONNX_FILE, folded.preprocess.image_size, uint8_input, with_embedding, meta)
        int8 = make_graph(model, "int8")  # weights stored as INT8 codes: about a quarter of the exported file
        onnx.save(int8, str(int8_dir / B.ONNX_FILE))
        log(f"[{time.time() - started:.0f}s] checking TensorRT compatibility ...")
        report = check_trt_compatible(int8, expected_layers=len(quantized), quantized_modules=quantized)
        macs = mac_summary(int8, report.quantized_layers)
        del int8
        _release_memory()
        log(f"[{time.time() - started:.0f}s] {len(quantized)} INT8 layers, {100 * macs['int8_mac_fraction']:.1f}% of the "
            f"image tower's {macs['total_macs'] / 1e9:.2f} GMACs")
        int8_entry = {"file": B.ONNX_FILE, "folder": int8_dir.name, "opset": OPSET, "quantized": True, "compute": "fp32",
                      "qdq_pairs": report.qdq_pairs, "quantized_layers": len(report.quantized_layers), "trt_lint": "passed"}
        graphs = _write_graphs(model, int8_entry, precision, deploy, validation, quantized, started)
        log(f"[{time.time() - started:.0f}s] writing reference.pt and manifest ...")
        del model
        torch.save(folded.module.state_dict(), validation / B.REFERENCE_FILE)
        (deploy / B.CLASSNAMES_FILE).write_text("\n".join(folded.classnames) + "\n")
        for f in calib_dir.glob("*"):  # the calibration image list, for reproducibility
            shutil.copy(f, validation / f"calibration-{f.name}")
        return _manifest(folded, report, graphs, precision, started, uint8_input, with_embedding, macs)

    manifest = B.write_bundle(out, write, force=force)
    log(f"wrote {out}: {B.DEPLOY_DIR}/ ({', '.join(sorted(manifest['files']))}; {manifest['sizes']['deploy_bytes'] / 1e6:.1f} MB, "
        f"what a device needs) and {B.VALIDATION_DIR}/ ({', '.join(sorted(manifest['validation']['files']))}; "
        f"{manifest['sizes']['validation_bytes'] / 1e6:.1f} MB, for validate)")
    return {
        "out": str(out),
        "profile": manifest["profile"]["name"],
        "precision": manifest["precision"],
        "graphs": {k: f"{v['folder']}/{v['file']}" for k, v in manifest["graphs"].items()},
        "source": manifest["source"],
        "classes": len(manifest["classnames"]),
        "quantized_layers": manifest["onnx"]["quantized_layers"],
        "qdq_pairs": manifest["onnx"]["qdq_pairs"],
        "int8_mac_fraction": manifest["onnx"]["int8_mac_fraction"],
        "tower_family": manifest["tower"]["family"],
        "keep_fp": manifest["reference"]["config"].get("keep_fp", []),
        "uint8_input": uint8_input,
        "files": {**{f"{B.DEPLOY_DIR}/{k}": v["bytes"] for k, v in manifest["files"].items()},
                  **{f"{B.VALIDATION_DIR}/{k}": v["bytes"] for k, v in manifest["validation"]["files"].items()}},
        "deploy": {"dir": str(out / B.DEPLOY_DIR), "bytes": manifest["sizes"]["deploy_bytes"]},
        "validation": {"dir": str(out / B.VALIDATION_DIR), "bytes": manifest["sizes"]["validation_bytes"]},
        "seconds": round(time.time() - started, 2),
    }

