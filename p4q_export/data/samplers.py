"""Deterministic, balanced few-shot sampling and reproducible calibration lists."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .datasets import ImageDataset


def few_shot_indices(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """`shots` images per class, chosen by a seeded permutation; sorted, so order never depends on
    dict or hash ordering. Always sample from the train split: the test split stays untouched."""
    if shots <= 0:
        raise UserError(f"--shots must be positive, got {shots}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < shots:
            raise UserError(f"class {c} has only {len(idx)} images, fewer than --shots {shots}")
        chosen.append(idx[rng.permutation(len(idx))[:shots]])
    return np.sort(np.concatenate(chosen))


def calibration_indices(n_items: int, n: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of `n` training images (the official P4Q setup uses 1,280)."""
    if n <= 0:
        raise UserError(f"calibration size must be positive, got {n}")
    n = min(n, n_items)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_items, size=n, replace=False))


def eval_subset_indices(n: int, limit: int) -> np.ndarray:
    """A fixed (seed 0) sample of `limit` evaluation images, so every run and every `eval --limit`
    scores the same images; all of them when limit is 0."""
    if limit <= 0 or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def eval_subset(ds: ImageDataset, limit: int | None) -> ImageDataset:
    """`ds` cut to the fixed `limit`-image sample of eval_subset_indices (None or 0: all of it)."""
    if limit is not None and limit < 0:
        raise UserError("--limit must not be negative")
    return ds.subset(eval_subset_indices(len(ds), limit)) if limit and limit < len(ds) else ds


def calibration_list_hash(ds: ImageDataset, indices: np.ndarray) -> str:
    h = hashlib.sha256()
    for i in indices:
        h.update(ds.ids[i].encode())
        h.update(ds.content_hash(int(i)).encode())
    return h.hexdigest()


def write_calibration_list(ds: ImageDataset, indices: np.ndarray, out_dir: Path | str, seed: int) -> Path:
    """`calibration/<dataset>-n<N>-seed<S>.txt`: one id per line, a header with the content hash,
    so a run can prove it calibrated on exactly these images."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = ds.name.replace(":", "_").replace("/", "_")
    path = out_dir / f"{safe}-n{len(indices)}-seed{seed}.txt"
    digest = calibration_list_hash(ds, indices)
    lines = [f"# dataset={ds.name} split={ds.split} n={len(indices)} seed={seed} sha256={digest}"]
    lines += [ds.ids[i] for i in indices]
    tmp = path.with_suffix(".txt.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
