"""The P4Q / CoOp training loop: few-shot data, PTQ model, cached features, checkpoints, resume,
torchrun sharding and the metrics a run reports.

One training step (P4Q):
    text    = normalize(text tower(prompt learner()))            learnable ctx, quantized text path
    image   = adapter(cached quantized image feature of (image, view))
    student = logit_scale · image @ text.T
    teacher = logit_scale · cached FP image feature @ FP zero-shot classifier.T
    loss    = CE(student, y) + λ · distill(student, teacher)
CoOp is the same loop on the FP model with no adapter and no distillation.

Determinism: epoch e shuffles and picks flips with a generator seeded by (seed, e), and both
learning-rate schedules are closed-form functions of the global step, so a run resumed from its
last checkpoint walks the same path as an uninterrupted one.

Beside it: schedule.py (optimizers, learning rates, data order), checkpoint.py (atomic per-epoch
checkpoints), outputs.py (RUN/metrics.json and RUN/run.json), and bench/cache_speedup.py.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainRecipe
from ..data.samplers import eval_subset_indices
from ..errors import UserError
from ..progress import log, progress_iter
from .adapter import QAdapter, feature_dim
from .checkpoint import (
    CHECKPOINT,
    load_checkpoint,
    run_for_seed_key,
    save_checkpoint,
    set_np_rng_state,
    training_state,
)
from .distributed import DistContext, init_distributed
from .features import (
    CachedFeatures,
    EvalFeatures,
    ImageSource,
    OnTheFlyFeatures,
    eval_features,
)
from .losses import DISTILL_FORMS, p4q_loss
from .outputs import (
    METRICS,
    RUN_KIND,
    RUN_MANIFEST,
    aggregate,
    model_reference,
    seed_run_dir,
    seed_run_name,
    write_seed_outputs,
)
from .prompt_learner import PromptLearner, class_embeddings
from .schedule import adapter_lr, epoch_order, make_optimizers, prompt_lr

METHODS = ("p4q", "coop")


# --- setup shared by every seed ---------------------------------------------------------------


@dataclass
class Prepared:
    """Everything that does not depend on the few-shot seed: the (quantized) model, the FP
    teacher's text classifier, the test-split features and the zero-shot baselines."""

    recipe: TrainRecipe
    loaded: object  # LoadedModel
    model: nn.Module  # quantized CLIP for p4q, the FP CLIP for coop
    quantized: bool
    profile: object | None
    ptq_info: dict
    classnames: list[str]
    train_ds: object  # ImageDataset (full train split; few-shot subsets are drawn per seed)
    teacher_text: torch.Tensor | None  # [C, D] FP zero-shot classifier (p4q only)
    eval: EvalFeatures | None  # rank 0 only
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    workers: int | None = None  # image-decoding processes (None: one per core, up to 8)
    model_ref: dict = field(default_factory=dict)  # model_reference(loaded): hashing the weights once per run
    timings: dict = field(default_factory=dict)  # seconds of each setup stage (load, calibration, zero-shot eval)
    zero_shot: dict = field(default_factory=dict)  # fp_zeroshot / ptq_zeroshot accuracies
    zero_shot_top5: dict = field(default_factory=dict)


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
    if r.temperature <= 0:
        raise UserError(f"temperature must be positive, got {r.temperature}")
    if not 0.0 <= r.adapter_ratio <= 1.0:
        raise UserError(f"adapter_ratio must be within [0, 1], got {r.adapter_ratio}")
    if r.eval_split not in ("train", "test"):
        raise UserError(f"eval_split must be train or test, got '{r.eval_split}'")


def recipe_profile(recipe: TrainRecipe):
    from ..quant import get_profile

    extra = {}
    if recipe.profile == "paper":  # the deployable profiles fix these (and reject other values)
        extra = {"a_symmetric": recipe.act_symmetric, "a_per_channel": recipe.act_per_channel}
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


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    from ..models.zeroshot import topk_accuracy

    acc = topk_accuracy(logits, labels)
    return acc.top1, acc.top5


