"""Load a CLIP from an open_clip name (+ pretrained tag), a local checkpoint file or directory, or
one of the project's own JSON model configs (registered with open_clip, as open_clip does)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.preprocess import TensorPreprocess
from ..errors import UserError
from ..manifest import read_json
from ..progress import slow_step
from .checkpoints import (
    WEIGHT_SUFFIXES,
    is_torchscript,
    loadable_by_open_clip,
    read_state_dict,
)
from .registry import CONFIG_FILE, WEIGHTS_FILE, register_project_configs
from .tokenizers import load_tokenizer, require_hf_tokenizer

RANDOM_INIT_SEED = 0  # an open_clip NAME without a pretrained tag: random weights, the same every time
@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    preprocess: TensorPreprocess
    name: str  # open_clip model name (architecture)
    source: str  # what the user gave
    model_cfg: dict = field(default_factory=dict)
    create_kwargs: dict = field(default_factory=dict)  # open_clip overrides, e.g. force_quick_gelu

    def describe(self) -> dict:
        out = {"name": self.name, "source": self.source, "model_cfg": self.model_cfg}
        if self.create_kwargs:  # only when set: older manifests stay comparable
            out["create_kwargs"] = dict(self.create_kwargs)
        return out


def _read_dir_config(path: Path, missing: str | None = None) -> dict:
    cfg_path = path / CONFIG_FILE
    cfg = read_json(cfg_path, missing or f"{path} is not a model directory (no {CONFIG_FILE})")
    if "model_cfg" not in cfg:
        raise UserError(f"{cfg_path} has no 'model_cfg'")
    return cfg


def _dir_weights(path: Path) -> Path:
    """The weights file open_clip picks in a model folder; a folder without one would silently
    build random weights."""
    from open_clip.factory import _find_checkpoint_in_dir

    found = _find_checkpoint_in_dir(path)
    if not found:
        raise UserError(f"{path} has {CONFIG_FILE} but no weights file ({WEIGHTS_FILE}, open_clip_model.safetensors, "
                        "model.safetensors, pytorch_model.bin or *.pth)")
    return Path(found)


def _create_from_torchscript_dir(folder: Path, weights: Path, device: str):
    """open_clip loads a folder's weights with `weights_only`, which refuses TorchScript: build it
    from a copy of the folder holding the config and the archive's weights as a plain state dict."""
    import open_clip

    with loadable_by_open_clip(weights) as plain, tempfile.TemporaryDirectory(prefix="p4q-model-") as tmp:
        shutil.copy(folder / CONFIG_FILE, Path(tmp) / CONFIG_FILE)
        shutil.move(plain, Path(tmp) / WEIGHTS_FILE)
        return open_clip.create_model(f"local-dir:{tmp}", device=device)


