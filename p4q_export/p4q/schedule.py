"""Optimizers, learning-rate schedules and data order of P4Q / CoOp training.

Both learning rates and each epoch's order are closed-form functions of (seed, step), never state
carried between steps, so a run resumed from its last checkpoint walks the same path as an
uninterrupted one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..config import TrainRecipe

if TYPE_CHECKING:
    from .learner import Learner


def make_optimizers(recipe: TrainRecipe, learner: Learner) -> dict[str, torch.optim.Optimizer]:
    ctx = [learner.prompt_learner.ctx]
    if recipe.prompt_optimizer == "sgd":
        opt_prompt = torch.optim.SGD(ctx, lr=recipe.prompt_lr, weight_decay=recipe.weight_decay)
    else:
        opt_prompt = torch.optim.AdamW(ctx, lr=recipe.prompt_lr, weight_decay=recipe.weight_decay)
    opts = {"prompt": opt_prompt}
    if learner.adapter is not None:
        opts["adapter"] = torch.optim.AdamW(
            learner.adapter.parameters(), lr=recipe.adapter_lr, eps=recipe.adapter_eps,
            weight_decay=recipe.adapter_weight_decay,
        )
    return opts


def prompt_lr(recipe: TrainRecipe, step: int, total: int) -> float:
    """The official cosine-per-iteration schedule (final lr = lr·1e-3), optional linear warmup."""
    warmup = min(recipe.warmup_epochs * max(1, total // recipe.epochs), total - 1)
    lr, final = recipe.prompt_lr, recipe.prompt_lr * 1e-3
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    t, span = step - warmup, total - warmup
    return final + 0.5 * (lr - final) * (1 + math.cos(math.pi * t / span))


def adapter_lr(recipe: TrainRecipe, step: int, total: int) -> float:
    """CosineAnnealingLR(T_max = all iterations) in closed form, as the official adapter uses."""
    return 0.5 * recipe.adapter_lr * (1 + math.cos(math.pi * step / total))


def epoch_order(seed: int, epoch: int, n: int, n_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(permutation, view per image) of epoch `epoch`, a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g)
    views = torch.randint(0, n_views, (n,), generator=g)
    return perm, views