def prepare(recipe: TrainRecipe, out_dir: Path, dist: DistContext, evaluate: bool = True,
            device: torch.device | str = "cpu", workers: int | None = None) -> Prepared:
    """Load the model and data on `device`, quantize (p4q), and score FP / PTQ zero-shot on the
    test split (each rank encodes its share of it)."""
    from ..data import few_shot_indices, load_dataset, templates_for
    from ..models import load_model
    from ..models.zeroshot import zero_shot_classifier

    check_recipe(recipe)
    profile = recipe_profile(recipe) if recipe.method == "p4q" else None  # bad bits / observers before any work
    device = torch.device(device)
    if recipe.threads > 0:
        torch.set_num_threads(recipe.threads)
    t0 = time.perf_counter()
    loaded = load_model(recipe.model, device=str(device))  # `testbed` resolves to the cached pretrained test bed
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    train_ds = load_dataset(recipe.data, "train")
    for seed in seed_list(recipe):  # every seed's few-shot sample is drawable
        few_shot_indices(train_ds.labels, recipe.shots, seed)
    classnames = recipe_classnames(recipe, train_ds)
    templates = templates_for(train_ds.name)
    fp_text = zero_shot_classifier(loaded.model, loaded.tokenizer, classnames, templates, amp=recipe.amp)
    timings = {"load_s": round(time.perf_counter() - t0, 3)}

    quantized = recipe.method == "p4q"
    model, info = loaded.model, {}
    if quantized:
        from ..quant.ptq import build_ptq_model

        log(f"quantizing {loaded.name} ({recipe.profile} W{recipe.bits.replace('/', 'A')}, text {'on' if recipe.quantize_text else 'off'})")
        # only rank 0 writes into the run; the others calibrate identically into a scratch dir
        calib_dir = out_dir / "calibration" if dist.is_main else Path(tempfile.mkdtemp(prefix="p4q-calib-"))
        t0 = time.perf_counter()
        model, info = build_ptq_model(
            loaded, profile, quantize_text=recipe.quantize_text, calib=train_ds,
            n_calib=recipe.calib_images, seed=recipe.calib_seed, calibration_dir=calib_dir, workers=workers,
        )
        timings["calibration_s"] = round(time.perf_counter() - t0, 3)
        if not dist.is_main:
            shutil.rmtree(calib_dir, ignore_errors=True)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

    prepared = Prepared(
        recipe=recipe, loaded=loaded, model=model, quantized=quantized, profile=profile,
        ptq_info=dict(info or {}), classnames=classnames, train_ds=train_ds,
        teacher_text=fp_text if quantized else None, eval=None, device=device, workers=workers,
        model_ref=model_reference(loaded), timings=timings,
    )
    if evaluate:
        t0 = time.perf_counter()
        test_ds = load_dataset(recipe.data, recipe.eval_split)
        test_ds = test_ds.subset(eval_subset_indices(len(test_ds), recipe.eval_limit))
        prepared.eval = eval_features(model, ImageSource(test_ds, loaded.preprocess, workers), test_ds.labels, quantized,
                                      dist=dist, amp=recipe.amp)
    if prepared.eval is not None:
        scale = model.logit_scale.exp().item()
        top1, top5 = accuracy(scale * prepared.eval.fp @ fp_text.T, prepared.eval.labels)
        prepared.zero_shot["fp_zeroshot"], prepared.zero_shot_top5["fp_zeroshot"] = top1, top5
        if quantized:
            ptq_text = zero_shot_classifier(model, loaded.tokenizer, classnames, templates)
            top1, top5 = accuracy(scale * F.normalize(prepared.eval.student, dim=-1) @ ptq_text.T, prepared.eval.labels)
        else:
            top1 = top5 = None
        prepared.zero_shot["ptq_zeroshot"], prepared.zero_shot_top5["ptq_zeroshot"] = top1, top5
        timings["zero_shot_eval_s"] = round(time.perf_counter() - t0, 3)
        log(f"zero-shot top-1 on {len(test_ds)} {recipe.eval_split} images: FP {prepared.zero_shot['fp_zeroshot']:.4f}"
            + (f", PTQ {top1:.4f}" if top1 is not None else ""))
    return prepared


# --- the trainable parts ----------------------------------------------------------------------


