"""Pretrain the small test-bed CLIP from scratch on real offline data with caption templates.

Loss: the symmetric CLIP contrastive loss, except that every caption of an image's class counts as
a positive (the batch holds ~25 images per class, so one-to-one pairs would mostly be false
negatives). Image->text is cross-entropy over one sampled caption per class; text->image spreads
the target uniformly over the images of that class.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PretrainRecipe, recipe_dict, recipe_hash
from ..data import (
    dataset_templates,
    load_dataset,
    preprocess_dataset,
    templates_for,
    with_prompts,
)
from ..errors import UserError
from ..manifest import (
    file_sha256,
    files_intact,
    staged_dir,
    versions,
    write_json_atomic,
)
from ..progress import log, pct, progress_iter
from .registry import CONFIG_DIR, CONFIG_FILE, WEIGHTS_FILE, register_project_configs
from .zeroshot import encode_images, topk_accuracy, zero_shot_classifier


@dataclass
class _Pool:
    """Images of all pretraining datasets, labels made global across datasets."""

    images: torch.Tensor
    labels: torch.Tensor
    class_captions: list[list[str]]  # per global class: its caption variants
    datasets: list[dict]


def _build_pool(recipe: PretrainRecipe, prep) -> _Pool:
    return pool_of([(spec.strip(), load_dataset(spec.strip(), split="train")) for spec in recipe.data.split("+")], prep)


def pool_of(datasets: list, prep) -> _Pool:
    """[(spec, ImageDataset)] -> one pool; a dataset with meta["captions"] brings its own per class."""
    images, labels, captions, infos = [], [], [], []
    for spec, ds in datasets:
        offset = len(captions)
        images.append(preprocess_dataset(ds, prep))
        labels.append(torch.from_numpy(ds.labels) + offset)
        if "captions" in ds.meta:  # a captioned corpus (glyphs): its own variants per class
            captions += [list(caps) for caps in ds.meta["captions"]]
        else:
            tmpl = templates_for(ds.name)
            captions += [[t.format(c) for t in tmpl] for c in ds.classnames]
        infos.append({"spec": spec, "name": ds.name, "n_train": len(ds), "classes": ds.classnames})
    return _Pool(torch.cat(images), torch.cat(labels), captions, infos)


def class_aware_clip_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """img [B,D], txt [C,D] (both normalized, one caption per class), labels [B] in 0..C-1."""
    logits = scale * img @ txt.T  # [B, C]
    i2t = F.cross_entropy(logits, labels)
    present = torch.unique(labels)
    pos = (labels[None, :] == present[:, None]).float()  # [P, B]
    target = pos / pos.sum(dim=1, keepdim=True)
    t2i = -(target * F.log_softmax(logits.T[present], dim=1)).sum(dim=1).mean()
    return (i2t + t2i) / 2


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def train_steps(model, tokenizer, pool: _Pool, recipe: PretrainRecipe, total: int, device, rng: np.random.Generator) -> list[float]:
    """`total` optimizer steps of the class-aware contrastive loss on `pool`; the step losses."""
    tokens = [tokenizer(caps) for caps in pool.class_captions]  # per class: [T, ctx]
    per_batch_text = len(tokens) > recipe.batch_size or len({len(t) for t in tokens}) > 1
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    warmup = int(recipe.warmup_fraction * total)
    n = len(pool.labels)
    model.train()
    order = rng.permutation(n)
    cursor, losses = 0, []
    for step in progress_iter(range(total), desc="pretrain"):
        if cursor + recipe.batch_size > n:
            order, cursor = rng.permutation(n), 0
        idx = torch.from_numpy(order[cursor : cursor + recipe.batch_size])
        cursor += recipe.batch_size
        x, y = pool.images[idx], pool.labels[idx]
        if recipe.flip:
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if per_batch_text:
            # thousands of classes: encode one caption of each class in the batch (plain CLIP
            # negatives), not of every class; labels become positions among the batch's classes
            present, y = torch.unique(y, return_inverse=True)
            text = torch.stack([tokens[c][rng.integers(0, len(tokens[c]))] for c in present.tolist()])
        else:
            choice = rng.integers(0, len(tokens[0]), size=len(tokens))
            text = torch.stack([tokens[c][choice[c]] for c in range(len(tokens))])
        x, y, text = x.to(device), y.to(device), text.to(device)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, total, recipe.lr, warmup)
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(text), dim=-1)
        loss = class_aware_clip_loss(img, txt, y, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            log(f"  step {step + 1}/{total} loss {np.mean(losses[-50:]):.4f}")
    return losses


def pretrain(recipe: PretrainRecipe, out_dir: Path | str, device: torch.device | str = "cpu") -> dict:
    """Train on `device` and write an open_clip-loadable directory atomically (tmp dir, then
    rename). The image pool and every random draw stay on the CPU: the device changes only the
    arithmetic."""
    import open_clip

    from ..devices import cpu_info, describe_device

    out_dir = Path(out_dir)
    register_project_configs()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    if recipe.model not in open_clip.list_models():
        raise UserError(f"unknown model config '{recipe.model}'")
    model = open_clip.create_model(recipe.model, pretrained=None).to(device)
    tokenizer = open_clip.get_tokenizer(recipe.model)
    from ..data.preprocess import TensorPreprocess

    prep = TensorPreprocess.from_model(model)
    t0 = time.time()
    pool = _build_pool(recipe, prep)
    n = len(pool.labels)
    steps_per_epoch = n // recipe.batch_size
    total = max(1, round(recipe.epochs * steps_per_epoch))
    log(f"pretraining {recipe.model} on {recipe.data}: {n} images, {total} steps of {recipe.batch_size} on {describe_device(device)}")
    losses = train_steps(model, tokenizer, pool, recipe, total, device, rng)
    model.eval()
    seconds = time.time() - t0

    # Zero-shot accuracy on each dataset's test split, recorded in the manifest.
    accuracy = {}
    eval_specs = recipe.eval_data.split("+") if recipe.eval_data else [info["spec"] for info in pool.datasets]
    for spec in eval_specs:
        test = with_prompts(load_dataset(spec.strip(), split="test"), recipe.eval_prompts)
        feats = encode_images(model, preprocess_dataset(test, prep), desc=f"eval {test.name}")
        cls = zero_shot_classifier(model, tokenizer, test.classnames, dataset_templates(test))
        accuracy[test.name] = topk_accuracy(feats @ cls.T, torch.from_numpy(test.labels)).as_dict()
        log(f"  zero-shot {test.name} test top-1 {pct(accuracy[test.name]['top1'])}")

    with staged_dir(out_dir) as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / WEIGHTS_FILE)
        model_cfg = json.loads((CONFIG_DIR / f"{recipe.model}.json").read_text())
        config = {
            "model_name": recipe.model,
            "model_cfg": model_cfg,
            "preprocess_cfg": {"mean": list(prep.mean), "std": list(prep.std), "interpolation": prep.interpolation},
        }
        write_json_atomic(tmp / CONFIG_FILE, config)
        manifest = {
            "kind": "p4q-export/pretrained-model",
            "recipe": recipe_dict(recipe),
            "recipe_sha256": recipe_hash(recipe),
            "datasets": pool.datasets,
            "steps": total,
            "final_loss": float(np.mean(losses[-20:])),
            "seconds": round(seconds, 1),
            "device": describe_device(device),
            "machine": cpu_info(),  # float rounding of the training depends on the CPU's instruction set
            "accuracy": accuracy,
            "versions": versions(),
            "files": {f: file_sha256(tmp / f) for f in (WEIGHTS_FILE, CONFIG_FILE)},
        }
        write_json_atomic(tmp / "manifest.json", manifest)
    log(f"wrote {out_dir} ({WEIGHTS_FILE}, {CONFIG_FILE}, manifest.json)")
    return manifest


def cached_pretrain(recipe: PretrainRecipe, out_dir: Path | str, force: bool = False,
                    device: torch.device | str = "cpu") -> tuple[dict, bool]:
    """Reuse `out_dir` when it holds a model pretrained from the very same recipe."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not force and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            manifest = {}
        intact = files_intact(out_dir, manifest.get("files") or {})
        if manifest.get("recipe_sha256") == recipe_hash(recipe) and intact:  # a damaged cache is pretrained again
            return manifest, True
    return pretrain(recipe, out_dir, device), False
