"""`inspect`: which quantized layers hurt, on a MODEL (PTQ with --quant) or a trained RUN.

The per-layer numbers are defined in quant/inspect.py. Layers are ranked and suggested on held-out
images: the data's training split less what calibration (and a run's training shots) used, one
sample to select on (`limit` images) and a disjoint one to estimate the suggestion's recovery on,
so that neither the choice nor its estimate ever sees the test split; `verify` then measures the
suggestion on the test split. Gains and recoveries carry paired bootstrap intervals
(quant/sensitivity.py). One calibrated model's quantizers are switched on and off; image features
and text classifiers are cached per set of FP layers of their tower, so a text layer's effect costs
no image forward and vice versa.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..progress import log, pct
from .evaluate import QuantTarget, ptq_of


@dataclass
class InspectRequest(QuantTarget):
    stats_images: int = 256  # the first N calibration images feed the SQNR / range statistics
    limit: int = 2000  # held-out images to select on; as many again estimate the suggestion's recovery
    select_by: str = "kl"  # kl (of the logits from the FP model's) or top1
    select_on: str = "heldout"  # heldout (train split less what calibration and training used) or test
    verify: bool = False  # measure the suggestion on the test split too
    verify_limit: int = 0  # test images for verify (the `eval --limit` sample; 0 = the whole split)
    accuracy: bool = True
    accuracy_top: int = 0  # only the N layers with the lowest SQNR get the accuracy effect (0 = all)
    alone: bool = False  # also top-1 with each layer quantized alone
    suggest: int = 0
    batch_size: int = 250
    out: Path | None = None  # the report JSON, with the plot beside it (.png)


class _Scorer:
    """Logits of the current quantization state, with image features cached per (mode, FP image
    layers) and classifiers per (mode, FP text layers): `mode` names the base state the `changed`
    layers differ from."""

    def __init__(self, model, text_names: set[str], image_feats, class_emb, images: torch.Tensor, labels, batch_size: int):
        self.model, self.text_names = model, text_names
        self.image_feats, self.class_emb = image_feats, class_emb
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self._img: dict = {}
        self._txt: dict = {}
        self.evaluations = 0

    def logits(self, mode: str, changed: frozenset) -> torch.Tensor:
        from ..data.loader import tensor_batches

        vis = (mode, frozenset(n for n in changed if n not in self.text_names))
        txt = (mode, frozenset(n for n in changed if n in self.text_names))
        with torch.no_grad():
            if vis not in self._img:
                self._img[vis] = torch.cat([self.image_feats(b) for b in tensor_batches(self.images, self.batch_size)])
            if txt not in self._txt:
                self._txt[txt] = self.class_emb()
        self.evaluations += 1
        scale = getattr(self.model, "logit_scale", None)  # CLIP's learned temperature: KL is read at its scale
        return (float(scale.detach().exp()) if scale is not None else 100.0) * (self._img[vis] @ self._txt[txt].T)


def _model_target(req: InspectRequest, device):
    from ..data import calibration_indices, image_batches, templates_for
    from ..models import load_model
    from ..models.zeroshot import zero_shot_classifier
    from ..quant.ptq import caption_tokens

    if ":" not in req.target and ("/" in req.target or req.target.startswith(".")) and not Path(req.target).exists():
        raise UserError(f"{req.target} not found (inspect takes a MODEL or a RUN directory)")
    if not req.quant:
        raise UserError("inspect of a MODEL needs --quant PROFILE (and --bits); a RUN brings its own quantization")
    if not req.data:
        raise UserError("inspect of a MODEL needs --data SPEC")
    loaded = load_model(req.target, device=str(device))
    model, info, calib = ptq_of(req, loaded)
    used = calibration_indices(len(calib), req.calib_images, req.calib_seed)
    idx = used[: req.stats_images]
    stats_images = image_batches(calib, loaded.preprocess, 128, device, indices=idx, workers=req.workers)
    tokens = caption_tokens(loaded, calib) if req.quantize_text else None
    templates = templates_for(calib.name)
    classnames = list(calib.classnames)

    def image_feats(batch):
        return torch.nn.functional.normalize(model.encode_image(batch).float(), dim=-1)

    def class_emb():
        return zero_shot_classifier(model, loaded.tokenizer, classnames, templates)

    return model, loaded, info, stats_images, len(idx), tokens, image_feats, class_emb, req.data, (calib, used)


def _run_target(req: InspectRequest, device):
    from ..data import calibration_indices, image_batches, load_dataset
    from ..p4q.run import load_run
    from ..quant.ptq import caption_tokens

    if req.quant or req.bits or req.quantize_text or req.act_observer or req.weight_observer:
        raise UserError("a RUN is inspected with the quantization it was trained with: drop --quant/--bits/--quantize-text/observers")
    run = load_run(req.target, device=device)
    if run.profile is None:
        raise UserError(f"run {req.target} is full precision: nothing quantized to inspect")
    r = run.recipe
    data = req.data or r.data
    calib = load_dataset(r.data, split="train")
    used = calibration_indices(len(calib), r.calib_images, r.calib_seed)
    idx = used[: req.stats_images]
    stats_images = image_batches(calib, run.loaded.preprocess, 128, device, indices=idx, workers=req.workers)
    tokens = caption_tokens(run.loaded, calib) if r.quantize_text else None
    info = {"profile": run.profile.name, "bits": run.profile.bits, "quantize_text": r.quantize_text, "keep_fp": list(r.keep_fp)}
    if data == r.data:  # the training shots of every seed are not held out either
        from ..data import few_shot_indices
        from ..p4q.recipe import seed_list

        used = np.concatenate([used, *(few_shot_indices(calib.labels, r.shots, s) for s in seed_list(r))])
        train = calib
    else:
        train, used = load_dataset(data, split="train"), np.zeros(0, dtype=np.int64)
    return run.model, run.loaded, info, stats_images, len(idx), tokens, run.image_features, run.class_embeddings, data, (train, used)


def inspect_layers(req: InspectRequest) -> dict:
    """The ranked per-layer report; with `req.out`, also written there with its plot."""
    from ..data import parse_spec
    from ..devices import describe_device, resolve_device
    from ..manifest import write_json_atomic
    from ..outdir import check_writable
    from ..p4q.run import is_run_dir
    from ..quant import inspect as qi

    if req.out is not None:
        if req.out.is_dir():
            raise UserError(f"--out {req.out} is a folder: give the report's file name, e.g. {req.out / 'inspect.json'}")
        check_writable(req.out.parent, "inspect report")  # before minutes of measuring, not after
    if req.data:
        parse_spec(req.data)
    if req.suggest < 0 or req.accuracy_top < 0 or req.stats_images < 1:
        raise UserError("--suggest and --accuracy-top must not be negative, --stats-images at least 1")
    if req.suggest and not req.accuracy:
        raise UserError("--suggest measures accuracy: drop --no-accuracy")
    if req.select_by not in SELECT_BY or req.select_on not in SELECT_ON:
        raise UserError(f"--select-by is one of {', '.join(SELECT_BY)} and --select-on one of {', '.join(SELECT_ON)}")
    if req.verify and not req.suggest:
        raise UserError("--verify measures the suggestion on the test split: add --suggest K")
    device = resolve_device(req.device)
    started = time.perf_counter()
    timings = {}
    is_run = Path(req.target).is_dir() and is_run_dir(req.target)
    model, loaded, info, stats_images, n_stats, tokens, image_feats, class_emb, data, heldout = (
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
        out.update(_accuracy_effects(req, model, loaded, device, data, heldout, names, rows, image_feats, class_emb))
        timings["accuracy_s"] = round(time.perf_counter() - t0, 2)
    out["ranking"] = [r["name"] for r in rank(rows, req.select_by)]
    out["layers"] = rows
    out["device"] = describe_device(device)
    out["timings"] = {**timings, "total_s": round(time.perf_counter() - started, 2)}
    if req.out is not None:
        out["plot"] = str(write_plot(out, req.out.with_suffix(".png")))
        write_json_atomic(req.out, json.loads(json.dumps(out, default=str)))
        log(f"wrote {req.out} and {out['plot']}")
    return out


SELECT_BY = ("kl", "top1")
SELECT_ON = ("heldout", "test")


def heldout_samples(n: int, used: np.ndarray, limit: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint seeded samples of `limit` images from a training split of `n` images, none of
    them among `used` (calibration, training shots): one to select layers on, one to estimate the
    selection's recovery on. limit 0, or more than half of what is left: half each."""
    pool = np.setdiff1d(np.arange(n), np.asarray(used, dtype=np.int64))
    perm = np.random.default_rng(seed).permutation(pool)
    k = limit if 0 < limit <= len(perm) // 2 else len(perm) // 2
    if k < 1:
        raise UserError(f"the training split has no held-out images left ({n} images, {len(used)} used)")
    return np.sort(perm[:k]), np.sort(perm[k: 2 * k])


