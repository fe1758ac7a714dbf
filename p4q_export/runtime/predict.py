"""Top-k labels for image files with a bundle (every file is read before anything runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..deploy.bundle import load_bundle
from ..errors import UserError
from .backends import DEFAULT
from .base import open_runner
from .inputs import file_inputs


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_files(bundle_dir: Path | str, files: list[Path | str], top_k: int = 5, backend: str = DEFAULT,
                  device: str = "auto", **runner_opts) -> dict:
    """`device`: where the torch backend runs (the other backends choose their own)."""
    if not files:
        raise UserError("predict needs at least one IMAGE")
    if top_k < 1:
        raise UserError("--top-k must be at least 1")
    bundle = load_bundle(bundle_dir)
    images = file_inputs(bundle, files)
    runner = open_runner(bundle, backend, device=device, **runner_opts)
    probs = softmax(runner(images).astype(np.float64))
    names = bundle.classnames
    k = min(top_k, len(names))
    predictions = []
    for f, p in zip(files, probs):
        top = np.argsort(-p)[:k]
        predictions.append({"file": str(f), "labels": [names[i] for i in top], "scores": [round(float(p[i]), 6) for i in top]})
    return {"predictions": predictions, "backend": runner.backend, "top_k": k}
