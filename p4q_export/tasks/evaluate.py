"""Accuracy of whatever `eval` is pointed at: a MODEL (FP or PTQ zero-shot), a trained RUN, or an
exported BUNDLE. One entry point so the CLI stays a thin shell."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import CALIB_IMAGES, CALIB_SEED
from ..data import (
    dataset_templates,
    image_batches,
    load_dataset,
    parse_spec,
    with_prompts,
)
from ..data.samplers import eval_subset
from ..deploy.bundle import is_bundle
from ..devices import describe_device, peak_gpu_memory_mb, resolve_device
from ..errors import UserError
from ..models import load_model
from ..models.zeroshot import encode_images, topk_accuracy, zero_shot_classifier
from ..runtime.backends import DEFAULT, find_backend


@dataclass
class QuantTarget:
    """A MODEL (or RUN) on a dataset, with the PTQ options `eval --quant` and `inspect` share."""

    target: str
    data: str | None = None
    quant: str | None = None
    bits: str | None = None
    quantize_text: bool = False
    calib_images: int = CALIB_IMAGES
    calib_seed: int = CALIB_SEED
    act_observer: str | None = None
    weight_observer: str | None = None
    device: str = "auto"  # models and runs (torch); a bundle's backend picks its own
    workers: int | None = None  # image-decoding processes (None: one per core, up to 8)
    prompts: str = ""  # "" = the dataset's class names and templates; glyphs = the glyph bed's (as `train`)


def ptq_of(req: QuantTarget, loaded, keep_fp: list[str] | None = None):
    """(quantized model, PTQ info, the train split it calibrated on) for `req`'s --quant options;
    the calibration list goes to a temporary directory: eval and inspect write nothing."""
    from ..quant import get_profile
    from ..quant.ptq import build_ptq_model

    profile = get_profile(req.quant, req.bits, w_observer=req.weight_observer, a_observer=req.act_observer)
    calib = with_prompts(load_dataset(req.data, split="train"), req.prompts)  # text calibration asks as train does
    with tempfile.TemporaryDirectory(prefix="p4q-calib-") as calib_dir:
        model, info = build_ptq_model(loaded, profile, req.quantize_text, calib, n_calib=req.calib_images,
                                      seed=req.calib_seed, calibration_dir=calib_dir, workers=req.workers, keep_fp=keep_fp)
    info.pop("calibration_list")  # a path that no longer exists; the hashes identify the sample
    return model, info, calib


@dataclass
class EvalRequest(QuantTarget):
    backend: str | None = None  # None: the torch reference for models and runs, backends.DEFAULT for bundles
    limit: int = 0
    amp: bool = False  # bf16 autocast for an FP model's forward (never for the quantized one)
    batch_size: int = 500
    keep_fp: list[str] | None = None  # --quant: layers (fnmatch patterns) left FP


def evaluate(req: EvalRequest) -> dict:
    if req.data:
        parse_spec(req.data)  # fail on a bad SPEC before loading anything
    target = Path(req.target)
    if is_bundle(target):
        from ..runtime.validate import evaluate_bundle

        if req.amp or req.keep_fp:
            raise UserError(f"{'--amp' if req.amp else '--keep-fp'} applies to a MODEL; a bundle runs as exported")
        return evaluate_bundle(target, req.data, backend=req.backend or DEFAULT, limit=req.limit or None,
                               workers=req.workers, device=req.device)
    from ..p4q.run import is_run_dir

    is_run = target.is_dir() and is_run_dir(target)
    if req.amp and (req.quant or is_run):
        raise UserError("--amp applies to an FP model only; the quantized reference stays FP32")
    if is_run and req.keep_fp:
        raise UserError("--keep-fp: a RUN keeps the layers its recipe names (keep_fp); retrain to change them")
    ptq_flags = {"--quant": req.quant, "--bits": req.bits, "--quantize-text": req.quantize_text,
                 "--act-observer": req.act_observer, "--weight-observer": req.weight_observer}
    given = [flag for flag, value in ptq_flags.items() if value]
    if is_run and given:
        raise UserError(f"{', '.join(given)} applies to a MODEL; a RUN is scored with the quantization it was trained with "
                        "(its recipe's profile and bits)")
    if not is_run and req.backend is not None and not getattr(find_backend(req.backend), "reference", False):
        raise UserError(f"--backend {req.backend} needs an exported bundle; export first (p4q-export export)")
    device = resolve_device(req.device)
    started = time.perf_counter()
    out, seconds = _evaluate_run(target, req, device) if is_run else _evaluate_model(req, device)
    out.update({"device": describe_device(device), "amp": bool(req.amp), "seconds": round(time.perf_counter() - started, 2),
                "images_per_s": round(out["n"] / seconds, 1) if seconds > 0 else None,
                "peak_gpu_mem_mb": peak_gpu_memory_mb(device)})
    return out


def _evaluate_model(req: EvalRequest, device: torch.device) -> tuple[dict, float]:
    """(result, seconds spent encoding the test images)"""
    if not req.data:
        raise UserError("eval of a model needs --data SPEC")
    loaded = load_model(req.target, device=str(device))
    test = eval_subset(with_prompts(load_dataset(req.data, split="test"), req.prompts), req.limit)
    model = loaded.model
    mode = "fp_zeroshot"
    info: dict = {}
    if req.quant:
        model, info, _ = ptq_of(req, loaded, req.keep_fp)
        mode = "ptq_zeroshot"
    elif req.bits or req.act_observer or req.weight_observer or req.keep_fp:
        raise UserError("--bits, --keep-fp and the observers need --quant PROFILE")
    classifier = zero_shot_classifier(model, loaded.tokenizer, test.classnames, dataset_templates(test), amp=req.amp)
    t0 = time.perf_counter()
    batches = image_batches(test, loaded.preprocess, req.batch_size, device, workers=req.workers)
    feats = encode_images(model, batches, desc=f"eval {test.name}", amp=req.amp)
    acc = topk_accuracy(feats @ classifier.T, torch.from_numpy(test.labels))
    seconds = time.perf_counter() - t0
    out = {**acc.as_dict(), "backend": "torch", "mode": mode, "target": req.target, "data": req.data, "split": test.split_name}
    if info:
        out["quantization"] = {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, dict, list))}
    return out, seconds


def _evaluate_run(run_dir: Path, req: EvalRequest, device: torch.device) -> tuple[dict, float]:
    from ..p4q.run import load_run

    run = load_run(run_dir, device=device)
    data = req.data or run.recipe.data
    test = eval_subset(load_dataset(data, split="test"), req.limit)
    t0 = time.perf_counter()
    logits = run.logits(image_batches(test, run.loaded.preprocess, req.batch_size, device, workers=req.workers))
    acc = topk_accuracy(logits, torch.from_numpy(test.labels))
    seconds = time.perf_counter() - t0
    return {**acc.as_dict(), "backend": "torch", "mode": "trained", "target": str(run_dir), "data": data,
            "split": test.split_name}, seconds
