"""Streaming a dataset to a model: batches of preprocessed images on the model's device, never the
whole split at once (ImageNet's 50,000 validation images as one float tensor would be 30 GB).

Image files are decoded, resized and center-cropped in DataLoader worker processes (`--workers`)
into uint8 tensors, pinned when they go to a GPU; the float conversion and mean/std normalization
run on the device. In-memory uint8 arrays (Fashion-MNIST, MNIST, digits) skip the workers: one
batched resize on a slice is faster than any per-image pipeline. Either way a batch holds the
images in dataset order, each with the numbers that resizing and normalizing it alone would give.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..errors import UserError
from .datasets import ImageDataset
from .preprocess import TensorPreprocess, pil_to_uint8_nchw, to_uint8_nchw


def default_workers() -> int:
    """Decoding processes for file-backed data: every core, up to 8."""
    return min(8, os.cpu_count() or 1)


class _DecodedFiles(Dataset):
    """Item i of `indices`: that image file as uint8 3×S×S, resized and cropped (in a worker)."""

    def __init__(self, ds: ImageDataset, prep: TensorPreprocess, indices: np.ndarray):
        self.ds, self.prep, self.indices = ds, prep, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor | str:
        try:
            pil = self.ds.pil(int(self.indices[i]))
        except UserError as exc:
            # a worker's exception reaches the main process wrapped in its traceback: hand the
            # message back as data instead, and the main process raises it as one line
            return str(exc)
        (image,) = pil_to_uint8_nchw([pil])
        return self.prep.resize_crop(image.unsqueeze(0))[0]


def _collate(items: list) -> torch.Tensor | str:
    bad = next((x for x in items if isinstance(x, str)), None)
    return bad if bad is not None else default_collate(items)


def _quiet_worker(_worker_id: int) -> None:
    """Ctrl-C reaches every process of the terminal's group: the main process stops and shuts the
    workers down, so a worker ignores SIGINT instead of printing its own traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def uint8_batches(ds: ImageDataset, prep: TensorPreprocess, batch_size: int, indices=None, workers: int | None = None,
                  pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """uint8 N×3×S×S batches of `ds` (or of `indices` into it, in that order), on the host."""
    idx = np.arange(len(ds)) if indices is None else np.asarray(indices, dtype=np.int64)
    if ds.arrays is not None:
        for start in range(0, len(idx), batch_size):
            yield prep.resize_crop(to_uint8_nchw(ds.arrays[idx[start : start + batch_size]]))
        return
    workers = default_workers() if workers is None else max(0, int(workers))
    workers = min(workers, max(1, -(-len(idx) // batch_size)))  # no idle processes for a few batches
    loader = DataLoader(_DecodedFiles(ds, prep, idx), batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=pin_memory, persistent_workers=False,
                        prefetch_factor=2 if workers else None, worker_init_fn=_quiet_worker if workers else None,
                        collate_fn=_collate)
    for batch in loader:
        if isinstance(batch, str):
            raise UserError(batch)
        yield batch


def image_batches(ds: ImageDataset, prep: TensorPreprocess, batch_size: int, device: torch.device | str = "cpu",
                  indices=None, workers: int | None = None) -> Iterator[torch.Tensor]:
    """Normalized float32 N×3×S×S batches on `device`."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    for batch in uint8_batches(ds, prep, batch_size, indices, workers, pin_memory=cuda):
        yield prep.normalize(batch.to(device, non_blocking=cuda))


def tensor_batches(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """An in-memory tensor as consecutive `batch_size` slices (views, no copies)."""
    return [x[i : i + batch_size] for i in range(0, len(x), batch_size)]


def preprocess_dataset(ds: ImageDataset, prep: TensorPreprocess, batch: int = 4096) -> torch.Tensor:
    """All images of `ds` as one normalized float tensor N×3×S×S: for small in-memory sets only
    (pretraining the test bed, tests); everything sized by the user streams `image_batches`."""
    out = list(image_batches(ds, prep, batch, workers=0))
    return torch.cat(out) if out else torch.empty(0, 3, prep.image_size, prep.image_size)