@dataclass
class Learner:
    prompt_learner: PromptLearner
    adapter: QAdapter | None

    def modules(self) -> list[nn.Module]:
        return [self.prompt_learner] + ([self.adapter] if self.adapter is not None else [])

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules() for p in m.parameters()]

    def train(self, mode: bool = True) -> None:
        for m in self.modules():
            m.train(mode)


def build_learner(recipe: TrainRecipe, model: nn.Module, tokenizer, classnames, profile, seed: int) -> Learner:
    """Prompts and adapter initialised from `seed` alone (independent of the global RNG and of
    the device: drawn on the CPU, then moved to the model's device)."""
    from ..devices import module_device

    pl = PromptLearner(
        model, tokenizer, classnames, n_ctx=recipe.n_ctx, ctx_init=recipe.ctx_init,
        class_token_position=recipe.class_token_position, csc=recipe.csc,
        generator=torch.Generator().manual_seed(seed),
    )
    adapter = None
    if recipe.method == "p4q" and recipe.adapter:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            adapter = QAdapter(feature_dim(model), recipe.adapter_reduction, recipe.adapter_ratio, profile=profile, bits=recipe.adapter_bits)
        adapter.set_quantization(False)  # trains in FP; calibrated and switched on after training
        adapter.to(module_device(model))
    return Learner(pl, adapter)


# --- one step ---------------------------------------------------------------------------------


def batch_loss(prep: Prepared, learner: Learner, student_raw, teacher_feat, labels, global_batch: int):
    """Loss of one (shard of a) batch, normalized by the global batch size."""
    recipe = prep.recipe
    scale = prep.model.logit_scale.exp().detach()
    text = class_embeddings(prep.model, learner.prompt_learner)
    image = learner.adapter(student_raw) if learner.adapter is not None else F.normalize(student_raw, dim=-1)
    student_logits = scale * image @ text.T
    teacher_logits = None
    if prep.teacher_text is not None and teacher_feat is not None:
        teacher_logits = scale * teacher_feat @ prep.teacher_text.T
    return p4q_loss(
        student_logits, labels, teacher_logits, form=recipe.distill if recipe.method == "p4q" else "none",
        weight=recipe.distill_weight, temperature=recipe.temperature, batch_size=global_batch,
    )


def view_count(recipe: TrainRecipe) -> int:
    """Cached views per training image: the original, and its mirror image with `flip`."""
    return 2 if recipe.flip else 1


# --- training one seed ------------------------------------------------------------------------


@dataclass
class SeedResult:
    seed: int
    top1: float | None
    top5: float | None
    history: list
    train_seconds: float
    resumed_from: int
    learner: Learner
    cache_seconds: float = 0.0  # building the feature cache (0 when uncached)
    epoch_seconds: list = field(default_factory=list)  # wall time of each epoch trained here
    eval_seconds: float = 0.0


def few_shot_data(prep: Prepared, seed: int) -> tuple[ImageSource, torch.Tensor]:
    from ..data import few_shot_indices

    idx = few_shot_indices(prep.train_ds.labels, prep.recipe.shots, seed)
    subset = prep.train_ds.subset(idx)
    return ImageSource(subset, prep.loaded.preprocess, prep.workers), torch.as_tensor(subset.labels, device=prep.device)


