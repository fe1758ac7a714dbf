"""Recipes: YAML files + `--set key=value` overrides, checked against a dataclass schema.

Every recipe kind is a flat dataclass; unknown keys and values of the wrong type are user errors,
so a typo in a recipe never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError

T = TypeVar("T")
# One calibration sample for train, `eval --quant` and `export MODEL`, so a bundle's PTQ is the one
# `eval` reports: the official P4Q setup's 1,280 training images (10 batches of 128), seed 0.
CALIB_IMAGES = 1280
CALIB_SEED = 0


@dataclasses.dataclass
class PretrainRecipe:
    """Pretraining the small test-bed CLIP from scratch (offline demo and tests)."""

    model: str = "p4q-testbed"  # a JSON model config shipped in p4q_export/models/configs
    data: str = "fashion-mnist"  # a SPEC, or several joined by '+' (e.g. fashion-mnist+mnist)
    epochs: float = 2.0
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    flip: bool = True
    seed: int = 0
    threads: int = 0  # 0 = torch default
    # zero-shot scores written to the manifest: "" = the test splits of `data`; else SPECs joined
    # by '+' (the glyph bed is scored on mnist+fashion-mnist, which it never saw)
    eval_data: str = ""
    eval_prompts: str = ""  # "" = each eval set's own names and templates; glyphs (see data/templates.py)
    # keys added after test beds were first cached, with their defaults: at the default they leave
    # the recipe hash (the cache key) unchanged, so a cached bed stays valid
    LATER_KEYS: typing.ClassVar[dict] = {"eval_data": "", "eval_prompts": ""}


@dataclasses.dataclass
class TrainRecipe:
    """P4Q (or the FP CoOp baseline) on top of a (quantized) CLIP. See p4q_export/p4q/."""

    model: str = "testbed"  # a MODEL, or `testbed` = the project's pretrained test-bed CLIP
    data: str = "fashion-mnist"
    classnames: str = ""  # "" = the dataset's own; "imagenet" = open_clip's 1,000 ImageNet names
    method: str = "p4q"  # p4q | coop (FP learnable prompts: no quantization, adapter, distillation)
    shots: int = 16
    seed: int = 1
    seeds: list = dataclasses.field(default_factory=list)  # several seeds -> mean ± std
    # quantization (PTQ of the towers)
    profile: str = "trt"  # a quantization profile (quant/profiles: trt, ort-x86, paper, ...)
    bits: str = "8/8"  # W/A
    quantize_text: bool = False
    weight_observer: str = "minmax"
    act_observer: str = "minmax"  # minmax | percentile | omse
    act_symmetric: bool = True  # paper profile only: false = asymmetric activations (official)
    act_per_channel: bool = False  # paper profile only: channel-wise activations (official)
    calib_images: int = CALIB_IMAGES
    calib_seed: int = CALIB_SEED
    keep_fp: list = dataclasses.field(default_factory=list)  # fnmatch patterns of layers left FP (see `inspect --suggest`)
    # prompt learner
    n_ctx: int = 16
    ctx_init: str = ""  # e.g. "a photo of a" (sets n_ctx); empty = random init std 0.02
    class_token_position: str = "end"  # end | middle | front
    csc: bool = False  # class-specific context
    # QAdapter
    adapter: bool = True
    adapter_reduction: int = 4
    adapter_ratio: float = 0.2
    adapter_bits: int = 8
    # loss
    prompts: str = ""  # "" = the dataset's class names and templates; glyphs = for the glyph test bed
    distill: str = "official"  # official | kl | none (see p4q_export/p4q/losses.py)
    distill_weight: float = 1.0
    temperature: float = 1.0  # kl only
    # optimisation (official P4Q: SGD 3.2e-3 cosine per iteration; adapter AdamW 1e-3 eps 1e-4)
    epochs: int = 50
    batch_size: int = 128
    prompt_optimizer: str = "sgd"  # sgd | adamw
    prompt_lr: float = 3.2e-3
    weight_decay: float = 5e-4  # prompts
    warmup_epochs: int = 0  # prompts: linear warmup before the cosine
    adapter_lr: float = 1e-3
    adapter_eps: float = 1e-4
    adapter_weight_decay: float = 0.01
    flip: bool = True  # horizontal flips: two cached views per image
    cache_features: bool = True  # false = run the frozen towers every step (to measure the speed-up)
    eval_split: str = "test"  # test | train | val (train less every seed's shots: for choosing settings)
    eval_limit: int = 0  # 0 = whole split; else a fixed sample of this many images
    threads: int = 0
    amp: bool = False  # bf16 autocast for the frozen FP forwards (teacher, FP features); never the quantized student


RECIPE_KINDS: dict[str, type] = {"pretrain": PretrainRecipe, "train": TrainRecipe}


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check/convert one value to the field's declared type, or raise a UserError naming the key."""
    target = {"str": str, "int": int, "float": float, "bool": bool, "list": list}.get(
        annotation if isinstance(annotation, str) else getattr(annotation, "__name__", ""), None
    )
    if target is None:
        return value
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if target is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if target is list and not isinstance(value, list):
        value = [value]
    if target is int and isinstance(value, bool) or not isinstance(value, target):
        raise UserError(f"recipe key '{name}' must be {target.__name__}, got {value!r}")
    return value


def comma_list(text: str, option: str, example: str) -> list[str]:
    """`a,b,c` -> ["a", "b", "c"]; an empty item (`1,,2`), an empty list or a repeated item is one
    line naming the option, instead of a guess at what was meant."""
    parts = [p.strip() for p in str(text).split(",")]
    if not str(text).strip() or "" in parts:
        raise UserError(f"{option} expects items joined by commas (e.g. {example}), got '{text}'")
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        raise UserError(f"{option} names {', '.join(repeated)} more than once: '{text}'")
    return parts


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` strings -> dict; values are parsed as YAML scalars (so 8 is int, true is bool)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        # "8/8" and SPECs stay strings; YAML would read "4/4" as a string anyway
        out[key.strip()] = value
    return out


def build_recipe(cls: type[T], values: dict[str, Any], source: str = "recipe") -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(
            f"unknown key(s) in {source}: {', '.join(unknown)} (known: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(k, v, hints.get(k, fields[k].type)) for k, v in values.items()}
    return cls(**kwargs)


def load_recipe(path: str | Path | None, overrides: list[str] | None, cls: type[T]) -> T:
    """Read a YAML recipe (optional) and apply `--set` overrides on top."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"recipe not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError:
            raise UserError(f"recipe {p} is not a YAML text file (not UTF-8)") from None
        except yaml.YAMLError as exc:
            raise UserError(f"recipe {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None or loaded == {}:
            # most likely the wrong file, or one saved before it was written: never train on it silently
            raise UserError(f"recipe {p} is empty: it sets nothing (leave --recipe out to use the defaults)")
        if not isinstance(loaded, dict):
            raise UserError(f"recipe {p} must be a mapping of key: value")
        values.update(loaded)
    values.update(parse_overrides(overrides))
    recipe = build_recipe(cls, values, source=str(path) if path else "--set")
    if path is not None and recipe == cls():
        from .progress import log

        log(f"note: recipe {path} sets only default values ({', '.join(sorted(loaded))}): this is the default recipe")
    return recipe


def recipe_dict(recipe: Any) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def recipe_hash(recipe: Any) -> str:
    d = recipe_dict(recipe)
    for name, default in getattr(type(recipe), "LATER_KEYS", {}).items():
        if d.get(name) == default:
            d.pop(name)
    blob = json.dumps(d, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
