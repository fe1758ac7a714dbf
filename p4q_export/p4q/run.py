"""Loading a finished training run: what `export` and `eval` build on.

A run directory holds `run.json` (manifest: model, recipe, profile, calibration, file hashes),
`metrics.json` and `checkpoint.pt` (learned context, adapter, calibration state; tensors only,
loaded with weights_only=True). A multi-seed run keeps one such directory per seed
(`seed-<S>/`); loading the parent loads its first seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainRecipe, build_recipe
from ..errors import UserError
from .adapter import QAdapter, feature_dim
from .checkpoint import CHECKPOINT, comparable_recipe, load_checkpoint, run_for_seed_key
from .model_ref import same_weights_as_recorded
from .outputs import (
    METRICS,
    RUN_KIND,
    RUN_MANIFEST,
    seed_run_dir,
)
from .prompt_learner import PromptLearner, class_embeddings
from .recipe import recipe_profile


@dataclass
class TrainedRun:
    dir: Path
    recipe: TrainRecipe
    loaded: object  # LoadedModel (its .model is `model`)
    model: nn.Module  # quantized CLIP with its calibration restored (FP for coop)
    prompt_learner: PromptLearner
    adapter: QAdapter | None
    classnames: list[str]
    profile: object | None  # QuantProfile
    metrics: dict
    manifest: dict

    @torch.no_grad()
    def class_embeddings(self) -> torch.Tensor:
        """[C, D] normalized text features of the learned prompts through the (quantized) text
        tower: the classifier that gets folded into an exported graph."""
        return class_embeddings(self.model, self.prompt_learner)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized image features, adapter applied (images preprocessed like `loaded.preprocess`)."""
        raw = self.model.encode_image(images).float()
        return self.adapter(raw) if self.adapter is not None else F.normalize(raw, dim=-1)

    @torch.no_grad()
    def logits(self, images, batch_size: int = 500) -> torch.Tensor:
        """`images`: one tensor (cut into `batch_size` batches) or an iterable of batches (streamed);
        the prompts run through the text tower once."""
        from ..data.loader import tensor_batches
        from ..devices import module_device

        device = module_device(self.model)
        if isinstance(images, torch.Tensor):
            images = tensor_batches(images, batch_size)
        text = self.class_embeddings()
        feats = torch.cat([self.image_features(batch.to(device)) for batch in images])
        return self.model.logit_scale.exp() * feats @ text.T


def is_run_dir(path) -> bool:
    p = Path(path)
    if not (p / RUN_MANIFEST).is_file():
        return False
    try:
        return json.loads((p / RUN_MANIFEST).read_text()).get("kind") == RUN_KIND
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def _read_json(path: Path, what: str) -> dict:
    from ..manifest import read_json

    data = read_json(path, f"{path.parent} is not a finished training run (no {path.name})")
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is damaged (not a JSON object)")
    return data


def _verify_files(run_dir: Path, manifest: dict) -> None:
    from ..manifest import file_sha256

    for name, digest in (manifest.get("files") or {}).items():
        path = run_dir / name
        if not path.is_file():
            raise UserError(f"run {run_dir} is incomplete: {name} is missing")
        if file_sha256(path) != digest:
            raise UserError(f"run {run_dir} is damaged: {name} does not match its SHA-256 in {RUN_MANIFEST}")


def finished_run_metrics(out: Path, recipe: TrainRecipe, seeds: list[int]) -> dict | None:
    """The stored metrics when `out` already holds this exact run, finished and intact (every seed's
    checkpoint done, every file matching its hash); else None, and `train` trains or resumes."""
    try:
        metrics = _read_json(out / METRICS, "run metrics")
        if (comparable_recipe(metrics.get("recipe") or {}) != comparable_recipe(recipe)
                or sorted(metrics.get("seeds") or []) != sorted(seeds)):
            return None
        for seed in seeds:
            run_dir = seed_run_dir(out, seed, seeds)
            manifest = _read_json(run_dir / RUN_MANIFEST, "run manifest")
            _verify_files(run_dir, manifest)
            if not same_weights_as_recorded(manifest.get("model") or {}):
                return None
            state = load_checkpoint(run_dir / CHECKPOINT)
            if not state.get("done") or state.get("run_key") != run_for_seed_key(recipe, seed):
                return None
    except UserError:  # missing or damaged: training resumes from what is intact and rewrites the rest
        return None
    return metrics


