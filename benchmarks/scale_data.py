"""A synthetic ImageNet-format folder for the scale benchmark: real JPEGs under WordNet-id folders.

    ROOT/train/<wnid>/<wnid>_<j>.JPEG          K images per class
    ROOT/val/<wnid>/ILSVRC2012_val_<i>.JPEG    N images, class i mod C
    ROOT/params.json, ROOT/COMPLETE

Each class has its own colours, shape kind and stripe texture; each image jitters size, layout and
noise, so the files decode and resize like photos (tens of KB, not flat colour) and the classes are
learnable. The folder is built in a temporary sibling and renamed into place, so a folder with
COMPLETE is whole; the same parameters again reuse it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PARAMS_FILE = "params.json"
COMPLETE = "COMPLETE"
GENERATOR_VERSION = 1  # bump when the pictures change, so cached folders are rebuilt


@dataclass(frozen=True)
class DataParams:
    classes: int
    train_per_class: int
    val_images: int
    image_size: int = 256  # nominal; each image is 0.8-1.25x this on each side
    quality: int = 90
    seed: int = 0
    version: int = GENERATOR_VERSION

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def imagenet_wnids(n: int) -> list[str]:
    """The first `n` ImageNet-1k WordNet ids in sorted order (= ImageNet class index order): the
    ids the class-name resolver maps to open_clip's names."""
    from p4q_export.data.classnames import imagenet_wnid_names

    wnids = list(imagenet_wnid_names())
    if not 1 <= n <= len(wnids):
        raise ValueError(f"classes must be 1..{len(wnids)}, got {n}")
    return wnids[:n]


def _class_style(seed: int, label: int) -> dict:
    rng = np.random.default_rng([seed, label, 7])
    return {
        "colors": rng.integers(0, 256, size=(3, 3)),  # background from/to, shape colour
        "angle": rng.uniform(0, 2 * math.pi),
        "shape": int(rng.integers(0, 4)),  # ellipse, rectangle, triangle, star
        "freq": rng.uniform(2, 12),
    }


def render(seed: int, label: int, split: str, index: int, size: int) -> Image.Image:
    """One picture of class `label`: a per-class gradient + stripes + shapes, jittered per image."""
    style = _class_style(seed, label)
    rng = np.random.default_rng([seed, label, 0 if split == "train" else 1, index])
    w, h = (int(size * rng.uniform(0.8, 1.25)) for _ in range(2))

    def jitter(color, sigma=30.0):
        return np.clip(color + rng.normal(0, sigma, 3), 0, 255)

    c0, c1, fg = (jitter(c) for c in style["colors"])
    angle = style["angle"] + rng.normal(0, 0.3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(angle) + yy * math.sin(angle)) / max(w, h)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * style["freq"] * t + rng.uniform(0, 2 * math.pi))
    mix = (0.7 * t + 0.3 * stripes)[..., None]
    pixels = c0 * (1 - mix) + c1 * mix + rng.normal(0, 8, (h, w, 1))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        r = rng.uniform(0.08, 0.25) * min(w, h)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        color = tuple(int(v) for v in jitter(fg, 20))
        kind = style["shape"]
        if kind == 0:
            draw.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=color)
        elif kind == 1:
            draw.rectangle([cx - r, cy - r / 2, cx + r, cy + r / 2], fill=color)
        else:
            points = 3 if kind == 2 else 10
            rot = rng.uniform(0, 2 * math.pi)
            radii = [r if (kind == 2 or k % 2 == 0) else r / 2.5 for k in range(points)]
            draw.polygon([(cx + rad * math.cos(rot + 2 * math.pi * k / points),
                           cy + rad * math.sin(rot + 2 * math.pi * k / points)) for k, rad in enumerate(radii)],
                         fill=color)
    return img


def _plan(params: DataParams, wnids: list[str]) -> list[tuple[str, int, int, str]]:
    """(split, label, index, relative path) of every file, in a fixed order."""
    jobs = [("train", c, j, f"train/{w}/{w}_{j + 1}.JPEG")
            for c, w in enumerate(wnids) for j in range(params.train_per_class)]
    jobs += [("val", i % params.classes, i, f"val/{wnids[i % params.classes]}/ILSVRC2012_val_{i + 1:08d}.JPEG")
             for i in range(params.val_images)]
    return jobs


def _write_chunk(args: tuple[str, DataParams, list]) -> int:
    root, params, jobs = args
    written = 0
    for split, label, index, rel in jobs:
        img = render(params.seed, label, split, index, params.image_size)
        img.save(os.path.join(root, rel), format="JPEG", quality=params.quality)
        written += os.path.getsize(os.path.join(root, rel))
    return written


def read_params(root: Path) -> dict | None:
    """The parameters of a complete generated folder, or None."""
    try:
        if (root / COMPLETE).is_file():
            return json.loads((root / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        pass
    return None


def ensure_dataset(root: Path | str, params: DataParams, workers: int | None = None) -> dict:
    """Generate the folder unless it already holds these parameters. Returns what happened:
    {"root", "generated" (bool), "files", "bytes", "seconds"}."""
    import time

    root = Path(root)
    wanted = asdict(params)
    if read_params(root) == wanted:
        return {"root": str(root), "generated": False, **json.loads((root / COMPLETE).read_text())}
    if root.exists() and read_params(root) is None and any(root.iterdir()):
        # not ours (or half-built by hand): never delete someone's data
        raise FileExistsError(f"{root} exists and is not a generated bench-scale folder; pick another --root")
    t0 = time.perf_counter()
    wnids = imagenet_wnids(params.classes)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for split in ("train", "val"):
            for w in wnids:
                (tmp / split / w).mkdir(parents=True, exist_ok=True)
        jobs = _plan(params, wnids)
        workers = max(1, workers or os.cpu_count() or 1)
        n_chunks = min(len(jobs), workers * 8) or 1
        chunks = [(str(tmp), params, jobs[k::n_chunks]) for k in range(n_chunks)]
        if workers == 1:
            total = sum(map(_write_chunk, chunks))
        else:
            # spawn, not fork: a fork of a process with threads (torch's, ONNX Runtime's, a test
            # runner's) can inherit a held lock and hang in its first malloc
            with get_context("spawn").Pool(workers) as pool:
                total = sum(pool.imap_unordered(_write_chunk, chunks))
        summary = {"files": len(jobs), "bytes": total, "seconds": round(time.perf_counter() - t0, 2)}
        (tmp / PARAMS_FILE).write_text(json.dumps(wanted, indent=2) + "\n")
        (tmp / COMPLETE).write_text(json.dumps(summary) + "\n")
        if root.exists():  # an older generated folder (other parameters): swap, then delete it
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            root.rename(old / "d")
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"root": str(root), "generated": True, **summary}
