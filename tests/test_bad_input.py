"""Bad input is refused before anything is written: one line on stderr, exit 2, no OUT left behind."""

from __future__ import annotations

import pytest
from conftest import run_cli

# p4q-testbed is the test bed's architecture with random weights: no pretraining needed here
BASE = ["--set", "model=p4q-testbed", "--set", "data=digits", "--set", "calib_images=16", "--set", "epochs=1",
        "--device", "cpu", "--workers", "0"]


@pytest.mark.parametrize("override, message", [
    ("bits=9/9", "bits"),
    ("model=/nonexistent/model", "model path not found"),
    ("shots=1000", "fewer than --shots"),
    ("act_observer=median", "observer"),
])
def test_train_with_a_bad_recipe_value_writes_nothing(tmp_path, override, message):
    out = tmp_path / "run"
    proc = run_cli("train", "--recipe", "recipes/testbed-p4q-w8a8.yaml", "--out", str(out), *BASE, "--set", override)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_train_on_a_missing_cuda_device_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    proc = run_cli("train", "--recipe", "recipes/testbed-p4q-w8a8.yaml", "--out", str(out), *BASE[:-4], "--device", "cuda")
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("option, value", [("--cosine-min", "2"), ("--top1-agreement-min", "-0.5"), ("--tie-cosine", "1")])
def test_validate_thresholds_out_of_range_are_bad_input(tmp_path, option, value):
    proc = run_cli("validate", str(tmp_path), "--data", "digits", option, value)
    assert proc.returncode == 2
    assert f"error: {option} must be in" in proc.stderr
    assert not (tmp_path / "validation.json").exists()
