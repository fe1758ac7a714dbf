"""Turn datasets and image files into a bundle's input tensor (resize + center crop always;
mean/std normalization here unless the bundle folded it into the graph)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.datasets import ImageDataset, open_image
from ..data.preprocess import pil_to_uint8_nchw, to_uint8_nchw


def _finish(bundle, images_u8: torch.Tensor) -> np.ndarray:
    prep = bundle.tensor_preprocess()
    x = prep.resize_crop(images_u8)
    if bundle.uint8_input:
        return x.contiguous().numpy().astype(np.uint8)
    return prep.normalize(x).contiguous().numpy().astype(np.float32)


def dataset_inputs(bundle, ds: ImageDataset, start: int = 0, stop: int | None = None) -> np.ndarray:
    stop = len(ds) if stop is None else stop
    if ds.arrays is not None:
        return _finish(bundle, to_uint8_nchw(ds.arrays[start:stop]))
    return np.concatenate([_finish(bundle, pil_to_uint8_nchw([ds.pil(i)])[0].unsqueeze(0)) for i in range(start, stop)])


def file_inputs(bundle, files: list[Path | str]) -> np.ndarray:
    """All files are opened (UserError for a non-image) before any inference runs."""
    images = [open_image(f) for f in files]
    return np.concatenate([_finish(bundle, t.unsqueeze(0)) for t in pil_to_uint8_nchw(images)])
