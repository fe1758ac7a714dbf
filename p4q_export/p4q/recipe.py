"""Recipe checks shared by training and loading a run: the methods, the quantization profile a
recipe names, its class names, its seeds and cached views. Every check runs before any work."""

from __future__ import annotations

from ..config import TrainRecipe
from ..errors import UserError
from .losses import DISTILL_FORMS

METHODS = ("p4q", "coop")


def check_recipe(r: TrainRecipe) -> None:
    if r.method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got '{r.method}'")
    if r.distill not in DISTILL_FORMS:
        raise UserError(f"distill must be one of {', '.join(DISTILL_FORMS)}, got '{r.distill}'")
    if r.prompt_optimizer not in ("sgd", "adamw"):
        raise UserError(f"prompt_optimizer must be sgd or adamw, got '{r.prompt_optimizer}'")
    for name in ("epochs", "batch_size", "shots"):
        if getattr(r, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(r, name)}")
    if r.threads < 0 or r.eval_limit < 0:
        raise UserError(f"threads and eval_limit must be 0 (the default) or positive, got {r.threads} and {r.eval_limit}")
    if r.temperature <= 0:
        raise UserError(f"temperature must be positive, got {r.temperature}")
    if not 0.0 <= r.adapter_ratio <= 1.0:
        raise UserError(f"adapter_ratio must be within [0, 1], got {r.adapter_ratio}")
    if r.eval_split not in ("train", "test", "val"):
        raise UserError(f"eval_split must be train, test or val, got '{r.eval_split}'")


def recipe_profile(recipe: TrainRecipe):
    from ..quant.profiles import find_profile, get_profile

    # the activation layout reaches only a profile that leaves it free (the deployable ones fix it)
    spec, extra = find_profile(recipe.profile), {}
    if spec is not None and spec.a_symmetric is None:
        extra["a_symmetric"] = recipe.act_symmetric
    if spec is not None and spec.a_per_channel is None:
        extra["a_per_channel"] = recipe.act_per_channel
    return get_profile(recipe.profile, recipe.bits, w_observer=recipe.weight_observer,
                       a_observer=recipe.act_observer, **extra)


def recipe_classnames(recipe: TrainRecipe, ds) -> list[str]:
    """The dataset's class names, or open_clip's ImageNet names for an ImageNet folder (whose
    folders are WordNet ids, sorted in the same order as IMAGENET_CLASSNAMES)."""
    if not recipe.classnames:
        return list(ds.classnames)
    if recipe.classnames != "imagenet":
        raise UserError(f"classnames must be empty or 'imagenet', got '{recipe.classnames}'")
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    if len(ds.classnames) != len(IMAGENET_CLASSNAMES):
        raise UserError(f"classnames: imagenet needs 1000 classes, {recipe.data} has {len(ds.classnames)}")
    return list(IMAGENET_CLASSNAMES)


def seed_list(recipe: TrainRecipe) -> list[int]:
    seeds = [int(s) for s in (recipe.seeds or [recipe.seed])]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds repeat: {seeds}")
    return seeds


def view_count(recipe: TrainRecipe) -> int:
    """Cached views per training image: the original, and its mirror image with `flip`."""
    return 2 if recipe.flip else 1
