"""The text tower from token embeddings on, cut after the last EOS: what learned prompts run
through in training and export, and what text-tower calibration observes."""

from __future__ import annotations

import torch
from torch import nn


def text_tower(model: nn.Module) -> nn.Module:
    """The module holding token_embedding, positional_embedding, transformer, ln_final and
    text_projection: the CLIP itself, or a CustomTextCLIP's `.text` (MobileCLIP, EVA, SigLIP)."""
    text = getattr(model, "text", None)
    tower = text if text is not None and hasattr(text, "token_embedding") else model
    if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
        from ..errors import UserError

        raise UserError("learned prompts need an open_clip text tower without a CLS token or padding mask (CoCa-style towers are not supported)")
    return tower


def _pool_type(model: nn.Module, tower: nn.Module) -> str:
    return getattr(model, "text_pool_type", None) or getattr(tower, "pool_type", "argmax")


def encode_prompt_embeddings(model: nn.Module, embeddings: torch.Tensor, tokenized: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text from the token-embedding output on (unnormalized features).

    The modules are called as they are, so a quantized text tower (QuantLinear layers, a
    QuantLinear text projection) quantizes the prompts exactly as it quantizes real text.
    With the causal mask nothing after the last EOS can reach a pooled EOS feature, so the
    sequence is cut there (24 → ~10 tokens on the test bed, 77 → ~20 for ImageNet names): the same
    numbers for less work, which is most of a cached training step.
    """
    from open_clip.transformer import text_global_pool

    tower = text_tower(model)
    pool_type = _pool_type(model, tower)
    cast_dtype = tower.transformer.get_cast_dtype()
    attn_mask = tower.attn_mask
    if attn_mask is not None and pool_type == "argmax":
        length = int(tokenized.argmax(dim=-1).max()) + 1
        embeddings, tokenized, attn_mask = embeddings[:, :length], tokenized[:, :length], attn_mask[:length, :length]
    else:
        length = embeddings.shape[1]
    x = embeddings.to(cast_dtype) + tower.positional_embedding[:length].to(cast_dtype)
    x = tower.transformer(x, attn_mask=attn_mask)
    x = tower.ln_final(x)
    eos_id = getattr(model, "text_eos_id", getattr(tower, "eos_id", None))
    x = text_global_pool(x, tokenized, pool_type, eos_token_id=eos_id)
    if isinstance(x, tuple):  # some open_clip versions return (pooled, tokens)
        x = x[0]
    projection = tower.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, nn.Module) else x @ projection
    return x


def encode_tokens(model: nn.Module, tokenized: torch.Tensor) -> torch.Tensor:
    """open_clip's encode_text (unnormalized) for token ids, cut after the batch's last EOS."""
    return encode_prompt_embeddings(model, text_tower(model).token_embedding(tokenized), tokenized)