def _images(ds, loaded, req, device):
    from ..data import image_batches

    images = torch.cat(list(image_batches(ds, loaded.preprocess, req.batch_size, device, workers=req.workers)))
    return images, torch.from_numpy(np.asarray(ds.labels))


def _measured_setting(score, mode: str, kept) -> torch.Tensor:
    from ..quant import inspect as qi

    with qi.layers_in_fp(score.model, kept):
        return score.logits(mode, frozenset(kept))


def _accuracy_effects(req, model, loaded, device, data, heldout, names, rows, image_feats, class_emb) -> dict:
    """Per-layer keep-FP effects with their intervals, the greedy suggestion, its expected recovery
    on a second held-out sample and, with verify, its recovery on the test split."""
    from ..data import load_dataset
    from ..data.samplers import eval_subset
    from ..quant import inspect as qi
    from ..quant import sensitivity as sv
    from ..quant.clip import text_layer_names

    train, used = heldout
    used = np.unique(np.asarray(used, dtype=np.int64))
    if req.select_on == "heldout":
        sel_idx, est_idx = heldout_samples(len(train), used, req.limit)
        select_ds, estimate_ds = train.subset(sel_idx), train.subset(est_idx)
        where = (f"{train.name} train split, held out: none of the {len(used)} images calibration and training used; "
                 f"{len(sel_idx)} to select on, {len(est_idx)} others to estimate the recovery on")
    else:
        select_ds = estimate_ds = eval_subset(load_dataset(data, split="test"), req.limit)
        where = f"{data} test split ({len(select_ds)} images): selected and reported on the same images"
    images, labels = _images(select_ds, loaded, req, device)
    text = text_layer_names(model)
    score = _Scorer(model, text, image_feats, class_emb, images, labels, req.batch_size)
    q_logits = score.logits("quantized", frozenset())
    with qi.quantization_disabled(model):
        fp_logits = score.logits("fp", frozenset())
    q_ok, fp_ok = sv.correct(q_logits, labels), sv.correct(fp_logits, labels)
    kl_q = sv.kl_from(fp_logits, q_logits)
    by_sqnr = sorted(names, key=lambda n: rows[names.index(n)]["sqnr_db"])
    measured = by_sqnr[: req.accuracy_top] if req.accuracy_top else names
    measured = [n for n in names if n in set(measured)]  # network order
    sample = "held-out" if req.select_on == "heldout" else "test"
    log(f"on {len(labels)} {sample} images: quantized {pct(float(q_ok.mean()))}, FP {pct(float(fp_ok.mean()))}; "
        f"keeping each of {len(measured)} layers FP in turn")

    def value(logits: torch.Tensor) -> float:  # what the selection maximizes
        return -sv.kl_from(fp_logits, logits) if req.select_by == "kl" else float(sv.correct(logits, labels).mean())

    first = {}
    for row in rows:
        n = row["name"]
        if n not in measured:
            row.update(top1_keep_fp=None, gain_keep_fp=None)
            continue
        logits = _measured_setting(score, "keep_fp", [n])
        ok = sv.correct(logits, labels)
        gain = sv.paired_gain(q_ok, ok)
        kl = sv.kl_from(fp_logits, logits)
        row.update(top1_keep_fp=round(float(ok.mean()), 6), gain_keep_fp=round(gain.value, 6), gain_interval=gain.as_list(),
                   gain_within_noise=gain.within_noise, kl_keep_fp=round(kl, 6), kl_reduction=round(kl_q - kl, 6))
        first[n] = value(logits)
    if req.alone:
        alone = qi.layer_effects(model, measured, lambda mode, changed: float(sv.correct(score.logits(mode, changed), labels).mean()), "alone")
        for row in rows:
            n = row["name"]
            row["top1_alone"] = alone.get(n)
            row["drop_alone"] = None if n not in alone else round(float(fp_ok.mean()) - alone[n], 6)
    out = {"n_eval_images": len(labels), "selection": {"on": req.select_on, "by": req.select_by, "data": where,
                                                       "n_select": len(labels), "n_estimate": len(estimate_ds)},
           "top1_quantized": float(q_ok.mean()), "top1_fp": float(fp_ok.mean()), "kl_quantized": round(kl_q, 6)}
    if req.suggest:
        steps = qi.greedy_keep_fp(model, measured, lambda mode, changed: value(score.logits(mode, changed)),
                                  req.suggest, value(q_logits), first=first)
        for st in steps:  # the measure the greedy used, and top-1 beside it
            logits = _measured_setting(score, "keep_fp", st["kept"])
            st["top1"] = float(sv.correct(logits, labels).mean())
            st["kl"] = round(sv.kl_from(fp_logits, logits), 6)
        kept = steps[-1]["kept"] if steps else []
        out["suggest"] = _suggestion(req, model, loaded, device, kept, steps, estimate_ds, score if estimate_ds is select_ds else None,
                                     image_feats, class_emb, text, data)
        top = next((r for r in rows if steps and r["name"] == steps[0]["layer"]), None)
        if top is not None and top.get("gain_within_noise"):
            out["suggest"]["warning"] = (f"the first suggestion's top-1 gain {100 * top['gain_keep_fp']:+.2f} pt is within the noise of "
                                         f"{len(labels)} images (interval {100 * top['gain_interval'][0]:+.2f}..{100 * top['gain_interval'][1]:+.2f} pt): "
                                         "raise --limit")
    out["accuracy_evaluations"] = score.evaluations
    return out


