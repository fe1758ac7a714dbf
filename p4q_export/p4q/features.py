"""Features of the frozen towers, cached once per (image, view) — or computed every step.

The quantized image tower and the FP teacher never change during P4Q training, so their outputs
for a given image and augmentation are constants. With horizontal flips as the only augmentation
there are two views per image (0 = original, 1 = mirrored); the cache stores both, and an epoch
only runs the prompt path and the adapter. `OnTheFlyFeatures` computes the same numbers from the
images each step (recipe `cache_features: false`), which is what makes the speed-up measurable
and lets a test check that both give the same losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ImageSource:
    """Preprocessed images of a dataset, made batch by batch (ImageNet's test split as one float
    tensor would take 30 GB): streamed in order by `batches`, or picked by index by `batch`."""

    def __init__(self, dataset, preprocess, workers: int | None = None):
        self.dataset, self.preprocess, self.workers = dataset, preprocess, workers

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices) -> torch.Tensor:
        from ..data import preprocess_dataset

        idx = torch.as_tensor(indices, dtype=torch.long).cpu().numpy()
        return preprocess_dataset(self.dataset.subset(idx), self.preprocess)

    def batches(self, batch_size: int, device: torch.device, indices=None):
        from ..data import image_batches

        return image_batches(self.dataset, self.preprocess, batch_size, device, indices=indices, workers=self.workers)


def teacher_context(model: nn.Module):
    """The FP teacher: the same module with fake quantization switched off."""
    from ..quant import quantization_disabled

    return quantization_disabled(model)


def apply_views(images: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Mirror the images whose view is 1 (horizontal flip); view 0 is the image as is."""
    flipped = views.view(-1, 1, 1, 1).bool()
    return torch.where(flipped, images.flip(-1), images)


@torch.no_grad()
def tower_features(model: nn.Module, images: torch.Tensor, teacher: bool, amp: bool = False,
                   quantized: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(raw student image features, normalized teacher features or None) for one batch. `amp`
    runs the FP forwards (the teacher; the student too when it is not quantized) in bf16."""
    from ..devices import amp_context, module_device

    device = module_device(model)
    images = images.to(device)
    with amp_context(device, amp and not quantized):
        student = model.encode_image(images).float()
    if not teacher:
        return student, None
    with teacher_context(model), amp_context(device, amp):
        t = model.encode_image(images).float()
    return student, F.normalize(t, dim=-1)


class CachedFeatures:
    """Both views of every training image through both frozen towers, computed once, kept on the
    model's device."""

    def __init__(self, model: nn.Module, images: ImageSource, n_views: int, teacher: bool, batch_size: int = 256,
                 amp: bool = False, quantized: bool = True):
        from ..devices import module_device
        from ..progress import progress_iter

        device = module_device(model)
        students = [[] for _ in range(n_views)]
        teachers = [[] for _ in range(n_views)]
        n_batches = -(-len(images) // batch_size)
        for batch in progress_iter(images.batches(batch_size, device), desc="caching features", total=n_batches):
            for view in range(n_views):
                views = torch.full((len(batch),), view, dtype=torch.long, device=device)
                s, t = tower_features(model, apply_views(batch, views), teacher, amp, quantized)
                students[view].append(s)
                teachers[view].append(t)
        self.student = torch.stack([torch.cat(c) for c in students])  # [V, N, D] raw
        self.teacher = torch.stack([torch.cat(c) for c in teachers]) if teacher else None  # [V, N, D] normalized

    def lookup(self, indices: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.student[views, indices]
        t = self.teacher[views, indices] if self.teacher is not None else None
        return s, t


class OnTheFlyFeatures:
    """The uncached path: run both frozen towers on the (flipped) images of every batch."""

    def __init__(self, model: nn.Module, images: ImageSource, teacher: bool, amp: bool = False, quantized: bool = True):
        self.model, self.images, self.teacher, self.amp, self.quantized = model, images, teacher, amp, quantized

    def lookup(self, indices: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        images = self.images.batch(indices).to(views.device)
        return tower_features(self.model, apply_views(images, views), self.teacher, self.amp, self.quantized)


@dataclass
class EvalFeatures:
    """Test-split features, computed once and shared by every seed: raw quantized-tower features
    (the adapter needs them unnormalized) and normalized FP features."""

    student: torch.Tensor
    fp: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def eval_features(model: nn.Module, images: ImageSource, labels, quantized: bool, dist=None, batch_size: int = 500,
                  amp: bool = False) -> EvalFeatures | None:
    """Every rank encodes its contiguous share of the split; rank 0 gets them all, in order
    (the other ranks get None)."""
    from ..devices import amp_context, module_device
    from ..progress import progress_iter

    device = module_device(model)
    n = len(images)
    share = slice(0, n) if dist is None else dist.share(n)
    indices = range(share.start, share.stop)
    s_chunks, f_chunks = [], []
    n_batches = -(-len(indices) // batch_size)
    for batch in progress_iter(images.batches(batch_size, device, indices=indices), desc="encoding test split", total=n_batches):
        with amp_context(device, amp and not quantized):
            s = model.encode_image(batch).float()
        s_chunks.append(s)
        if quantized:
            with teacher_context(model), amp_context(device, amp):
                f_chunks.append(F.normalize(model.encode_image(batch).float(), dim=-1))
        else:
            f_chunks.append(F.normalize(s, dim=-1))
    if not s_chunks:  # more ranks than images to share: this rank's part is empty
        from .adapter import feature_dim

        s_chunks = f_chunks = [torch.empty(0, feature_dim(model), device=device)]
    student, fp = (torch.cat(c) for c in (s_chunks, f_chunks))
    if dist is not None and dist.enabled:
        student, fp = dist.gather_rows(student, n), dist.gather_rows(fp, n)
        if not dist.is_main:
            return None
    return EvalFeatures(student, fp, torch.as_tensor(labels, device=device))
