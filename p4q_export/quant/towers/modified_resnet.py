"""open_clip's ModifiedResNet (RN50, RN101, RN50x4 ...): convolutions + BatchNorm (folded by the
shared preparation) and an attention-pooling head, `AttentionPool2d`, that hands its projection
weights to F.multi_head_attention_forward. That head becomes `ExplicitAttentionPool2d`: the same
arithmetic with q/k/v/c projections called as layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import TowerFamily


class ExplicitAttentionPool2d(nn.Module):
    """AttentionPool2d with its own Parameters and submodule names (state dicts unchanged). Only
    the pooled (mean) token is returned, so only its query is computed: the other queries' outputs
    were discarded anyway, and each query's attention is independent of the others."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.positional_embedding = pool.positional_embedding
        self.k_proj, self.q_proj, self.v_proj, self.c_proj = pool.k_proj, pool.q_proj, pool.v_proj, pool.c_proj
        self.num_heads = pool.num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        x = x.flatten(2).transpose(1, 2)  # N, HW, C
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        heads = self.num_heads
        q = self.q_proj(x[:, :1]).reshape(n, 1, heads, c // heads).transpose(1, 2)
        k = self.k_proj(x).reshape(n, -1, heads, c // heads).transpose(1, 2)
        v = self.v_proj(x).reshape(n, -1, heads, c // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # N, heads, 1, C/heads
        return self.c_proj(out.transpose(1, 2).reshape(n, c))


def _matches(visual: nn.Module) -> bool:
    from open_clip.modified_resnet import ModifiedResNet

    return isinstance(visual, ModifiedResNet)


def _prepare(visual: nn.Module) -> int:
    from open_clip.modified_resnet import AttentionPool2d

    if isinstance(getattr(visual, "attnpool", None), AttentionPool2d):
        visual.attnpool = ExplicitAttentionPool2d(visual.attnpool)
        return 1
    return 0


FAMILY = TowerFamily("open_clip-resnet", _matches, _prepare)