def create_kwargs_for(name: str, tag: str | None) -> dict:
    """Extra `open_clip.create_model` kwargs for NAME:TAG. open_clip builds e.g. `ViT-B-32` with
    nn.GELU even for the `openai` tag, which was trained with QuickGELU, and only warns: force
    QuickGELU whenever the tag's pretrained config says so and the architecture does not."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    if not tag:
        return {}
    tag_quick_gelu = bool(get_pretrained_cfg(name, tag).get("quick_gelu", False))
    arch_quick_gelu = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    return {"force_quick_gelu": True} if tag_quick_gelu and not arch_quick_gelu else {}


def load_model(spec: str, device: str = "cpu") -> LoadedModel:
    """`spec`: DIR (open_clip_config.json + weights), FILE (with open_clip_config.json beside it),
    NAME (random weights), NAME:TAG (open_clip pretrained tag), NAME:FILE (a state dict, safetensors
    or OpenAI TorchScript file: models/checkpoints.py), `testbed` or `glyphs`."""
    register_project_configs()
    from .testbed import ALIASES

    if spec in ALIASES:
        from .testbed import ensure_testbed

        spec = str(ensure_testbed(ALIASES[spec], device=str(device)))
    with slow_step(f"loading model {spec}"):
        return _load_model(spec, device)


def _load_model(spec: str, device: str) -> LoadedModel:
    import open_clip

    p = Path(spec)
    arch, sep, _ = spec.partition(":")
    # NAME:FILE (`ViT-B-32-quickgelu:/path/openai.pt`) names an architecture, even though it ends in .pt
    named = bool(sep) and arch in open_clip.list_models()
    name_for_tokenizer: str
    extra: dict = {}
    try:
        if p.is_dir() and not named:
            cfg = _read_dir_config(p)
            weights = _dir_weights(p)
            if is_torchscript(weights):
                model = _create_from_torchscript_dir(p, weights, device)
            else:
                read_state_dict(weights)  # a clear error for a truncated or foreign file
                model = open_clip.create_model(f"local-dir:{p}", device=device)
            name = cfg.get("model_name", p.name)
            model_cfg = cfg["model_cfg"]
            name_for_tokenizer = f"local-dir:{p}"
        elif not named and (p.suffix in WEIGHT_SUFFIXES or p.exists()):
            if not p.is_file():
                raise UserError(f"model checkpoint not found: {p}")
            cfg = _read_dir_config(p.parent, f"{p}: a weights file needs its architecture, named (ARCH:{p}) or in "
                                                f"{CONFIG_FILE} beside it")
            name = cfg.get("model_name", p.parent.name)
            # the config beside the file defines the architecture; the file, not the folder's
            # preferred checkpoint, provides the weights
            with loadable_by_open_clip(p) as weights:
                model = open_clip.create_model(f"local-dir:{p.parent}", device=device)
                open_clip.load_checkpoint(model, weights, weights_only=True)
            model_cfg = cfg["model_cfg"]
            name_for_tokenizer = f"local-dir:{p.parent}"
        else:
            name, _, tag = spec.partition(":")
            if name not in open_clip.list_models():
                if "/" in spec or spec.startswith("."):
                    raise UserError(f"model path not found: {spec}")
                raise UserError(f"unknown model '{name}' (not a path and not an open_clip model name)")
            is_file = bool(tag) and (Path(tag).is_file() or "/" in tag or Path(tag).suffix in WEIGHT_SUFFIXES)
            if is_file and not Path(tag).is_file():
                raise UserError(f"model checkpoint not found: {tag}")
            require_hf_tokenizer(spec, open_clip.get_model_config(name), name)  # before building a large model
            extra = {} if is_file else create_kwargs_for(name, tag)
            # random weights (no tag) are seeded: every process, torchrun rank and command that
            # names the same architecture gets the same model
            with torch.random.fork_rng(devices=[]), \
                    (loadable_by_open_clip(tag) if is_file else contextlib.nullcontext(tag or None)) as pretrained:
                torch.manual_seed(RANDOM_INIT_SEED)
                model = open_clip.create_model(name, pretrained=pretrained, device=device, weights_only=True, **extra)
            model_cfg = open_clip.get_model_config(name) or {}
            if extra.get("force_quick_gelu"):
                # the manifest's model_cfg rebuilds the bundle reference: it must say QuickGELU
                model_cfg["quick_gelu"] = True
            name_for_tokenizer = name
    except (RuntimeError, ValueError, FileNotFoundError, KeyError, AssertionError, IndexError) as exc:
        # open_clip says "weights of another architecture" with several of these (AssertionError for a
        # resized position embedding)
        msg = str(exc).splitlines()[0][:200]
        if "download" in msg.lower() or "hub" in msg.lower():
            msg += " (pretrained weights need the internet; pass a local checkpoint instead)"
        raise UserError(f"cannot load model '{spec}': {msg}") from None
    logging.getLogger(__name__).debug("loaded %s", spec)
    model.eval()
    tokenizer = load_tokenizer(spec, name_for_tokenizer, model_cfg)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        preprocess=TensorPreprocess.from_model(model),
        name=name,
        source=spec,
        model_cfg=model_cfg,
        create_kwargs=extra,
    )
