"""open_clip's TimmModel: a timm trunk (FastViT-MCi for MobileCLIP2, ViT-MCi for MobileCLIP-B,
ConvNeXt, EVA, ...) and open_clip's pooling / projection head. timm's reparameterization runs in
the shared preparation. timm's `EvaAttention` with a fused qkv (EVA01; EVA02 has separate q/k/v
projections) adds its separate q/v biases with F.linear on `qkv.weight`, bypassing the layer: they
are merged into `qkv.bias` so the projection is called as a layer (the same arithmetic)."""

from __future__ import annotations

import torch
from torch import nn

from . import TowerFamily


def _matches(visual: nn.Module) -> bool:
    from open_clip.timm_model import TimmModel

    return isinstance(visual, TimmModel)


def _merge_qkv_bias(attn: nn.Module) -> bool:
    qkv, q_bias = getattr(attn, "qkv", None), getattr(attn, "q_bias", None)
    if not isinstance(qkv, nn.Linear) or q_bias is None or getattr(attn, "qkv_bias_separate", False):
        return False
    bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)).detach()
    if qkv.bias is not None:
        bias = bias + qkv.bias.detach()
    qkv.bias = nn.Parameter(bias, requires_grad=attn.q_bias.requires_grad)
    attn.q_bias = attn.k_bias = attn.v_bias = None
    return True


def _prepare(visual: nn.Module) -> int:
    return sum(_merge_qkv_bias(m) for m in visual.modules())


FAMILY = TowerFamily("timm", _matches, _prepare)
