"""FP zero-shot classification with template ensembling (open_clip's zero-shot classifier)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..progress import progress_iter


def zero_shot_classifier(model, tokenizer, classnames, templates, amp: bool = False) -> torch.Tensor:
    """Normalized class embeddings [C, D] on the model's device: mean of normalized template
    embeddings, renormalized. Ten classes at a time, so 1,000 classes × 80 templates stay small."""
    from open_clip import build_zero_shot_classifier

    from ..devices import amp_context, module_device

    device = module_device(model)
    per_step = 10
    chunks = [list(classnames[i : i + per_step]) for i in range(0, len(classnames), per_step)]
    parts = []
    with torch.no_grad(), amp_context(device, amp):
        for chunk in progress_iter(chunks, desc=f"encoding {len(templates)} prompts × {len(classnames)} classes"):
            parts.append(build_zero_shot_classifier(model, tokenizer=tokenizer, classnames=chunk,
                                                    templates=[t.format for t in templates],
                                                    num_classes_per_batch=per_step, device=device, use_tqdm=False))
    w = torch.cat(parts, dim=1)
    return w.T.float().contiguous()


@dataclass
class Accuracy:
    top1: float
    top5: float
    n: int

    def as_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "n": self.n}


def encode_images(model, images, batch_size: int = 500, desc: str = "encoding", amp: bool = False) -> torch.Tensor:
    """Normalized image features [N, D] on the model's device, with a progress bar on stderr.
    `images`: one tensor (batched here) or an iterable of batches (streamed, e.g. `image_batches`)."""
    from ..data.loader import tensor_batches
    from ..devices import amp_context, module_device

    device = module_device(model)
    if isinstance(images, torch.Tensor):
        images = tensor_batches(images, batch_size)
    feats = []
    with torch.no_grad(), amp_context(device, amp):
        for batch in progress_iter(images, desc=desc):
            feats.append(F.normalize(model.encode_image(batch.to(device)).float(), dim=-1))
    return torch.cat(feats)


def topk_accuracy(logits, labels) -> Accuracy:
    """Top-1/top-5 of `logits` [N, C] (torch or numpy) against `labels` [N], rounded to 6 decimals.
    The project's one accuracy: train, eval and validate/eval BUNDLE (numpy outputs) all count here."""
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels, device=logits.device)
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    n = len(labels)
    hits1 = int((top[:, 0] == labels).sum())
    hits5 = int((top == labels[:, None]).any(dim=1).sum())
    return Accuracy(top1=_share(hits1, n), top5=_share(hits5, n), n=n)


def _share(hits: int, n: int) -> float:
    """hits / n in float64 (a float32 mean moves the 6th decimal: 27/29 gives 0.931035); nan for no images."""
    return round(hits / n, 6) if n else float("nan")
