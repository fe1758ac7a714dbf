"""`make bench-scale`: ViT-B-32 (random weights) P4Q training and FP zero-shot eval on a synthetic
ImageNet-format folder, each stage a real `p4q-export` subprocess; reports where the time and the
memory go (calibration, feature cache, steps, evaluation, peak host RSS and GPU memory).

    python -m benchmarks.scale [--device auto|cpu|cuda[:N]] [--classes C] [--shots K]
        [--epochs E] [--val-images N] [--calib-images M] [--batch-size B] [--workers W] [--amp]
        [--root DATA_DIR] [--out DIR]

Sizes default to a few minutes on a small CPU, or to the paper's ImageNet recipe (1000 classes x 16
shots, 50 epochs, 10,000 val images) when the device is a GPU. Writes DIR/scale.json, scale.md, the
recipe, the run and each stage's log; prints the markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path

import yaml

from benchmarks.scale_data import DataParams, ensure_dataset
from benchmarks.scale_proc import run_stage
from p4q_export.data.loader import default_workers
from p4q_export.devices import cpu_info, device_kind
from p4q_export.models.testbed import REPO_ROOT, cache_root

MODEL = "ViT-B-32"  # random weights: no pretrained tag, no network
OFFICIAL_RECIPE = REPO_ROOT / "recipes" / "vit-b32-imagenet-w8a8.yaml"
SIZES = {  # per device kind; every key is also a command-line option
    # on a CPU the 80-template zero-shot classifiers (FP and PTQ, in train and eval) cost more than
    # the images, and they grow with the classes: 10 keep a 2-core run to a few minutes
    "cpu": {"classes": 10, "shots": 4, "epochs": 2, "val_images": 100, "calib_images": 32, "batch_size": 16},
    "cuda": {"classes": 1000, "shots": 16, "epochs": 50, "val_images": 10000, "calib_images": 1280, "batch_size": 128},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (passed to every stage)")
    for key in SIZES["cpu"]:
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                       help=f"default {SIZES['cpu'][key]} on a CPU, {SIZES['cuda'][key]} on a GPU")
    p.add_argument("--seed", type=int, default=1, help="few-shot sample and initialisation seed")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers per stage (default: 1 on a CPU, min(8, cores) on a GPU)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for the frozen FP parts (passed to every stage)")
    p.add_argument("--image-size", type=int, default=256, help="nominal side of the synthetic JPEGs")
    p.add_argument("--stages", default="train,eval", help="which stages to run, comma-separated")
    p.add_argument("--root", type=Path, default=None, help="data folder (default: $P4Q_CACHE/bench-scale-data-<params hash>)")
    p.add_argument("--out", type=Path, default=Path("out/bench-scale"))
    p.add_argument("--quiet", action="store_true", help="don't echo the stages' logs on stderr")
    return p.parse_args(argv)


def resolve_sizes(args: argparse.Namespace) -> dict:
    kind = device_kind(args.device)
    sizes = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in SIZES[kind].items()}
    workers = args.workers if args.workers is not None else (1 if kind == "cpu" else default_workers())
    return {**sizes, "seed": args.seed, "workers": workers, "amp": args.amp, "device": args.device, "device_kind": kind}


def train_recipe(sizes: dict, root: Path) -> dict:
    """The official ImageNet recipe's optimisation and method keys, at this benchmark's sizes."""
    recipe = yaml.safe_load(OFFICIAL_RECIPE.read_text())
    recipe.pop("seeds", None)  # one seed
    recipe.pop("classnames", None)  # the loader names WordNet-id folders itself, for any subset
    recipe.update({
        "model": MODEL, "data": f"imagefolder:{root}", "method": "p4q", "profile": "trt", "bits": "8/8",
        "quantize_text": True, "shots": sizes["shots"], "seed": sizes["seed"], "epochs": sizes["epochs"],
        "calib_images": sizes["calib_images"], "batch_size": sizes["batch_size"], "eval_limit": sizes["val_images"],
    })
    return recipe


def stage_argv(stage: str, sizes: dict, root: Path, out: Path) -> list[str]:
    common = ["--json", "--device", sizes["device"], "--workers", str(sizes["workers"])] + (["--amp"] if sizes["amp"] else [])
    cli = [sys.executable, "-m", "p4q_export.cli"]
    if stage == "train":
        return [*cli, "train", "--recipe", str(out / "recipe.yaml"), "--out", str(out / "run"), "--force", *common]
    if stage == "eval":
        return [*cli, "eval", MODEL, "--data", f"imagefolder:{root}", *common]
    raise ValueError(f"unknown stage '{stage}' (train, eval)")


def machine_info(device_kind_: str, load_avg: float | None = None) -> dict:
    """CPU model, GPUs, versions; asked after the stages so this process holds no CUDA context
    while they run."""
    import torch

    cpu = cpu_info()["model"]
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if device_kind_ == "cuda" and torch.cuda.is_available() else [])
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_1m": load_avg}


# --- the report ---------------------------------------------------------------------------------


def _rate(n, seconds):
    return round(n / seconds, 2) if n and seconds else None


def stage_row(stage: str, run: dict, sizes: dict) -> dict:
    """One table row from a stage's run_stage() result; keys the stage did not report are None."""
    r = run.get("result") or {}
    row = {"stage": stage, "returncode": run.get("returncode"), "wall_s": run.get("wall_s"), "device": r.get("device"),
           "peak_rss_mb": run.get("peak_rss_mb"), "children_peak_pss_mb": run.get("children_peak_pss_mb"),
           "children_peak_rss_mb": run.get("children_peak_rss_mb"),
           "tree_peak_pss_mb": run.get("tree_peak_pss_mb"), "peak_gpu_mem_mb": r.get("peak_gpu_mem_mb")}
    if stage == "train":
        t = r.get("timings") or {}
        steps = math.ceil(sizes["classes"] * sizes["shots"] / sizes["batch_size"])
        step_s = [e / steps for e in t.get("epoch_s") or []]
        n_eval = r.get("n_eval")
        row.update({
            "load_s": t.get("load_s"), "calibration_s": t.get("calibration_s"),
            "zero_shot_eval_s": t.get("zero_shot_eval_s"), "cache_s": t.get("cache_s"),
            "steps_per_epoch": steps, "step_s_per_epoch": [round(s, 4) for s in step_s],
            "mean_step_s": round(statistics.fmean(step_s), 4) if step_s else None,
            # train's eval_s scores the trained prompts + adapter on val features computed in the
            # zero-shot step, so it is no image throughput: images/s comes from the eval stage
            "train_s": t.get("train_s"), "eval_s": t.get("eval_s"), "n": n_eval, "eval_images_per_s": None,
            "top1": (r.get("accuracy") or {}).get("trained"), "top5": (r.get("top5") or {}).get("trained"),
            "fp_zeroshot": (r.get("accuracy") or {}).get("fp_zeroshot"),
            "ptq_zeroshot": (r.get("accuracy") or {}).get("ptq_zeroshot"),
        })
    else:
        row.update({"eval_s": r.get("seconds"), "n": r.get("n"),
                    "eval_images_per_s": r.get("images_per_s") or _rate(r.get("n"), r.get("seconds")),
                    "top1": r.get("top1"), "top5": r.get("top5")})
    return row


