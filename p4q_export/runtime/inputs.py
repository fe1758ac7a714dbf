"""Turn datasets and image files into a bundle's input tensor (resize + center crop always;
mean/std normalization here unless the bundle folded it into the graph)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.datasets import ImageDataset
from ..data.images import open_image
from ..data.preprocess import pil_to_uint8_nchw


def _bundle_input(bundle, prep, resized_u8: torch.Tensor) -> np.ndarray:
    """Resized uint8 images → the bundle's input: as they are where the graph normalizes itself."""
    if bundle.uint8_input:
        return resized_u8.contiguous().numpy().astype(np.uint8)
    return prep.normalize(resized_u8).contiguous().numpy().astype(np.float32)


def dataset_inputs(bundle, ds: ImageDataset, start: int = 0, stop: int | None = None) -> np.ndarray:
    stop = len(ds) if stop is None else stop
    return np.concatenate(list(dataset_input_batches(bundle, ds, max(1, stop - start), range(start, stop), workers=0)))


def dataset_input_batches(bundle, ds: ImageDataset, batch_size: int, indices=None, workers: int | None = None):
    """The bundle's input arrays for `ds` (or `indices` into it), `batch_size` images at a time;
    image files are decoded by `workers` processes, so no split is ever held whole."""
    from ..data.loader import uint8_batches

    prep = bundle.tensor_preprocess()
    for x in uint8_batches(ds, prep, batch_size, indices, workers):
        yield _bundle_input(bundle, prep, x)


def file_inputs(bundle, files: list[Path | str]) -> np.ndarray:
    """All files are opened (UserError for a non-image) before any inference runs."""
    images = [open_image(f) for f in files]
    prep = bundle.tensor_preprocess()
    return np.concatenate([_bundle_input(bundle, prep, prep.resize_crop(t.unsqueeze(0))) for t in pil_to_uint8_nchw(images)])
