"""FP zero-shot classification with template ensembling (open_clip's zero-shot classifier)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..progress import progress_iter


def zero_shot_classifier(model, tokenizer, classnames, templates) -> torch.Tensor:
    """Normalized class embeddings [C, D]: mean of normalized template embeddings, renormalized."""
    from open_clip import build_zero_shot_classifier

    with torch.no_grad():
        w = build_zero_shot_classifier(
            model,
            tokenizer=tokenizer,
            classnames=classnames,
            templates=[t.format for t in templates],
            num_classes_per_batch=10,
            device="cpu",
            use_tqdm=False,
        )
    return w.T.contiguous()


@dataclass
class Accuracy:
    top1: float
    top5: float
    n: int

    def as_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "n": self.n}


def encode_images(model, images: torch.Tensor, batch_size: int = 500, desc: str = "encoding") -> torch.Tensor:
    """Normalized image features [N, D] in batches, with a progress bar on stderr."""
    feats = []
    with torch.no_grad():
        for start in progress_iter(range(0, len(images), batch_size), desc=desc):
            feats.append(F.normalize(model.encode_image(images[start : start + batch_size]), dim=-1))
    return torch.cat(feats)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> Accuracy:
    labels = torch.as_tensor(labels)
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    top1 = (top[:, 0] == labels).float().mean().item()
    top5 = (top == labels[:, None]).any(dim=1).float().mean().item()
    return Accuracy(top1=round(top1, 6), top5=round(top5, 6), n=len(labels))
