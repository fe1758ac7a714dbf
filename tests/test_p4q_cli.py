"""`train` end to end on the pretrained test bed: outputs, kill -9 + resume, torchrun with two
ranks, load_run. One short uninterrupted run is the reference for the other two; a two-seed run
of the default (cached) mode is the reference for a kill in its second seed and a kill inside the
checkpoint write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import free_port

REPO = Path(__file__).resolve().parents[1]
W8A8 = "recipes/testbed-p4q-w8a8.yaml"


def short_args(model: Path, out: Path) -> list[str]:
    # uncached features make an epoch slow enough (~1 s) to be killed in the middle of epoch 2
    return ["train", "--recipe", W8A8, "--out", str(out), "--shots", "16", "--seed", "1",
            "--set", f"model={model}", "--set", "epochs=4", "--set", "calib_images=256",
            "--set", "eval_limit=1000", "--set", "cache_features=false", "--set", "threads=1", "--json"]


def env() -> dict:
    return dict(os.environ, P4Q_NO_PROGRESS="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def reference(testbed_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = subprocess.run([sys.executable, "-m", "p4q_export.cli", *short_args(testbed_model, out)],
                          capture_output=True, text=True, check=False, cwd=REPO, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout)


def test_run_outputs(reference, testbed_model, cli):
    out, metrics = reference
    acc = metrics["accuracy"]
    # the ladder's first two rungs are what `eval` reports for the same model, sample and calibration
    common = ("--json", "eval", str(testbed_model), "--data", "fashion-mnist", "--limit", "1000", "--device", "cpu")
    fp = json.loads(cli(*common, check=True).stdout)
    ptq = json.loads(cli(*common, "--quant", "trt", "--bits", "8/8", "--calib-images", "256", check=True).stdout)
    run = json.loads(cli("--json", "eval", str(out), "--data", "fashion-mnist", "--limit", "1000", "--device", "cpu",
                         check=True).stdout)
    assert (acc["fp_zeroshot"], acc["ptq_zeroshot"], acc["trained"]) == (fp["top1"], ptq["top1"], run["top1"])
    assert fp["n"] == ptq["n"] == run["n"] == 1000
    assert metrics["seconds"] > 0 and metrics["seeds"] == [1] and metrics["n_eval"] == 1000
    assert metrics["versions"]["torch"] and metrics["recipe"]["epochs"] == 4
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == acc
    manifest = json.loads((out / "run.json").read_text())
    from p4q_export.manifest import file_sha256

    assert manifest["files"]["checkpoint.pt"] == file_sha256(out / "checkpoint.pt")
    assert manifest["calibration"]["sha256"] and (out / manifest["calibration"]["list"]).is_file()
    assert manifest["profile"]["name"] == "trt"
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["done"] and state["epoch"] == 4 and "quant_state" in state


def test_load_run_reproduces_metrics(reference):
    from p4q_export.data import load_dataset, preprocess_dataset
    from p4q_export.data.samplers import eval_subset_indices as eval_subset
    from p4q_export.p4q.run import is_run_dir, load_run

    out, metrics = reference
    assert is_run_dir(out) and not is_run_dir(out / "calibration")
    run = load_run(out)
    ds = load_dataset("fashion-mnist", "test")
    ds = ds.subset(eval_subset(len(ds), 1000))
    logits = run.logits(preprocess_dataset(ds, run.loaded.preprocess))
    top1 = (logits.argmax(1) == torch.as_tensor(ds.labels)).float().mean().item()
    assert top1 == pytest.approx(metrics["accuracy"]["trained"], abs=1e-6)
    assert run.class_embeddings().shape == (10, 128)


def test_load_run_rejects_damage(reference, tmp_path):
    import shutil

    from p4q_export.errors import UserError
    from p4q_export.p4q.run import load_run

    with pytest.raises(UserError):
        load_run(tmp_path / "missing")
    damaged = tmp_path / "damaged"
    shutil.copytree(reference[0], damaged)
    with open(damaged / "checkpoint.pt", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(UserError, match="damaged"):
        load_run(damaged)


def test_rerunning_a_finished_run_keeps_it(testbed_model, reference, tmp_path):
    import shutil

    from p4q_export.config import TrainRecipe, load_recipe
    from p4q_export.p4q.run import finished_run_metrics

    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    before = (out / "checkpoint.pt").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "p4q_export.cli", *short_args(testbed_model, out)],
                          capture_output=True, text=True, check=False, cwd=REPO, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already holds this run" in proc.stderr
    stored = {k: v for k, v in reference[1].items() if k != "out"}
    assert {k: v for k, v in json.loads(proc.stdout).items() if k != "out"} == stored
    assert (out / "checkpoint.pt").stat().st_mtime_ns == before
    # another recipe, or a damaged file, is not "this run, finished"
    overrides = [f"model={testbed_model}", "epochs=4", "calib_images=256", "eval_limit=1000",
                 "cache_features=false", "threads=1", "shots=16", "seed=1"]
    recipe = load_recipe(REPO / W8A8, overrides, TrainRecipe)
    assert finished_run_metrics(out, recipe, [1]) == stored
    other = load_recipe(REPO / W8A8, [*overrides, "eval_limit=500"], TrainRecipe)
    assert finished_run_metrics(out, other, [1]) is None
    with open(out / "checkpoint.pt", "ab") as f:
        f.write(b"x")
    assert finished_run_metrics(out, recipe, [1]) is None


def test_a_run_is_not_resumed_on_other_weights(testbed_model, reference, tmp_path):
    """The run key names the model; the weights' SHA-256 guards against a re-pretrained test bed
    (or any checkpoint replaced under the same path)."""
    import shutil

    from p4q_export.config import TrainRecipe, load_recipe
    from p4q_export.p4q.run import finished_run_metrics

    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["model"]["weights_sha256"]
    manifest["model"]["weights_sha256"] = "0" * 64
    (out / "run.json").write_text(json.dumps(manifest))
    recipe = load_recipe(REPO / W8A8, [f"model={testbed_model}", "epochs=4", "calib_images=256", "eval_limit=1000",
                                       "cache_features=false", "threads=1", "shots=16", "seed=1"], TrainRecipe)
    assert finished_run_metrics(out, recipe, [1]) is None
    from p4q_export.errors import UserError
    from p4q_export.p4q.run import load_run

    with pytest.raises(UserError, match="trained from other weights"):  # export and eval load runs this way
        load_run(out)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["model_sha256"] and state["model_sha256"] != "0" * 64
    state["model_sha256"] = "0" * 64
    torch.save(state, out / "checkpoint.pt")
    proc = subprocess.run([sys.executable, "-m", "p4q_export.cli", *short_args(testbed_model, out)],
                          capture_output=True, text=True, check=False, cwd=REPO, env=env(), timeout=600)
    assert proc.returncode == 2 and "trained from other weights" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.full  # the uncached mode; the default cached mode's resume runs in every tier
def test_kill_during_epoch_two_then_resume(testbed_model, reference, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "p4q_export.cli", *short_args(testbed_model, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env())
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 500
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # epoch 1 was just written: we are in epoch 2
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1 and not state["done"]

    again = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO, env=env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after epoch 1" in again.stderr
    metrics = json.loads(again.stdout)
    ref = reference[1]
    assert metrics["resumed_from_epoch"] == 1
    assert metrics["accuracy"] == ref["accuracy"]
    assert len(metrics["history"]) == len(ref["history"]) == 4
    for a, b in zip(metrics["history"], ref["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


@pytest.mark.slow
def test_torchrun_two_ranks_matches_one_process(testbed_model, reference, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "p4q_export.cli", *short_args(testbed_model, out), "--device", "cpu"]  # gloo ranks, even beside a GPU
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout)  # only rank 0 prints
    assert metrics["device"] == "cpu"
    ref = reference[1]
    assert len(metrics["history"]) == len(ref["history"]) == 4
    for a, b in zip(metrics["history"], ref["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for key in ("fp_zeroshot", "ptq_zeroshot"):
        assert metrics["accuracy"][key] == ref["accuracy"][key]
    assert metrics["accuracy"]["trained"] == pytest.approx(ref["accuracy"]["trained"], abs=2e-3)  # ≤ 2 of 1000 images
    assert not any(p.name.startswith(".calibration") for p in out.iterdir())


def test_eval_of_a_run_refuses_ptq_flags(reference, cli):
    """A RUN is scored with the quantization it was trained with: --quant and friends were ignored."""
    out, _ = reference
    proc = cli("eval", str(out), "--data", "fashion-mnist", "--quant", "trt", "--bits", "4/4")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == ("error: --quant, --bits applies to a MODEL; a RUN is scored with the quantization it was "
                                   "trained with (its recipe's profile and bits)")


def test_inspect_of_a_run_holds_out_its_calibration_and_its_shots(reference, cli):
    """A RUN's layers are ranked on training images neither its calibration (256) nor its training
    shots (16 per class, 10 classes) used."""
    import numpy as np

    from p4q_export.data import calibration_indices, few_shot_indices, load_dataset

    out, _ = reference
    proc = cli("--json", "inspect", str(out), "--limit", "40", "--accuracy-top", "2", "--stats-images", "8", check=True)
    report = json.loads(proc.stdout)
    train = load_dataset("fashion-mnist", split="train")
    used = np.union1d(calibration_indices(len(train), 256, 0), few_shot_indices(train.labels, 16, 1))
    assert len(used) > 256 and f"none of the {len(used)} images calibration and training used" in report["selection"]["data"]
    assert report["mode"] == "run" and report["selection"]["n_select"] == 40
    assert sum(r["gain_keep_fp"] is not None for r in report["layers"]) == 2


# The default mode: image features cached once per seed, here for two seeds (OUT/seed-1, OUT/seed-2).
# Five steps an epoch (batch 32 of 160 shots) at ~10 ms a step: each seed trains for ~2 s, which
# is the window a kill has to land in. The adapter at 4 bits: whether its quantization is on after
# a resume shows in the accuracy (at 8 bits its FP and INT8 forms score the same 500 images alike).
CACHED_EPOCHS = 40


def cached_args(model: Path, out: Path) -> list[str]:
    return ["train", "--recipe", W8A8, "--out", str(out), "--shots", "16", "--seeds", "1,2",
            "--set", f"model={model}", "--set", f"epochs={CACHED_EPOCHS}", "--set", "batch_size=32", "--set", "adapter_bits=4",
            "--set", "calib_images=256", "--set", "eval_limit=500", "--set", "threads=1", "--json"]


def _train(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "p4q_export.cli", *args], capture_output=True, text=True, check=False,
                          cwd=REPO, env=env(), timeout=600)


@pytest.fixture(scope="module")
def cached_reference(testbed_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("cached") / "run"
    proc = _train(cached_args(testbed_model, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout)


def _assert_same_training(out: Path, metrics: dict, reference: tuple[Path, dict]) -> None:
    """Every number an uninterrupted run reports, and the learned tensors, equal to the bit."""
    ref_out, ref = reference
    volatile = ("seconds", "timings", "out")
    assert {k: v for k, v in metrics.items() if k not in volatile} == {k: v for k, v in ref.items() if k not in volatile}
    for seed in ("seed-1", "seed-2"):
        mine, theirs = (json.loads((d / seed / "metrics.json").read_text()) for d in (out, ref_out))
        assert (mine["accuracy"], mine["top5"], mine["history"]) == (theirs["accuracy"], theirs["top5"], theirs["history"])
        a, b = (torch.load(d / seed / "checkpoint.pt", weights_only=True) for d in (out, ref_out))
        assert a["done"] and a["epoch"] == CACHED_EPOCHS and a["history"] == b["history"]  # step losses too
        for part in ("prompt_learner", "adapter"):
            assert a[part].keys() == b[part].keys()
            assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), (seed, part)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 500) -> None:
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert path.exists(), f"{path} never appeared (exit {proc.poll()})"


@pytest.mark.slow
def test_kill_in_the_second_seed_of_a_cached_run_then_resume(testbed_model, cached_reference, tmp_path):
    """kill -9 while seed 2 trains: seed 1 is finished (its checkpoint is reused, not retrained),
    seed 2 resumes from its last epoch; the result is the uninterrupted run's, exactly."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "p4q_export.cli", *cached_args(testbed_model, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env())
    _wait_for(out / "seed-2" / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    first = torch.load(out / "seed-1" / "checkpoint.pt", weights_only=True)
    second = torch.load(out / "seed-2" / "checkpoint.pt", weights_only=True)
    assert first["done"] and first["epoch"] == CACHED_EPOCHS
    killed_after = second["epoch"]
    assert 1 <= killed_after < CACHED_EPOCHS and not second["done"], "the kill came after seed 2 had finished"
    assert not (out / "metrics.json").exists()

    again = _train(cached_args(testbed_model, out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"seed 1: resuming after epoch {CACHED_EPOCHS}/{CACHED_EPOCHS}" in again.stderr
    assert f"seed 2: resuming after epoch {killed_after}/{CACHED_EPOCHS}" in again.stderr
    assert "seed 1: cached" not in again.stderr  # the finished seed is scored, not trained again
    assert json.loads((out / "seed-2" / "metrics.json").read_text())["resumed_from_epoch"] == killed_after
    _assert_same_training(out, json.loads(again.stdout), cached_reference)


@pytest.mark.slow
def test_kill_during_the_checkpoint_write_keeps_the_previous_checkpoint(testbed_model, cached_reference, tmp_path):
    """The process is stopped inside save_checkpoint (its temporary file is a FIFO that the test
    stops reading, so the write blocks mid-file) and killed there: checkpoint.pt is the previous
    epoch's, byte for byte and loadable, and the same command resumes to the uninterrupted result."""
    from p4q_export.p4q.checkpoint import load_checkpoint, partial_path

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "p4q_export.cli", *cached_args(testbed_model, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env())
    ckpt = out / "seed-1" / "checkpoint.pt"
    _wait_for(ckpt, proc)  # epoch 1 (or a later one) is written; the next write goes into the FIFO
    tmp = partial_path(ckpt, proc.pid)
    while proc.poll() is None:  # the temporary file exists only during a write: retry until the name is free
        try:
            os.mkfifo(tmp)
            break
        except FileExistsError:
            time.sleep(0.001)
    reader = os.open(tmp, os.O_RDONLY | os.O_NONBLOCK)  # the writer's open() returns once a reader exists
    head, deadline = b"", time.time() + 60
    while not head and proc.poll() is None and time.time() < deadline:
        try:
            head = os.read(reader, 64)
        except BlockingIOError:  # the writer has opened it, no bytes yet
            pass
        time.sleep(0.001)
    assert head.startswith(b"PK"), f"no checkpoint was written through {tmp.name} (exit {proc.poll()})"  # torch.save's zip
    assert ckpt.is_file(), "the previous checkpoint is gone while the next one is being written"
    before = ckpt.read_bytes()  # the writer is blocked: nothing moves
    # a pipe holds 64 KiB and the checkpoint is larger: the writer is blocked inside the file
    assert len(before) > 1 << 16
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    partial = head
    while chunk := os.read(reader, 1 << 16):  # the writer is gone: the rest, then end of file
        partial += chunk
    os.close(reader)
    tmp.unlink()
    tmp.write_bytes(partial)  # what a killed write leaves: the first part of a checkpoint
    assert len(partial) < len(before)

    assert ckpt.read_bytes() == before
    state = load_checkpoint(ckpt)
    assert 1 <= state["epoch"] < CACHED_EPOCHS and not state["done"]
    assert not (out / "seed-2").exists()

    again = _train(cached_args(testbed_model, out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"seed 1: resuming after epoch {state['epoch']}/{CACHED_EPOCHS}" in again.stderr
    _assert_same_training(out, json.loads(again.stdout), cached_reference)
