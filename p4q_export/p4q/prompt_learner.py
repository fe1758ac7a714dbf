"""CoOp-style learnable prompts and the open_clip text path that encodes them.

A prompt for class c is the tokenized sentence "X X ... X <classname>." whose X token embeddings
are replaced by learnable context vectors:

    [SOS] [ctx_1 .. ctx_n] [class tokens] [.] [EOS] [pad ...]      (class token at the end)

"middle" splits the context around the class tokens, "front" puts the class tokens first. The EOS
token never moves, so open_clip's argmax pooling over the token ids still finds it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models.text import encode_prompt_embeddings, text_tower

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
PLACEHOLDER = "X"


def token_count(tokenizer, text: str) -> int:
    """Number of BPE tokens of `text` between SOS and EOS (EOS has the largest id in CLIP's vocab)."""
    ids = tokenizer([text])[0]
    return int(ids.argmax().item()) - 1


class PromptLearner(nn.Module):
    """Learnable context vectors `ctx` ([n_ctx, D], or [C, n_ctx, D] class-specific).

    Only `ctx` is a parameter (and the only entry of the state dict): the frozen SOS / class / EOS
    embeddings are non-persistent buffers rebuilt from the model and the class names, so a
    checkpoint holds n_ctx × D floats rather than C × L × D.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        classnames: list[str],
        n_ctx: int = 16,
        ctx_init: str = "",
        class_token_position: str = "end",
        csc: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise UserError(f"class_token_position must be one of {', '.join(CLASS_TOKEN_POSITIONS)}, got '{class_token_position}'")
        classnames = [c.replace("_", " ") for c in classnames]
        ctx_init = ctx_init.strip().replace("_", " ")
        if ctx_init:
            n_ctx = token_count(tokenizer, ctx_init)
        if n_ctx <= 0:
            raise UserError(f"n_ctx must be positive, got {n_ctx}")
        tower = text_tower(model)
        context_length = int(tower.positional_embedding.shape[0])
        name_lens = [token_count(tokenizer, c) for c in classnames]
        longest = max(name_lens)
        if 1 + n_ctx + longest + 2 > context_length:  # SOS + ctx + name + "." + EOS
            raise UserError(
                f"n_ctx {n_ctx} + the longest class name ({longest} tokens) does not fit the text "
                f"context of {context_length} tokens; lower n_ctx"
            )
        prefix = ctx_init if ctx_init else " ".join([PLACEHOLDER] * n_ctx)
        tokenized = tokenizer([f"{prefix} {c}." for c in classnames])  # [C, L]
        device = tower.token_embedding.weight.device
        with torch.no_grad():
            embedding = tower.token_embedding(tokenized.to(device)).float()  # [C, L, D]
        dim = embedding.shape[-1]

        if ctx_init:
            init = embedding[0, 1 : 1 + n_ctx].clone()
            ctx = init.unsqueeze(0).repeat(len(classnames), 1, 1) if csc else init
        else:
            shape = (len(classnames), n_ctx, dim) if csc else (n_ctx, dim)
            ctx = torch.randn(shape, generator=generator) * 0.02
        self.ctx = nn.Parameter(ctx)
        self.register_buffer("token_prefix", embedding[:, :1].clone(), persistent=False)  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :].clone(), persistent=False)  # class . EOS pad
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.n_cls = len(classnames)
        self.n_ctx = n_ctx
        self.name_lens = name_lens
        self.class_token_position = class_token_position
        self.classnames = classnames
        self.to(device)  # the context was drawn on the CPU: the same values on every device

    def prompt_embeddings(self) -> torch.Tensor:
        """[C, L, D] token embeddings with the context in place."""
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        rows = []
        half = self.n_ctx // 2
        for i, n in enumerate(self.name_lens):
            name, rest = suffix[i : i + 1, :n], suffix[i : i + 1, n:]
            if self.class_token_position == "middle":
                parts = [prefix[i : i + 1], ctx[i : i + 1, :half], name, ctx[i : i + 1, half:], rest]
            else:  # front
                parts = [prefix[i : i + 1], name, ctx[i : i + 1], rest]
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prompt_embeddings(), self.tokenized_prompts


def class_embeddings(model: nn.Module, prompt_learner: PromptLearner) -> torch.Tensor:
    """[C, D] L2-normalized text features of the learned prompts."""
    embeddings, tokenized = prompt_learner()
    return F.normalize(encode_prompt_embeddings(model, embeddings, tokenized), dim=-1)
