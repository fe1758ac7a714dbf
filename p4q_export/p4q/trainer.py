"""The P4Q / CoOp training loop: one seed (few-shot data, cached features, per-epoch checkpoints,
resume, torchrun sharding), and a whole run of one or several seeds.

Determinism: epoch e shuffles and picks flips with a generator seeded by (seed, e), and both
learning-rate schedules are closed-form functions of the global step, so a run resumed from its
last checkpoint walks the same path as an uninterrupted one.

Beside it: recipe.py (checks), prepare.py (model, PTQ, zero-shot baselines), learner.py (prompts,
adapter, the loss of a batch), schedule.py (optimizers, learning rates, data order), checkpoint.py
(atomic per-epoch checkpoints), outputs.py (RUN/metrics.json and RUN/run.json), and
benchmarks/cache_speedup.py.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import TrainRecipe
from ..devices import synchronize
from ..errors import UserError
from ..progress import log, pct, progress_iter
from .adapter import QAdapter
from .checkpoint import (
    CHECKPOINT,
    load_checkpoint,
    run_for_seed_key,
    save_checkpoint,
    set_np_rng_state,
    training_state,
)
from .distributed import DistContext, init_distributed
from .features import CachedFeatures, ImageSource, OnTheFlyFeatures
from .learner import Learner, batch_loss, build_learner
from .outputs import (
    METRICS,
    RUN_KIND,
    RUN_MANIFEST,
    SeedResult,
    aggregate,
    seed_run_dir,
    seed_run_name,
    write_seed_outputs,
)
from .prepare import Prepared, accuracy, prepare
from .prompt_learner import class_embeddings
from .recipe import check_recipe, seed_list, view_count
from .schedule import adapter_lr, epoch_order, make_optimizers, prompt_lr


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
            synchronize(prep.device)
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
                values = dist.sum(parts_t).tolist()  # one device→host copy per step
                step_losses.append(values[0])
                for name, value in zip(("loss", "ce", "distill"), values):
                    sums[name] += value * len(batch)
            history.append({"epoch": epoch + 1, **{k: v / len(labels) for k, v in sums.items()}, "step_losses": step_losses})
            synchronize(prep.device)
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


def _check_resumable(out: Path, recipe: TrainRecipe, seeds: list[int]) -> None:
    for seed in seeds:
        ckpt = seed_run_dir(out, seed, seeds) / CHECKPOINT
        if ckpt.is_file() and load_checkpoint(ckpt).get("run_key") != run_for_seed_key(recipe, seed):
            raise UserError(f"{ckpt.parent} holds a run of a different recipe or seed; use another --out or --force")


def train_run(recipe: TrainRecipe, out: Path, force: bool = False, device: str = "auto",
              workers: int | None = None) -> dict | None:
    """Train every seed of `recipe` into `out` (resuming where checkpoints exist) on `device`
    (auto|cpu|cuda|cuda:N; under torchrun each rank takes the GPU of its LOCAL_RANK). Returns the
    metrics on rank 0, None on the other ranks."""
    from ..devices import resolve_device
    from ..manifest import write_json_atomic
    from ..outdir import check_out

    t0 = time.perf_counter()
    check_recipe(recipe)
    seeds = seed_list(recipe)
    torch_device = resolve_device(device)
    dist = init_distributed(torch_device)
    out = Path(out)
    check_out(out, "run", force, inputs=(recipe.model,), resumable=True)
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
        _check_resumable(out, recipe, seeds)  # before minutes of loading, calibrating and evaluating
    # OUT is created by its first file (the calibration list), after prepare() has checked the
    # recipe, the model and the data: bad input leaves nothing behind
    created = not out.exists()
    try:
        prep = prepare(recipe, out, dist, device=torch_device, workers=workers)
    except BaseException:
        if created and dist.is_main:  # refused (a damaged image met while calibrating) or stopped: leave nothing
            shutil.rmtree(out, ignore_errors=True)
        raise
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
            log(f"seed {seed}: trained top-1 {pct(result.top1)}")
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
