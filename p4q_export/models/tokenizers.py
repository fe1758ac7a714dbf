"""Tokenizers: open_clip's own, or a Hugging Face tokenizer (SigLIP, SigLIP2), which needs the
`transformers` package and the tokenizer files (from the hub, its local cache, or a folder named
by P4Q_HF_TOKENIZER). A missing piece is one line saying what and how to provide it."""

from __future__ import annotations

import importlib.util
import os

from ..errors import UserError

HF_TOKENIZER_ENV = "P4Q_HF_TOKENIZER"


def hf_tokenizer_name(model_cfg: dict | None, name: str = "") -> str | None:
    """The Hugging Face tokenizer open_clip will load for this config and name, or None. Without
    hf_tokenizer_name, open_clip.get_tokenizer still picks its SigLipTokenizer (a sentencepiece
    vocabulary it downloads, read by `transformers`) for any name containing "siglip"."""
    configured = ((model_cfg or {}).get("text_cfg") or {}).get("hf_tokenizer_name")
    if configured or ":" in name or "siglip" not in name.lower():
        return configured or None
    from open_clip.tokenizer import SigLipTokenizer

    low = name.lower()
    return SigLipTokenizer.VOCAB_FILES["gemma" if "siglip2" in low else "mc4" if "i18n" in low else "c4-en"]


def _how(hf_name: str) -> str:
    fetch = f"download {hf_name}" if hf_name.startswith("http") else f"`huggingface-cli download {hf_name}` fills the Hugging Face cache"
    return (f"on a connected machine {fetch}, "
            f"or set {HF_TOKENIZER_ENV}=DIR to a folder holding this model's tokenizer files")


def require_hf_tokenizer(model: str, model_cfg: dict | None, name: str = "") -> None:
    """Before anything is built: a model with a Hugging Face tokenizer needs `transformers`."""
    hf_name = hf_tokenizer_name(model_cfg, name)
    if hf_name and importlib.util.find_spec("transformers") is None:
        raise UserError(f"{model} tokenizes text with the Hugging Face tokenizer '{hf_name}', which needs `transformers`: "
                        f"pip install 'p4q-export[hf]'; offline, {_how(hf_name)}")


def load_tokenizer(model: str, name_for_tokenizer: str, model_cfg: dict | None):
    import open_clip

    hf_name = hf_tokenizer_name(model_cfg, name_for_tokenizer)
    if not hf_name:
        return open_clip.get_tokenizer(name_for_tokenizer)
    require_hf_tokenizer(model, model_cfg, name_for_tokenizer)
    local = os.environ.get(HF_TOKENIZER_ENV)
    text_cfg = model_cfg.get("text_cfg") or {}
    try:
        if local:
            from open_clip.tokenizer import HFTokenizer

            return HFTokenizer(local, context_length=text_cfg.get("context_length", 77), tokenizer_mode=text_cfg.get("tokenizer_mode"),
                               **(text_cfg.get("tokenizer_kwargs") or {}))
        return open_clip.get_tokenizer(name_for_tokenizer)
    except Exception as exc:  # transformers / huggingface_hub raise many types when offline
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the Hugging Face tokenizer '{local or hf_name}' of {model} ({reason}): {_how(hf_name)}") from None
