"""open_clip's VisionTransformer: nn.MultiheadAttention keeps QKV as `in_proj_weight` and calls the
fused functional attention, so each block's attention becomes explicit qkv / out_proj Linears."""

from __future__ import annotations

from torch import nn

from ..attention import make_attention_explicit
from . import TowerFamily


def _matches(visual: nn.Module) -> bool:
    from open_clip.transformer import VisionTransformer

    return isinstance(visual, VisionTransformer)


def _prepare(visual: nn.Module) -> int:
    before = sum(isinstance(m, nn.MultiheadAttention) for m in visual.modules())
    make_attention_explicit(visual)
    return before - sum(isinstance(m, nn.MultiheadAttention) for m in visual.modules())


FAMILY = TowerFamily("open_clip-vit", _matches, _prepare)