def train_seed(prep: Prepared, seed: int, run_dir: Path, dist: DistContext, *, max_epochs: int | None = None,
               cache_features: bool | None = None, resume: bool = True, evaluate: bool = True) -> SeedResult:
    """Train (or resume) one seed in `run_dir`; checkpoint every epoch (rank 0)."""
    recipe = prep.recipe
    cache = recipe.cache_features if cache_features is None else cache_features
    images, labels = few_shot_data(prep, seed)
    learner = build_learner(recipe, prep.model, prep.loaded.tokenizer, prep.classnames, prep.profile, seed)
    opts = make_optimizers(recipe, learner)
    ckpt_path = run_dir / CHECKPOINT
    key = run_for_seed_key(recipe, seed)
    weights_sha256 = prep.model_ref.get("weights_sha256")  # the run key names the model, not its weights
    history: list = []
    start_epoch = 0
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        if state.get("run_key") != key:
            raise UserError(f"{run_dir} holds a run of a different recipe or seed; use another --out or --force")
        trained_on = state.get("model_sha256")
        if trained_on and weights_sha256 and trained_on != weights_sha256:
            raise UserError(f"{run_dir} was trained from other weights of {recipe.model} (SHA-256 {trained_on[:12]}, "
                            f"now {weights_sha256[:12]}); use another --out or --force")
        learner.prompt_learner.load_state_dict(state["prompt_learner"])
        if learner.adapter is not None:
            learner.adapter.load_state_dict(state["adapter"])
        for k, o in opts.items():
            o.load_state_dict(state["optimizers"][k])
        torch.set_rng_state(state["rng"]["torch"])
        set_np_rng_state(state["rng"]["numpy"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        if state.get("done") and learner.adapter is not None:
            learner.adapter.set_quantization(True)
        log(f"seed {seed}: resuming after epoch {start_epoch}/{recipe.epochs} from {ckpt_path}")

    n_views = view_count(recipe)
    teacher = prep.teacher_text is not None
    epochs = recipe.epochs if max_epochs is None else min(recipe.epochs, max_epochs)
    steps_per_epoch = math.ceil(len(labels) / recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    params = learner.parameters()
    t0 = time.perf_counter()
    cache_seconds, epoch_seconds = 0.0, []
    if start_epoch < epochs:
        amp, quantized = recipe.amp, prep.quantized
        features = (CachedFeatures(prep.model, images, n_views, teacher, amp=amp, quantized=quantized) if cache
                    else OnTheFlyFeatures(prep.model, images, teacher, amp=amp, quantized=quantized))
        if cache:
            cache_seconds = time.perf_counter() - t0
            log(f"seed {seed}: cached {n_views}×{len(labels)} image features in {cache_seconds:.1f}s")
        for epoch in progress_iter(range(start_epoch, epochs), desc=f"training seed {seed}", total=epochs - start_epoch):
            t_epoch = time.perf_counter()
            learner.train(True)
            perm, views = (t.to(prep.device) for t in epoch_order(seed, epoch, len(labels), n_views))
            step_losses, sums = [], {"loss": 0.0, "ce": 0.0, "distill": 0.0}
            for s in range(steps_per_epoch):
                step = epoch * steps_per_epoch + s
                batch = perm[s * recipe.batch_size : (s + 1) * recipe.batch_size]
                mine = dist.shard(batch)
                opts["prompt"].param_groups[0]["lr"] = prompt_lr(recipe, step, total_steps)
                if "adapter" in opts:
                    opts["adapter"].param_groups[0]["lr"] = adapter_lr(recipe, step, total_steps)
                for o in opts.values():
                    o.zero_grad(set_to_none=False)
                if len(mine):
                    s_raw, t_feat = features.lookup(mine, views[mine])
                    loss, parts = batch_loss(prep, learner, s_raw, t_feat, labels[mine], len(batch))
                    loss.backward()
                    parts_t = torch.stack([loss.detach(), parts["ce"], parts["distill"]])
                else:
                    parts_t = torch.zeros(3, device=prep.device)
                dist.all_reduce_grads(params)
                for o in opts.values():
                    o.step()
                parts_t = dist.sum(parts_t)
                step_losses.append(float(parts_t[0]))
                for name, value in zip(("loss", "ce", "distill"), parts_t.tolist()):
                    sums[name] += value * len(batch)
            history.append({"epoch": epoch + 1, **{k: v / len(labels) for k, v in sums.items()}, "step_losses": step_losses})
            epoch_seconds.append(time.perf_counter() - t_epoch)
            done = epoch + 1 == recipe.epochs
            if done and learner.adapter is not None:
                calibrate_adapter(learner.adapter, features, len(labels), n_views)
            if dist.is_main:
                state = training_state(recipe, seed, epoch + 1, learner, opts, history, done)
                state["run_key"] = key
                state["model_sha256"] = weights_sha256
                state["classnames"] = list(prep.classnames)
                if done and prep.quantized:
                    from ..quant import quant_state_dict

                    state["quant_state"] = quant_state_dict(prep.model)  # calibration, for load_run
                save_checkpoint(ckpt_path, state)
            dist.barrier()
    train_seconds = time.perf_counter() - t0
    learner.train(False)
    top1 = top5 = None
    t_eval = time.perf_counter()
    if evaluate and dist.is_main and prep.eval is not None and (start_epoch >= recipe.epochs or epochs == recipe.epochs):
        top1, top5 = evaluate_learner(prep, learner)
    return SeedResult(seed, top1, top5, history, train_seconds, start_epoch, learner, cache_seconds, epoch_seconds,
                      time.perf_counter() - t_eval)


def calibrate_adapter(adapter: QAdapter, features, n: int, n_views: int) -> None:
    """Fix the adapter's activation ranges on every training feature (all views), then quantize."""
    if not adapter.quantized:
        return
    device = next(adapter.parameters()).device
    idx = torch.arange(n, device=device).repeat(n_views)
    views = torch.arange(n_views, device=device).repeat_interleave(n)
    student, _ = features.lookup(idx, views)
    adapter.calibrate(student)


@torch.no_grad()
def evaluate_learner(prep: Prepared, learner: Learner) -> tuple[float, float]:
    text = class_embeddings(prep.model, learner.prompt_learner)
    feats = prep.eval.student
    image = learner.adapter(feats) if learner.adapter is not None else F.normalize(feats, dim=-1)
    return accuracy(prep.model.logit_scale.exp() * image @ text.T, prep.eval.labels)


# --- a whole run: one or several seeds, metrics and manifest ----------------------------------

def seed_list(recipe: TrainRecipe) -> list[int]:
    seeds = [int(s) for s in (recipe.seeds or [recipe.seed])]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds repeat: {seeds}")
    return seeds


def train_run(recipe: TrainRecipe, out: Path, force: bool = False, device: str = "auto",
              workers: int | None = None) -> dict | None:
    """Train every seed of `recipe` into `out` (resuming where checkpoints exist) on `device`
    (auto|cpu|cuda|cuda:N; under torchrun each rank takes the GPU of its LOCAL_RANK). Returns the
    metrics on rank 0, None on the other ranks."""
    from ..devices import resolve_device
    from ..manifest import write_json_atomic

    t0 = time.perf_counter()
    check_recipe(recipe)
    seeds = seed_list(recipe)
    torch_device = resolve_device(device)
    dist = init_distributed(torch_device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if force and dist.is_main and out.is_dir():
        for name in (CHECKPOINT, METRICS, RUN_MANIFEST):
            (out / name).unlink(missing_ok=True)
        for s in seeds:
            shutil.rmtree(out / seed_run_name(s), ignore_errors=True)
    if not force:
        from .run import finished_run_metrics

        done = finished_run_metrics(out, recipe, seeds)
        if done is not None:  # rerunning a finished command is cheap: no PTQ, no evaluation
            log(f"{out} already holds this run, finished; its metrics stand (--force retrains)")
            return done if dist.is_main else None
    # OUT is created by its first file (the calibration list), after prepare() has checked the
    # recipe, the model and the data: bad input leaves nothing behind
    prep = prepare(recipe, out, dist, device=torch_device, workers=workers)
    calib = prep.ptq_info.get("calibration_list")
    per_seed: dict[int, dict] = {}
    for seed in seeds:
        run_dir = seed_run_dir(out, seed, seeds)
        t_seed = time.perf_counter()
        result = train_seed(prep, seed, run_dir, dist)
        if dist.is_main:
            calib_rel = os.path.relpath(calib, run_dir) if calib else None
            seconds = time.perf_counter() - (t0 if len(seeds) == 1 else t_seed)
            per_seed[seed] = write_seed_outputs(prep, result, run_dir, seconds, calib_rel)
            log(f"seed {seed}: trained top-1 {result.top1:.4f}")
    if not dist.is_main:
        return None
    if len(seeds) == 1:
        return per_seed[seeds[0]]
    metrics = aggregate(prep, per_seed, time.perf_counter() - t0)
    write_json_atomic(out / METRICS, metrics)
    write_json_atomic(out / RUN_MANIFEST, {"kind": RUN_KIND, "format": 1, "method": recipe.method,
                                           "seed_runs": metrics["seed_runs"], "recipe": metrics["recipe"],
                                           "versions": metrics["versions"]})
    return metrics