def build_report(sizes: dict, data: dict, runs: dict[str, dict], machine: dict) -> dict:
    return {"benchmark": "p4q-export bench-scale", "model": MODEL, "machine": machine, "parameters": sizes,
            "data": data, "stages": [stage_row(name, run, sizes) for name, run in runs.items()],
            "runs": runs}


COLUMNS = [  # (header, row key, format)
    ("stage", "stage", "s"), ("device", "device", "s"), ("exit", "returncode", "d"), ("wall s", "wall_s", ".1f"),
    ("calib s", "calibration_s", ".1f"), ("cache s", "cache_s", ".1f"), ("step s (mean)", "mean_step_s", ".3f"),
    ("train s", "train_s", ".1f"), ("eval s", "eval_s", ".1f"), ("eval img/s", "eval_images_per_s", ".1f"),
    ("top-1 %", "top1", "%"), ("top-5 %", "top5", "%"), ("peak RSS MB", "peak_rss_mb", ".0f"),
    ("workers PSS MB", "children_peak_pss_mb", ".0f"), ("tree PSS MB", "tree_peak_pss_mb", ".0f"),
    ("peak GPU MB", "peak_gpu_mem_mb", ".0f"),
]


def _cell(value, fmt: str) -> str:
    if value is None:
        return "n/a"
    if fmt == "%":
        return f"{100 * value:.2f}"
    return format(value, fmt) if fmt != "s" else str(value)