def _suggestion(req, model, loaded, device, kept, steps, estimate_ds, selection_score, image_feats, class_emb, text,
                data) -> dict:
    """The suggestion with its expected recovery (on the estimation sample; `selection_score` where
    that is the selection sample itself, whose settings are scored already) and, with verify, its
    recovery measured on the test split."""
    from ..data import load_dataset
    from ..data.samplers import eval_subset
    from ..quant import inspect as qi
    from ..quant import sensitivity as sv

    def recovery_on(ds, score=None) -> sv.Recovery:
        if score is None:
            score = _Scorer(model, text, image_feats, class_emb, *_images(ds, loaded, req, device), req.batch_size)
        labels = score.labels
        q = sv.correct(score.logits("quantized", frozenset()), labels)
        with qi.quantization_disabled(model):
            fp = sv.correct(score.logits("fp", frozenset()), labels)
        return sv.recovery(q, fp, sv.correct(_measured_setting(score, "keep_fp", kept), labels))

    out = {"k": req.suggest, "steps": steps, "keep_fp": kept, "recipe_line": "keep_fp: [" + ", ".join(kept) + "]",
           "eval_args": " ".join(f"--keep-fp {n}" for n in kept)}
    if not kept:
        out.update(recovered_fraction=None, expected=None)
        return out
    expected = recovery_on(estimate_ds, selection_score)
    out["expected"] = {**expected.as_dict(), "n": len(estimate_ds), "same_images_as_selection": selection_score is not None}
    out["recovered_fraction"] = out["expected"]["recovered_fraction"]
    if req.verify:
        test = eval_subset(load_dataset(data, split="test"), req.verify_limit)
        log(f"verifying the suggestion on the {len(test)} images of the test split")
        measured = recovery_on(test)
        out["verify"] = {**measured.as_dict(), "n": len(test), "split": "test",
                         "within_expected_interval": expected.contains(measured.fraction)}
    return out


def rank(rows: list[dict], by: str = "top1") -> list[dict]:
    """Worst first: by what keeping the layer alone FP wins (the KL reduction or the top-1 gain;
    measured layers first), then by SQNR (lowest first)."""
    key = "kl_reduction" if by == "kl" else "gain_keep_fp"
    return sorted(rows, key=lambda r: (r.get(key) is None, -(r.get(key) or 0.0), r["sqnr_db"]))


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
