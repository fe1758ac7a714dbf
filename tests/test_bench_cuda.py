"""The torch backend in other precisions and on a GPU. Timing and labelling run on a bundle of the
test-bed architecture with random weights (a 10 s export, no pretraining); agreement is judged on the
shipped test bed (trained: its logits decide the images) with the gate `validate` applies to every
backend (runtime/validate.py: the embedding's per-image cosine >= 0.999, top-1 agreement >= 0.99 on
the images the reference decides). The CUDA tests run only where a GPU is visible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from p4q_export.errors import UserError

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA events, FP16 on the GPU)")
N_AGREE = 256  # test images for the agreement tests: one flip is 0.4% of top-1 agreement


@pytest.fixture(scope="module")
def bundle(random_testbed_bundle):
    return random_testbed_bundle


@pytest.fixture(scope="module")
def trained(testbed_model, tmp_path_factory):
    """(bundle of the shipped test bed, 256 of its test images): the agreement tests' inputs."""
    from p4q_export.data import load_dataset
    from p4q_export.deploy.bundle import load_bundle
    from p4q_export.runtime.inputs import dataset_inputs

    out = tmp_path_factory.mktemp("testbed") / "bundle"
    run_cli("--json", "export", str(testbed_model), "--data", "fashion-mnist", "--calib-images", "64", "--precision", "int8",
            "--out", str(out), check=True)
    return out, dataset_inputs(load_bundle(out), load_dataset("fashion-mnist", "test"), 0, N_AGREE)


def _runner(bundle, **kw):
    from p4q_export.runtime.base import open_runner

    return open_runner(bundle, "torch", **kw)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _assert_passes_the_gate(bundle_dir, reference: dict, out: dict, logit_scale: float, what: str) -> None:
    """validate's acceptance of a backend against its reference, with the bundle's thresholds."""
    from p4q_export.deploy.bundle import load_bundle
    from p4q_export.runtime.validate import compare_logits, compare_outputs

    gate = load_bundle(bundle_dir).thresholds
    assert gate == {"cosine_min": 0.999, "top1_agreement_min": 0.99, "tie_cosine": 0.001}  # export's defaults
    assert out["logits"].dtype == out["embedding"].dtype == np.float32
    assert out["logits"].shape == reference["logits"].shape and out["embedding"].shape == reference["embedding"].shape
    logits = compare_logits(reference["logits"], out["logits"], gate["tie_cosine"] * logit_scale)
    emb = compare_outputs(reference["embedding"], out["embedding"], "embedding")
    # the reference decides the images: their top two classes are more than the tie margin apart
    assert logits["ties"] <= len(out["logits"]) // 50, (what, logits["ties"])
    assert emb["cosine_min"] >= gate["cosine_min"], (what, emb)
    assert logits["top1_agreement"] >= gate["top1_agreement_min"], (what, logits)


def test_half_precisions_pass_the_validation_gate_on_cpu(trained):
    bundle, images = trained
    ref = _runner(bundle, precision="fp32")
    assert ref.device.type == "cpu"
    fp32 = ref.run_all(images)
    for precision in ("bf16", "fp16"):  # both run on a CPU in torch >= 2.x (slowly: opt-in in bench)
        r = _runner(bundle, precision=precision)
        assert r.precision == precision and next(r.model.parameters()).dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        out = r.run_all(images)
        assert set(out) == set(fp32) == {"logits", "embedding"}
        _assert_passes_the_gate(bundle, fp32, out, ref.logit_scale, precision)


def test_torch_runner_refusals(bundle):
    with pytest.raises(UserError, match="bf16"):
        _runner(bundle, precision="int4")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            _runner(bundle, precision="fp32", device="cuda")


def test_cpu_bench_of_torch_rows_says_cpu(bundle):
    from p4q_export.bench.run import BenchRequest, run_bench

    rep = run_bench(BenchRequest(bundle=bundle, device="cpu", batches=[2], iterations=2, warmup=1,
                                 backends=["torch/fp32", "torch/bf16"]))
    assert [(r["backend"], r["precision"], r["ran_on"]) for r in rep["results"]] == [("torch", "fp32", "cpu"), ("torch", "bf16", "cpu")]
    assert rep["skipped"] == []


