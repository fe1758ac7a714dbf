"""`predict`: top-k labels of image files with a bundle (runtime/predict.py does the work)."""

from __future__ import annotations

from pathlib import Path


def predict_images(bundle: Path, images: list[Path], *, top_k: int, backend: str, device: str) -> dict:
    from ..runtime.predict import predict_files

    return predict_files(bundle, images, top_k=top_k, backend=backend, device=device)
