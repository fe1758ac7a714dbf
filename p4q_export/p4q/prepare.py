"""Everything a run's seeds share: the model loaded on its device and quantized (p4q) with its
calibration, the FP teacher's zero-shot classifier, the evaluation split's features (each torchrun
rank encodes its share) and the FP / PTQ zero-shot baselines."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainRecipe
from ..data.samplers import eval_subset_indices
from ..devices import synchronize
from ..progress import log, pct
from .distributed import DistContext
from .features import EvalFeatures, ImageSource, eval_features
from .model_ref import model_reference
from .recipe import check_recipe, recipe_classnames, recipe_profile, seed_list


@dataclass
class Prepared:
    """Everything that does not depend on the few-shot seed: the (quantized) model, the FP
    teacher's text classifier, the test-split features and the zero-shot baselines."""

    recipe: TrainRecipe
    loaded: object  # LoadedModel
    model: nn.Module  # quantized CLIP for p4q, the FP CLIP for coop
    quantized: bool
    profile: object | None
    ptq_info: dict
    classnames: list[str]
    train_ds: object  # ImageDataset (full train split; few-shot subsets are drawn per seed)
    teacher_text: torch.Tensor | None  # [C, D] FP zero-shot classifier (p4q only)
    eval: EvalFeatures | None  # rank 0 only
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    workers: int | None = None  # image-decoding processes (None: one per core, up to 8)
    model_ref: dict = field(default_factory=dict)  # model_reference(loaded): hashing the weights once per run
    timings: dict = field(default_factory=dict)  # seconds of each setup stage (load, calibration, zero-shot eval)
    zero_shot: dict = field(default_factory=dict)  # fp_zeroshot / ptq_zeroshot accuracies
    zero_shot_top5: dict = field(default_factory=dict)
    eval_images: str = "test"  # what the scored images are called: an image folder's val/ is "val"


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """models.zeroshot.topk_accuracy as the (top1, top5) pair the training loop unpacks."""
    from ..models.zeroshot import topk_accuracy

    acc = topk_accuracy(logits, labels)
    return acc.top1, acc.top5


def eval_dataset(recipe: TrainRecipe):
    """The images a run is scored on: the test split, or (eval_split: val) the train split less
    every image any of the recipe's seeds trains on, to choose settings without touching test."""
    from ..data import few_shot_indices, load_dataset

    if recipe.eval_split != "val":
        return load_dataset(recipe.data, recipe.eval_split)
    train = load_dataset(recipe.data, "train")
    shots = np.concatenate([few_shot_indices(train.labels, recipe.shots, s) for s in seed_list(recipe)])
    return train.subset(np.setdiff1d(np.arange(len(train)), shots))


def prepare(recipe: TrainRecipe, out_dir: Path, dist: DistContext, evaluate: bool = True,
            device: torch.device | str = "cpu", workers: int | None = None) -> Prepared:
    """Load the model and data on `device`, quantize (p4q), and score FP / PTQ zero-shot on the
    test split (each rank encodes its share of it)."""
    from ..data import dataset_templates, few_shot_indices, load_dataset, with_prompts
    from ..models import load_model
    from ..models.zeroshot import zero_shot_classifier

    check_recipe(recipe)
    profile = recipe_profile(recipe) if recipe.method == "p4q" else None  # bad bits / observers before any work
    device = torch.device(device)
    if recipe.threads > 0:
        torch.set_num_threads(recipe.threads)
    t0 = time.perf_counter()
    # `testbed` resolves to the cached pretrained test bed: rank 0 pretrains it if needed, then the others load it
    if not dist.is_main:
        dist.barrier()
    loaded = load_model(recipe.model, device=str(device))
    if dist.is_main:
        dist.barrier()
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    train_ds = with_prompts(load_dataset(recipe.data, "train"), recipe.prompts)
    for seed in seed_list(recipe):  # every seed's few-shot sample is drawable
        few_shot_indices(train_ds.labels, recipe.shots, seed)
    classnames = recipe_classnames(recipe, train_ds)
    templates = dataset_templates(train_ds)
    fp_text = zero_shot_classifier(loaded.model, loaded.tokenizer, classnames, templates, amp=recipe.amp)
    synchronize(device)
    timings = {"load_s": round(time.perf_counter() - t0, 3)}

    quantized = recipe.method == "p4q"
    model, info = loaded.model, {}
    if quantized:
        from ..quant.ptq import build_ptq_model

        # only rank 0 writes into the run; the others calibrate identically into a scratch dir
        calib_dir = out_dir / "calibration" if dist.is_main else Path(tempfile.mkdtemp(prefix="p4q-calib-"))
        t0 = time.perf_counter()
        model, info = build_ptq_model(
            loaded, profile, quantize_text=recipe.quantize_text, calib=train_ds,
            n_calib=recipe.calib_images, seed=recipe.calib_seed, calibration_dir=calib_dir, workers=workers,
            keep_fp=recipe.keep_fp,
        )
        synchronize(device)
        timings["calibration_s"] = round(time.perf_counter() - t0, 3)
        if not dist.is_main:
            shutil.rmtree(calib_dir, ignore_errors=True)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

    prepared = Prepared(
        recipe=recipe, loaded=loaded, model=model, quantized=quantized, profile=profile,
        ptq_info=dict(info or {}), classnames=classnames, train_ds=train_ds,
        teacher_text=fp_text if quantized else None, eval=None, device=device, workers=workers,
        model_ref=model_reference(loaded), timings=timings,
    )
    if evaluate:
        t0 = time.perf_counter()
        test_ds = eval_dataset(recipe)
        test_ds = test_ds.subset(eval_subset_indices(len(test_ds), recipe.eval_limit))
        prepared.eval_images = {"test": test_ds.split_name, "train": "train", "val": "held-out train"}[recipe.eval_split]
        prepared.eval = eval_features(model, ImageSource(test_ds, loaded.preprocess, workers), test_ds.labels, quantized,
                                      dist=dist, amp=recipe.amp)
    if prepared.eval is not None:
        scale = model.logit_scale.exp().item()
        top1, top5 = accuracy(scale * prepared.eval.fp @ fp_text.T, prepared.eval.labels)
        prepared.zero_shot["fp_zeroshot"], prepared.zero_shot_top5["fp_zeroshot"] = top1, top5
        if quantized:
            ptq_text = zero_shot_classifier(model, loaded.tokenizer, classnames, templates)
            top1, top5 = accuracy(scale * F.normalize(prepared.eval.student, dim=-1) @ ptq_text.T, prepared.eval.labels)
        else:
            top1 = top5 = None
        prepared.zero_shot["ptq_zeroshot"], prepared.zero_shot_top5["ptq_zeroshot"] = top1, top5
        synchronize(device)
        timings["zero_shot_eval_s"] = round(time.perf_counter() - t0, 3)
        log(f"zero-shot top-1 on {len(test_ds)} {prepared.eval_images} images: FP {pct(prepared.zero_shot['fp_zeroshot'])}"
            + (f", PTQ {pct(top1)}" if top1 is not None else ""))
    return prepared