@needs_gpu
def test_cuda_bench_times_torch_on_the_gpu(bundle):
    from p4q_export.bench.run import BenchRequest, run_bench

    name = torch.cuda.get_device_name(torch.cuda.current_device())
    rep = run_bench(BenchRequest(bundle=bundle, device="cuda", batches=[1, 8], iterations=5, warmup=2,
                                 backends=["torch/fp32", "torch/fp16", "torch/bf16", "torch/int8", "ort/int8"]))
    rows = {(r["backend"], r["precision"], r["batch"]): r for r in rep["results"]}
    for precision in ("fp32", "fp16", "bf16", "int8"):
        for batch in (1, 8):
            r = rows[("torch", precision, batch)]
            assert r["ran_on"].startswith("cuda:") and name in r["ran_on"], r
            assert r["timer"] == "cuda-events" and r["includes_copy"] is False and r["peak_gpu_mb"] > 0
            assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_ips"] > 0
    assert rows[("ort", "int8", 1)]["ran_on"] == "cpu"  # asked for: timed, and labelled honestly
    # the other timing variant: host→device images and device→host logits inside each iteration
    copy = run_bench(BenchRequest(bundle=bundle, device="cuda", batches=[8], iterations=5, warmup=2,
                                  backends=["torch/fp16"], include_copy=True))["results"][0]
    assert copy["includes_copy"] is True and copy["ran_on"] == rows[("torch", "fp16", 8)]["ran_on"]
    # by default a cuda bench leaves the CPU-only ORT rows out, with the reason
    plain = run_bench(BenchRequest(bundle=bundle, device="cuda", batches=[1], iterations=2, warmup=1, build_engines=False))
    assert all(r["ran_on"] != "cpu" for r in plain["results"])
    assert {s["backend"] for s in plain["skipped"]} >= {"ort", "ort-exact"}


@needs_gpu
def test_half_precisions_on_the_gpu_pass_the_validation_gate(trained):
    bundle, images = trained
    fp32 = _runner(bundle, precision="fp32", device="cuda")
    assert fp32.device.type == "cuda" and next(fp32.model.parameters()).is_cuda
    ref = fp32.run_all(images)
    cpu_ref = _runner(bundle, precision="fp32").run_all(images)
    assert _cosine(ref["embedding"], cpu_ref["embedding"]).min() > 0.9999  # TF32 is off: FP32 on the GPU is FP32
    assert np.array_equal(ref["logits"].argmax(-1), cpu_ref["logits"].argmax(-1))
    for precision in ("fp16", "bf16"):
        r = _runner(bundle, precision=precision, device="cuda")
        assert isinstance(r(images), np.ndarray)
        _assert_passes_the_gate(bundle, ref, r.run_all(images), fp32.logit_scale, f"{precision} on the GPU")
    # the fake-quant reference computes the same codes on the GPU as on the CPU
    int8_gpu = _runner(bundle, precision="int8", device="cuda")
    _assert_passes_the_gate(bundle, _runner(bundle, precision="int8").run_all(images), int8_gpu.run_all(images),
                            int8_gpu.logit_scale, "int8 on the GPU")


@needs_gpu
def test_cuda_bench_cli(bundle, cli, tmp_path):
    proc = cli("--json", "bench", str(bundle), "--device", "cuda", "--batch", "1,4", "--iterations", "3", "--warmup", "1",
               "--no-build-engines", "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(proc.stdout)
    torch_rows = [r for r in rep["results"] if r["backend"] == "torch"]
    assert rep["device"] == "cuda" and {r["precision"] for r in torch_rows} == {"fp32", "fp16", "bf16"}
    assert all(r["ran_on"].startswith("cuda:") for r in rep["results"])
    assert "CUDA events" in (tmp_path / "rep" / "bench.md").read_text()


def test_no_trtexec_on_path_gives_no_figures(tmp_path, monkeypatch):
    from p4q_export.bench.trt_timing import TRTEXEC_PLACES, trtexec_figures

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("TENSORRT_ROOT", raising=False)
    monkeypatch.delenv("TRT_ROOT", raising=False)
    if any(Path(p).exists() for p in TRTEXEC_PLACES):
        pytest.skip("this machine has trtexec where TensorRT installs put it")
    assert trtexec_figures(tmp_path / "x.plan", "image", (1, 3, 32, 32), 10) is None


def test_report_says_trt_rows_are_device_time_with_end_to_end_beside():
    from p4q_export.bench.report import timing_notes

    rows = [{"backend": "trt", "precision": "int8", "batch": 8, "timer": "cuda-events", "includes_copy": False,
             "end_to_end": {"p50_ms": 1.25}, "trtexec": {"gpu_compute": {"median_ms": 0.45}}}]
    notes = "".join(timing_notes({"results": rows, "warmup": 3}))
    assert "device time, CUDA events around the engine's execute_async_v3" in notes
    assert "int8 batch 8 1.25 ms" in notes and "trtexec GPU compute median: int8 batch 8 0.45 ms" in notes
    assert "torch rows on the GPU" not in notes  # no torch row was timed
