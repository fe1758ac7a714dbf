"""Training checkpoints: written atomically every epoch, loaded with `weights_only=True`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import TrainRecipe, recipe_dict, recipe_hash
from ..errors import UserError, signals_held

if TYPE_CHECKING:
    from .learner import Learner

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "p4q-export/checkpoint-1"
# keys that change how a run is scheduled or scored, not what it learns: a resume may differ in them
RUN_NEUTRAL_KEYS = ("seeds", "threads", "eval_split", "eval_limit", "cache_features")
# keys added to the recipe after runs were first written, with their defaults: at the default they
# leave a run's identity unchanged, so a run of an earlier version still resumes and counts as done
LATER_KEYS = {"amp": False, "keep_fp": [], "prompts": ""}


def comparable_recipe(recipe: TrainRecipe | dict) -> dict:
    """The recipe as a dict without the later keys that sit at their defaults."""
    d = dict(recipe) if isinstance(recipe, dict) else recipe_dict(recipe)
    for name, default in LATER_KEYS.items():
        if d.get(name, default) == default:
            d.pop(name, None)
    return d


def run_for_seed_key(recipe: TrainRecipe, seed: int) -> str:
    """Identity of a run, stored in its checkpoint: the recipe without its seed bookkeeping, plus
    this seed."""
    d = comparable_recipe(recipe)
    for name in RUN_NEUTRAL_KEYS:
        d.pop(name, None)
    d["seed"] = int(seed)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def partial_path(path: Path, pid: int | None = None) -> Path:
    """The temporary file beside `path` that process `pid` (default: this one) writes before the rename."""
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: write a temporary file beside it, fsync, rename (a kill never leaves half a file).
    Ctrl-C/SIGTERM wait for the write to finish: a raise inside torch.save's writer would surface
    as its RuntimeError, not as the interrupt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    with signals_held():
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / foreign files raise several types
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a p4q-export training checkpoint")
    return state


def training_state(recipe: TrainRecipe, seed: int, epoch: int, learner: Learner, opts, history, done: bool) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "recipe_hash": recipe_hash(recipe),
        "recipe": recipe_dict(recipe),
        "seed": int(seed),
        "epoch": int(epoch),  # completed epochs
        "done": bool(done),
        "prompt_learner": learner.prompt_learner.state_dict(),
        "adapter": learner.adapter.state_dict() if learner.adapter is not None else {},
        "optimizers": {k: o.state_dict() for k, o in opts.items()},
        "rng": {"torch": torch.get_rng_state(), "numpy": np_rng_state()},
        "history": history,
    }


def np_rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_np_rng_state(state: dict) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["cached_gaussian"]))
