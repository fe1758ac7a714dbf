"""`inspect`: which quantized layers hurt, on a MODEL (PTQ with --quant) or a trained RUN.

The per-layer numbers are defined in quant/inspect.py. Accuracy is top-1 on a fixed sample of the
data's test split (`limit`, the same sample `eval --limit` uses), from one calibrated model whose
quantizers are switched on and off; image features and text classifiers are cached per set of FP
layers of their tower, so a text layer's effect costs no image forward and vice versa.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError
from .evaluate import QuantTarget, ptq_of
from .progress import log, pct


@dataclass
class InspectRequest(QuantTarget):
    stats_images: int = 256  # the first N calibration images feed the SQNR / range statistics
    limit: int = 1000  # test images for the accuracy effects (0 = the whole split)
    accuracy: bool = True
    accuracy_top: int = 0  # only the N layers with the lowest SQNR get the accuracy effect (0 = all)
    alone: bool = False  # also top-1 with each layer quantized alone
    suggest: int = 0
    batch_size: int = 250


class _Scorer:
    """top-1 of the current quantization state, cached per (mode, FP image layers) and (mode, FP
    text layers): `mode` names the base state the `changed` layers differ from."""

    def __init__(self, model, text_names: set[str], image_feats, class_emb, images: torch.Tensor, labels, batch_size: int):
        self.model, self.text_names = model, text_names
        self.image_feats, self.class_emb = image_feats, class_emb
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self._img: dict = {}
        self._txt: dict = {}
        self.evaluations = 0

    def __call__(self, mode: str, changed: frozenset) -> float:
        from .data.loader import tensor_batches
        from .models.zeroshot import topk_accuracy

        vis = (mode, frozenset(n for n in changed if n not in self.text_names))
        txt = (mode, frozenset(n for n in changed if n in self.text_names))
        with torch.no_grad():
            if vis not in self._img:
                self._img[vis] = torch.cat([self.image_feats(b) for b in tensor_batches(self.images, self.batch_size)])
            if txt not in self._txt:
                self._txt[txt] = self.class_emb()
        self.evaluations += 1
        return topk_accuracy(self._img[vis] @ self._txt[txt].T, self.labels).top1


def _model_target(req: InspectRequest, device):
    from .data import calibration_indices, image_batches, templates_for
    from .models import load_model
    from .models.zeroshot import zero_shot_classifier
    from .quant.ptq import caption_tokens

    if ":" not in req.target and ("/" in req.target or req.target.startswith(".")) and not Path(req.target).exists():
        raise UserError(f"{req.target} not found (inspect takes a MODEL or a RUN directory)")
    if not req.quant:
        raise UserError("inspect of a MODEL needs --quant PROFILE (and --bits); a RUN brings its own quantization")
    if not req.data:
        raise UserError("inspect of a MODEL needs --data SPEC")
    loaded = load_model(req.target, device=str(device))
    model, info, calib = ptq_of(req, loaded)
    idx = calibration_indices(len(calib), req.calib_images, req.calib_seed)[: req.stats_images]
    stats_images = image_batches(calib, loaded.preprocess, 128, device, indices=idx, workers=req.workers)
    tokens = caption_tokens(loaded, calib) if req.quantize_text else None
    templates = templates_for(calib.name)
    classnames = list(calib.classnames)

    def image_feats(batch):
        return torch.nn.functional.normalize(model.encode_image(batch).float(), dim=-1)

    def class_emb():
        return zero_shot_classifier(model, loaded.tokenizer, classnames, templates)

    return model, loaded, info, stats_images, len(idx), tokens, image_feats, class_emb, req.data


def _run_target(req: InspectRequest, device):
    from .data import calibration_indices, image_batches, load_dataset
    from .p4q.run import load_run
    from .quant.ptq import caption_tokens

    if req.quant or req.bits or req.quantize_text or req.act_observer or req.weight_observer:
        raise UserError("a RUN is inspected with the quantization it was trained with: drop --quant/--bits/--quantize-text/observers")
    run = load_run(req.target, device=device)
    if run.profile is None:
        raise UserError(f"run {req.target} is full precision: nothing quantized to inspect")
    r = run.recipe
    data = req.data or r.data
    calib = load_dataset(r.data, split="train")
    idx = calibration_indices(len(calib), r.calib_images, r.calib_seed)[: req.stats_images]
    stats_images = image_batches(calib, run.loaded.preprocess, 128, device, indices=idx, workers=req.workers)
    tokens = caption_tokens(run.loaded, calib) if r.quantize_text else None
    info = {"profile": run.profile.name, "bits": run.profile.bits, "quantize_text": r.quantize_text, "keep_fp": list(r.keep_fp)}
    return run.model, run.loaded, info, stats_images, len(idx), tokens, run.image_features, run.class_embeddings, data


def inspect_layers(req: InspectRequest) -> dict:
    from .data import image_batches, load_dataset, parse_spec
    from .data.samplers import eval_subset
    from .devices import describe_device, resolve_device
    from .p4q.run import is_run_dir
    from .quant import inspect as qi
    from .quant.clip import text_layer_names

    if req.data:
        parse_spec(req.data)
    if req.suggest < 0 or req.accuracy_top < 0 or req.stats_images < 1:
        raise UserError("--suggest and --accuracy-top must not be negative, --stats-images at least 1")
    if req.suggest and not req.accuracy:
        raise UserError("--suggest measures accuracy: drop --no-accuracy")
    device = resolve_device(req.device)
    started = time.perf_counter()
    timings = {}
    is_run = Path(req.target).is_dir() and is_run_dir(req.target)
    model, loaded, info, stats_images, n_stats, tokens, image_feats, class_emb, data = (
        _run_target(req, device) if is_run else _model_target(req, device))
    timings["load_and_calibrate_s"] = round(time.perf_counter() - started, 2)
    model.eval()

    t0 = time.perf_counter()
    log(f"per-layer SQNR and input ranges on {n_stats} calibration images")
    stats = qi.collect_layer_stats(model, stats_images, tokens)
    timings["stats_s"] = round(time.perf_counter() - t0, 2)
    rows = [s.as_dict() for s in stats]
    names = [s.name for s in stats]
    out = {"target": req.target, "data": data, "mode": "run" if is_run else "ptq", "quantization": info,
           "n_stats_images": n_stats, "n_text_captions": 0 if tokens is None else len(tokens), "n_layers": len(rows)}

    if req.accuracy:
        t0 = time.perf_counter()
        test = eval_subset(load_dataset(data, split="test"), req.limit)
        images = torch.cat(list(image_batches(test, loaded.preprocess, req.batch_size, device, workers=req.workers)))
        labels = torch.from_numpy(test.labels)
        score = _Scorer(model, text_layer_names(model), image_feats, class_emb, images, labels, req.batch_size)
        quant_top1 = score("quantized", frozenset())
        with qi.quantization_disabled(model):
            fp_top1 = score("fp", frozenset())
        by_sqnr = sorted(names, key=lambda n: rows[names.index(n)]["sqnr_db"])
        measured = by_sqnr[: req.accuracy_top] if req.accuracy_top else names
        measured = [n for n in names if n in set(measured)]  # network order
        log(f"top-1 on {len(test)} test images: quantized {pct(quant_top1)}, FP {pct(fp_top1)}; "
            f"keeping each of {len(measured)} layers FP in turn")
        keep = qi.layer_effects(model, measured, score, "keep_fp")
        alone = qi.layer_effects(model, measured, score, "alone") if req.alone else {}
        for row in rows:
            n = row["name"]
            row["top1_keep_fp"] = keep.get(n)
            row["gain_keep_fp"] = None if n not in keep else round(keep[n] - quant_top1, 6)
            if req.alone:
                row["top1_alone"] = alone.get(n)
                row["drop_alone"] = None if n not in alone else round(fp_top1 - alone[n], 6)
        out.update({"n_eval_images": len(test), "top1_quantized": quant_top1, "top1_fp": fp_top1})
        if req.suggest:
            steps = qi.greedy_keep_fp(model, measured, score, req.suggest, quant_top1, first=keep)
            kept = steps[-1]["kept"] if steps else []
            out["suggest"] = {"k": req.suggest, "steps": steps, "keep_fp": kept,
                              "recovered_fraction": (round((steps[-1]["top1"] - quant_top1) / (fp_top1 - quant_top1), 4)
                                                     if steps and fp_top1 > quant_top1 else None),
                              "recipe_line": "keep_fp: [" + ", ".join(kept) + "]",
                              "eval_args": " ".join(f"--keep-fp {n}" for n in kept)}
        out["accuracy_evaluations"] = score.evaluations
        timings["accuracy_s"] = round(time.perf_counter() - t0, 2)
    out["ranking"] = [r["name"] for r in rank(rows)]
    out["layers"] = rows
    out["device"] = describe_device(device)
    out["timings"] = {**timings, "total_s": round(time.perf_counter() - started, 2)}
    return out


def rank(rows: list[dict]) -> list[dict]:
    """Worst first: by the top-1 gained when the layer alone is kept FP (measured layers first),
    then by SQNR (lowest first)."""
    return sorted(rows, key=lambda r: (r.get("gain_keep_fp") is None, -(r.get("gain_keep_fp") or 0.0), r["sqnr_db"]))


def write_plot(report: dict, path: Path) -> Path:
    """Per-layer bars in network order: SQNR (dB), and the top-1 gained by keeping the layer FP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["layers"]
    labels = [r["name"].replace("transformer.resblocks.", "b").replace("visual.", "v.") for r in rows]
    colors = ["tab:blue" if r["tower"] == "image" else "tab:orange" for r in rows]
    has_acc = any(r.get("gain_keep_fp") is not None for r in rows)
    fig, axes = plt.subplots(2 if has_acc else 1, 1, figsize=(max(8, 0.22 * len(rows)), 7 if has_acc else 4), squeeze=False)
    ax = axes[0][0]
    ax.bar(range(len(rows)), [r["sqnr_db"] for r in rows], color=colors)
    ax.set_ylabel("SQNR of the layer output (dB)")
    q = report.get("quantization", {})
    ax.set_title(f"{report['target']} {q.get('profile', '')} {q.get('bits', '')}: blue image tower, orange text tower")
    if has_acc:
        ax2 = axes[1][0]
        ax2.bar(range(len(rows)), [100 * (r.get("gain_keep_fp") or 0.0) for r in rows], color=colors)
        ax2.set_ylabel("top-1 gain keeping it FP (points)")
        ax2.axhline(0, color="black", linewidth=0.5)
    bottom = axes[-1][0]
    bottom.set_xticks(range(len(rows)))
    bottom.set_xticklabels(labels, rotation=90, fontsize=6)
    if has_acc:
        axes[0][0].set_xticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