def table_rows(report: dict) -> list[list[str]]:
    return [[_cell(row.get(key), fmt) for _, key, fmt in COLUMNS] for row in report["stages"]]


def markdown(report: dict) -> str:
    m, p, d = report["machine"], report["parameters"], report["data"]
    lines = [
        f"## bench-scale: {report['model']} (random weights), device {p['device']}",
        "",
        (f"- machine: {m.get('cpu')} ({m.get('cores')} cores), GPU {', '.join(m.get('gpus') or []) or 'none'}, "
         f"torch {m.get('torch')}, load average {m.get('load_avg_1m')} at start"),
        (f"- parameters: {p['classes']} classes × {p['shots']} shots, seed {p['seed']}, {p['epochs']} epoch(s), "
         f"batch {p['batch_size']}, {p['calib_images']} calibration images, {p['val_images']} val images, "
         f"workers {p['workers']}, amp {'on' if p['amp'] else 'off'}"),
        (f"- data: {d.get('root')} ({d.get('files')} JPEGs, {(d.get('bytes') or 0) / 2**20:.1f} MiB, "
         + (f"generated in {d.get('seconds')} s)" if d.get("generated") else "reused)")),
        "",
        "| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(report)]
    for row in report["stages"]:
        if row["stage"] == "train" and row.get("step_s_per_epoch"):
            lines += ["", f"train: {row['steps_per_epoch']} steps/epoch; step s per epoch: "
                      + ", ".join(f"{s:.3f}" for s in row["step_s_per_epoch"][:10])
                      + (" …" if len(row["step_s_per_epoch"]) > 10 else "")
                      + f"; load {_cell(row.get('load_s'), '.1f')} s, zero-shot eval (FP + PTQ, {_cell(row.get('n'), 's')}"
                      f" val images) {_cell(row.get('zero_shot_eval_s'), '.1f')} s; its eval s scores the trained"
                      " prompts + adapter on those val features"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = resolve_sizes(args)
    if sizes["device_kind"] == "cuda":
        import torch

        if not torch.cuda.is_available():  # before writing a 26,000-image folder for nothing
            print(f"bench-scale: error: --device {args.device}: no CUDA GPU is visible here", file=sys.stderr)
            return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not stages or set(stages) - {"train", "eval"}:
        print(f"bench-scale: error: --stages takes train and/or eval, got '{args.stages}'", file=sys.stderr)
        return 2
    params = DataParams(classes=sizes["classes"], train_per_class=sizes["shots"], val_images=sizes["val_images"],
                        image_size=args.image_size)
    root = (args.root or cache_root() / f"bench-scale-data-{params.digest()}").resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench-scale: data {root}", file=sys.stderr, flush=True)
    try:
        data = ensure_dataset(root, params)
    except (FileExistsError, ValueError) as exc:
        print(f"bench-scale: error: {exc}", file=sys.stderr)
        return 2
    if sizes["calib_images"] > sizes["classes"] * sizes["shots"]:
        print(f"bench-scale: calibration uses all {sizes['classes'] * sizes['shots']} training images "
              f"(fewer than --calib-images {sizes['calib_images']})", file=sys.stderr)
    recipe = train_recipe(sizes, root)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = dict(os.environ, P4Q_NO_PROGRESS="1")
    load_avg = round(os.getloadavg()[0], 2)  # what the stages start under (this VM may be shared)
    runs = {}
    for stage in stages:
        argv_ = stage_argv(stage, sizes, root, out)
        print(f"bench-scale: {stage}: {' '.join(argv_[1:])}", file=sys.stderr, flush=True)
        runs[stage] = run_stage(argv_, out / f"{stage}.log", env=env, echo=not args.quiet)
        if runs[stage]["returncode"] != 0:
            print(f"bench-scale: {stage} failed (exit {runs[stage]['returncode']}); see {out / f'{stage}.log'}",
                  file=sys.stderr)
    report = build_report(sizes, data, runs, machine_info(sizes["device_kind"], load_avg))
    (out / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "scale.md").write_text(text)
    sys.stdout.write(text)
    print(f"bench-scale: wrote {out / 'scale.json'}", file=sys.stderr)
    return 0 if all(r["returncode"] == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
