"""The trainable parts of a run (learned prompts and the QAdapter) and the loss of one batch.

One training step (P4Q):
    text    = normalize(text tower(prompt learner()))            learnable ctx, quantized text path
    image   = adapter(cached quantized image feature of (image, view))
    student = logit_scale · image @ text.T
    teacher = logit_scale · cached FP image feature @ FP zero-shot classifier.T
    loss    = CE(student, y) + λ · distill(student, teacher)
CoOp is the same loop on the FP model with no adapter and no distillation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainRecipe
from .adapter import QAdapter, feature_dim
from .losses import p4q_loss
from .prompt_learner import PromptLearner, class_embeddings

if TYPE_CHECKING:
    from .prepare import Prepared


@dataclass
class Learner:
    prompt_learner: PromptLearner
    adapter: QAdapter | None

    def modules(self) -> list[nn.Module]:
        return [self.prompt_learner] + ([self.adapter] if self.adapter is not None else [])

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules() for p in m.parameters()]

    def train(self, mode: bool = True) -> None:
        for m in self.modules():
            m.train(mode)


def build_learner(recipe: TrainRecipe, model: nn.Module, tokenizer, classnames, profile, seed: int) -> Learner:
    """Prompts and adapter initialised from `seed` alone (independent of the global RNG and of
    the device: drawn on the CPU, then moved to the model's device)."""
    from ..devices import module_device

    pl = PromptLearner(
        model, tokenizer, classnames, n_ctx=recipe.n_ctx, ctx_init=recipe.ctx_init,
        class_token_position=recipe.class_token_position, csc=recipe.csc,
        generator=torch.Generator().manual_seed(seed),
    )
    adapter = None
    if recipe.method == "p4q" and recipe.adapter:
        with torch.random.fork_rng(devices=[]):  # built on the CPU, then moved
            torch.manual_seed(seed)
            adapter = QAdapter(feature_dim(model), recipe.adapter_reduction, recipe.adapter_ratio, profile=profile, bits=recipe.adapter_bits)
        adapter.set_quantization(False)  # trains in FP; calibrated and switched on after training
        adapter.to(module_device(model))
    return Learner(pl, adapter)


def batch_loss(prep: Prepared, learner: Learner, student_raw, teacher_feat, labels, global_batch: int):
    """Loss of one (shard of a) batch, normalized by the global batch size."""
    recipe = prep.recipe
    scale = prep.model.logit_scale.exp().detach()
    text = class_embeddings(prep.model, learner.prompt_learner)
    image = learner.adapter(student_raw) if learner.adapter is not None else F.normalize(student_raw, dim=-1)
    student_logits = scale * image @ text.T
    teacher_logits = None
    if prep.teacher_text is not None and teacher_feat is not None:
        teacher_logits = scale * teacher_feat @ prep.teacher_text.T
    return p4q_loss(
        student_logits, labels, teacher_logits, form=recipe.distill if recipe.method == "p4q" else "none",
        weight=recipe.distill_weight, temperature=recipe.temperature, batch_size=global_batch,
    )
