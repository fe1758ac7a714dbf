"""Explicit attention: open_clip's nn.MultiheadAttention rewritten with a `qkv` and an `out_proj`
nn.Linear, so that both projections can become QuantLinear layers. The Parameters are shared (not
copied) and the arithmetic is MultiheadAttention's own (in-projection, scaled dot-product
attention, out-projection), so outputs are unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ExplicitAttention(nn.Module):
    """Self-attention with the call signature open_clip uses:
    `attn(q_x, k_x, v_x, need_weights=False, attn_mask=mask) -> (out, weights_or_None)`."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, batch_first: bool = True, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.batch_first = batch_first
        self.dropout = dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> ExplicitAttention:
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("only plain self-attention MultiheadAttention (no kdim/vdim, bias_k, zero attn) can be made explicit")
        attn = cls(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None, batch_first=mha.batch_first, dropout=mha.dropout)
        attn.qkv.weight = mha.in_proj_weight
        attn.qkv.bias = mha.in_proj_bias
        attn.out_proj.weight = mha.out_proj.weight
        attn.out_proj.bias = mha.out_proj.bias
        attn.train(mha.training)
        return attn

    def _additive_mask(self, attn_mask, key_padding_mask, n: int, l: int, s: int, dtype):
        """MultiheadAttention's masks (bool: True = masked; float: added) as one additive float mask
        broadcastable to [N, H, L, S]."""
        mask = None
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros_like(attn_mask, dtype=dtype).masked_fill_(attn_mask, float("-inf"))
            mask = attn_mask.to(dtype)
            if mask.ndim == 3:  # [N*H, L, S]
                mask = mask.reshape(n, self.num_heads, l, s)
        if key_padding_mask is not None:
            kpm = key_padding_mask
            if kpm.dtype == torch.bool:
                kpm = torch.zeros_like(kpm, dtype=dtype).masked_fill_(kpm, float("-inf"))
            kpm = kpm.to(dtype).reshape(n, 1, 1, s)
            mask = kpm if mask is None else mask + kpm
        return mask

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights: bool = False, attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("ExplicitAttention supports self-attention only (key and value must be the query)")
        x = query if self.batch_first else query.transpose(0, 1)  # [N, L, E]
        n, l, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, l, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        mask = self._additive_mask(attn_mask, key_padding_mask, n, l, l, q.dtype)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, dropout_p, self.training) @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal and mask is None)
        out = self.out_proj(out.transpose(1, 2).reshape(n, l, self.embed_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def make_attention_explicit(model: nn.Module) -> nn.Module:
    """In place: every open_clip ResidualAttentionBlock's nn.MultiheadAttention → ExplicitAttention.
    Other MultiheadAttention modules (e.g. attentional poolers, cross-attention) are left alone."""
    from open_clip.transformer import ResidualAttentionBlock

    for block in model.modules():
        if isinstance(block, ResidualAttentionBlock) and isinstance(block.attn, nn.MultiheadAttention):
            if hasattr(block, "ln_1_kv"):
                continue  # cross-attention block: keys/values differ from the query
            block.attn = ExplicitAttention.from_mha(block.attn)
    return model