def _model_spec(manifest: dict) -> str:
    model = manifest.get("model") or {}
    path = model.get("path")
    if path and Path(path).exists():
        return path
    if not model.get("source"):
        raise UserError(f"{RUN_MANIFEST} names no model")
    return model["source"]


def load_run(run_dir, device: torch.device | str = "cpu") -> TrainedRun:
    """Rebuild a trained run on `device` (raises UserError for a missing, unfinished or damaged run)."""
    from ..models import load_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    manifest = _read_json(run_dir / RUN_MANIFEST, "run manifest")
    if manifest.get("kind") != RUN_KIND:
        raise UserError(f"{run_dir} is not a p4q-export training run")
    if manifest.get("seed_runs"):  # several seeds: the first one stands for the run
        first = next(iter(manifest["seed_runs"].values()))
        return load_run(run_dir / first, device)
    _verify_files(run_dir, manifest)
    model_ref = manifest.get("model") or {}
    if not same_weights_as_recorded(model_ref):  # prompts and calibration belong to the weights they were learned on
        raise UserError(f"run {run_dir} was trained from other weights than {model_ref.get('path')} holds now "
                        f"(SHA-256 {str(model_ref.get('weights_sha256'))[:12]} recorded); retrain it")
    metrics = _read_json(run_dir / METRICS, "run metrics")
    state = load_checkpoint(run_dir / CHECKPOINT)  # on the CPU; load_state_dict copies to the device
    if not state.get("done"):
        raise UserError(f"run {run_dir} is unfinished (epoch {state.get('epoch')}); rerun `train` to resume it")
    try:
        recipe = build_recipe(TrainRecipe, manifest["recipe"], source=str(run_dir / RUN_MANIFEST))
    except KeyError:
        raise UserError(f"{run_dir / RUN_MANIFEST} has no recipe") from None

    loaded = load_model(_model_spec(manifest), device=str(device))
    model = loaded.model
    for p in model.parameters():
        p.requires_grad_(False)
    profile = None
    if recipe.method == "p4q":
        from ..quant import load_quant_state, quantize_clip

        profile = recipe_profile(recipe)
        quantize_clip(model, profile, quantize_text=recipe.quantize_text, keep_fp=recipe.keep_fp)
        if "quant_state" not in state:
            raise UserError(f"run {run_dir} is damaged: its checkpoint holds no calibration state")
        load_quant_state(model, state["quant_state"])
    model.eval()

    classnames = list(manifest.get("classnames") or state.get("classnames") or [])
    prompt_learner = PromptLearner(
        model, loaded.tokenizer, classnames, n_ctx=recipe.n_ctx, ctx_init=recipe.ctx_init,
        class_token_position=recipe.class_token_position, csc=recipe.csc,
    )  # on the model's device
    try:
        prompt_learner.load_state_dict(state["prompt_learner"])
        adapter = None
        if recipe.method == "p4q" and recipe.adapter:
            adapter = QAdapter(feature_dim(model), recipe.adapter_reduction, recipe.adapter_ratio, profile=profile,
                               bits=recipe.adapter_bits).to(device)
            adapter.load_state_dict(state["adapter"])
            adapter.set_quantization(True)
            adapter.eval()
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"run {run_dir} does not match its recipe: {str(exc).splitlines()[0][:200]}") from None
    prompt_learner.eval()
    return TrainedRun(run_dir, recipe, loaded, model, prompt_learner, adapter, classnames, profile, metrics, manifest)
