"""The scale benchmark's pieces: the synthetic ImageNet folder, the stage runner's memory numbers,
and the report table. The full run is `make bench-scale`."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.scale import (
    build_report,
    markdown,
    parse_args,
    resolve_sizes,
    stage_argv,
    stage_row,
    table_rows,
    train_recipe,
)
from benchmarks.scale_data import COMPLETE, DataParams, ensure_dataset
from benchmarks.scale_proc import run_stage

# ImageNet-1k's first WordNet ids (tench, goldfish, great white shark), written out, not derived
FIRST_WNIDS = ["n01440764", "n01443537", "n01484850"]


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_writes_an_imagenet_folder_once(tmp_path):
    root = tmp_path / "data"
    params = DataParams(classes=3, train_per_class=2, val_images=5, image_size=64)
    info = ensure_dataset(root, params, workers=2)
    assert info["generated"] and info["files"] == 11
    for split in ("train", "val"):
        assert sorted(p.name for p in (root / split).iterdir()) == FIRST_WNIDS
    assert [len(list((root / "train" / w).glob("*.JPEG"))) for w in FIRST_WNIDS] == [2, 2, 2]
    assert [len(list((root / "val" / w).glob("*.JPEG"))) for w in FIRST_WNIDS] == [2, 2, 1]
    jpegs = sorted(root.rglob("*.JPEG"))
    sizes, blobs = set(), set()
    for f in jpegs:
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert 51 <= min(im.size) and max(im.size) <= 80  # 0.8-1.25 × 64
            sizes.add(im.size)
            im.load()
        blobs.add(f.read_bytes())
    assert len(sizes) > 1 and len(blobs) == len(jpegs)  # varied sizes, no duplicate files
    assert json.loads((root / "params.json").read_text())["val_images"] == 5
    assert not [p for p in tmp_path.iterdir() if p.name != "data"]  # no temp dir left behind

    # the project's loader reads it as an ImageNet folder (train/ and val/ as the test split)
    from p4q_export.data.datasets import load_dataset

    train, test = load_dataset(f"imagefolder:{root}", "train"), load_dataset(f"imagefolder:{root}", "test")
    assert len(train) == 6 and len(test) == 5 and list(test.labels) == [0, 0, 1, 1, 2]
    assert test.classnames == ["tench", "goldfish", "great white shark"]  # the wnids resolve to ImageNet names

    before = _files(root)
    again = ensure_dataset(root, params, workers=2)
    assert not again["generated"] and again["files"] == 11
    assert _files(root) == before  # same inodes and mtimes: nothing rewritten

    more = ensure_dataset(root, DataParams(classes=3, train_per_class=2, val_images=6, image_size=64), workers=1)
    assert more["generated"] and len(list((root / "val").rglob("*.JPEG"))) == 6
    assert not [p for p in tmp_path.iterdir() if p.name != "data"]


def test_generator_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"not ours")
    with pytest.raises(FileExistsError):
        ensure_dataset(tmp_path / "mine", DataParams(classes=1, train_per_class=1, val_images=1, image_size=32))
    assert (tmp_path / "mine" / "photo.jpg").read_bytes() == b"not ours"
    assert not (tmp_path / "mine" / COMPLETE).exists()


def test_run_stage_measures_the_process_and_its_workers(tmp_path):
    # a stage that holds ~120 MiB itself and starts one worker holding ~60 MiB, then prints JSON
    script = textwrap.dedent("""
        import subprocess, sys, time
        block = b"x" * (120 * 2**20)
        worker = subprocess.Popen([sys.executable, "-c", "import time; b = b'y' * (60 * 2**20); time.sleep(1.5)"])
        print("progress on stderr", file=sys.stderr)
        worker.wait()
        print('{"top1": 0.5, "n": 4}')
    """)
    run = run_stage([sys.executable, "-c", script], tmp_path / "stage.log", echo=False, interval=0.1)
    assert run["returncode"] == 0 and run["result"] == {"top1": 0.5, "n": 4}
    # the main process's own peak, not that of this (larger) pytest process it was forked from
    assert 120 <= run["peak_rss_mb"] < 400
    assert 60 <= run["children_peak_pss_mb"] < 200 and run["max_children"] == 1
    assert run["tree_peak_pss_mb"] >= 170
    assert "progress on stderr" in (tmp_path / "stage.log").read_text()

    failed = run_stage([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "f.log", echo=False)
    assert failed["returncode"] == 3 and failed["result"] is None


SIZES = {"classes": 20, "shots": 4, "epochs": 2, "val_images": 200, "calib_images": 64, "batch_size": 32,
         "seed": 1, "workers": 1, "amp": False, "device": "cpu", "device_kind": "cpu"}
TRAIN = {"returncode": 0, "wall_s": 200.0, "peak_rss_mb": 2900.4, "children_peak_pss_mb": 610.0, "tree_peak_pss_mb": 3100.0,
         "result": {"device": "cpu", "n_eval": 200, "accuracy": {"fp_zeroshot": 0.05, "ptq_zeroshot": 0.045, "trained": 0.0825},
                    "top5": {"trained": 0.3}, "timings": {"load_s": 4.0, "calibration_s": 12.3, "zero_shot_eval_s": 40.0,
                                                          "cache_s": 16.0, "epoch_s": [3.0, 1.5], "train_s": 21.0, "eval_s": 25.0}}}
EVAL = {"returncode": 0, "wall_s": 30.0, "peak_rss_mb": 1500.0, "children_peak_pss_mb": None, "tree_peak_pss_mb": 1400.0,
        "result": {"top1": 0.06, "top5": 0.27, "n": 200, "seconds": 16.0, "images_per_s": 12.5, "device": "cpu", "peak_gpu_mem_mb": None}}


def test_report_rows_from_stage_results():
    report = build_report(SIZES, {"root": "/d", "files": 280, "bytes": 7 * 2**20, "generated": False},
                          {"train": TRAIN, "eval": EVAL}, {"cpu": "AMD EPYC", "cores": 2, "gpus": [], "torch": "2.x"})
    train = report["stages"][0]
    assert train["steps_per_epoch"] == 3  # ceil(20 × 4 / 32)
    assert train["step_s_per_epoch"] == [1.0, 0.5] and train["mean_step_s"] == 0.75
    assert train["eval_images_per_s"] is None  # its eval reuses the zero-shot step's val features
    assert table_rows(report) == [
        ["train", "cpu", "0", "200.0", "12.3", "16.0", "0.750", "21.0", "25.0", "n/a", "8.25", "30.00", "2900", "610", "3100", "n/a"],
        ["eval", "cpu", "0", "30.0", "n/a", "n/a", "n/a", "n/a", "16.0", "12.5", "6.00", "27.00", "1500", "n/a", "1400", "n/a"],
    ]
    text = markdown(report)
    assert "20 classes × 4 shots, seed 1, 2 epoch(s)" in text and "AMD EPYC (2 cores), GPU none" in text and "reused" in text
    assert "step s per epoch: 1.000, 0.500" in text and "zero-shot eval (FP + PTQ, 200 val images) 40.0 s" in text


def test_report_survives_missing_timings_and_a_failed_stage():
    old_cli = {**TRAIN, "result": {"accuracy": {"trained": 0.1}, "n_eval": 200, "seconds": 99.0}}
    crashed = {"returncode": 2, "wall_s": 3.0, "peak_rss_mb": 300.0, "result": None}
    row = stage_row("train", old_cli, SIZES)
    assert row["calibration_s"] is None and row["mean_step_s"] is None and row["eval_s"] is None
    assert row["top1"] == 0.1
    report = build_report(SIZES, {}, {"train": old_cli, "eval": crashed}, {})
    assert table_rows(report)[1][:4] == ["eval", "n/a", "2", "3.0"]


def test_sizes_recipe_and_stage_commands(tmp_path):
    cpu = resolve_sizes(parse_args(["--device", "cpu", "--shots", "2"]))
    assert (cpu["classes"], cpu["shots"], cpu["epochs"], cpu["val_images"], cpu["workers"]) == (10, 2, 2, 100, 1)
    gpu = resolve_sizes(parse_args(["--device", "cuda:1", "--epochs", "3", "--amp"]))
    assert (gpu["classes"], gpu["shots"], gpu["epochs"], gpu["val_images"], gpu["calib_images"], gpu["batch_size"]) \
        == (1000, 16, 3, 10000, 1280, 128)

    from p4q_export.config import TrainRecipe, build_recipe

    recipe = build_recipe(TrainRecipe, train_recipe(cpu, tmp_path / "d"))  # only keys `train` accepts
    assert recipe.model == "ViT-B-32" and recipe.data == f"imagefolder:{tmp_path / 'd'}"
    assert (recipe.shots, recipe.epochs, recipe.eval_limit, recipe.calib_images, recipe.batch_size) == (2, 2, 100, 32, 16)
    assert recipe.seeds == [] and recipe.quantize_text and recipe.bits == "8/8" and recipe.profile == "trt"
    assert (recipe.prompt_lr, recipe.adapter_lr, recipe.adapter_eps, recipe.weight_decay) == (0.0032, 0.001, 0.0001, 0.0005)

    argv = stage_argv("eval", gpu, tmp_path / "d", tmp_path / "out")
    assert argv[1:5] == ["-m", "p4q_export.cli", "eval", "ViT-B-32"]
    assert argv[-6:] == ["--json", "--device", "cuda:1", "--workers", str(gpu["workers"]), "--amp"][-6:]
    assert "--force" in stage_argv("train", cpu, tmp_path / "d", tmp_path / "out")
