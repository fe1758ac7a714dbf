"""Bench orchestration, timing and reports on a tiny real QDQ bundle (seconds, not minutes)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import make_tiny_bundle

from p4q_export.bench import report as report_mod
from p4q_export.bench.run import (
    BenchRequest,
    parse_backends,
    parse_batches,
    plan_backends,
    run_bench,
)
from p4q_export.bench.timing import summarize, time_callable
from p4q_export.devices import cpu_info
from p4q_export.errors import UserError


@pytest.fixture
def tiny_bundle(tmp_path) -> Path:
    return make_tiny_bundle(tmp_path / "tiny bundle")


def test_timing_percentiles_and_throughput():
    t = summarize([float(v) for v in range(1, 101)], batch=8, seconds=2.0)
    assert (t.p50_ms, round(t.p90_ms, 1), round(t.p99_ms, 2)) == (50.5, 90.1, 99.01)
    assert t.throughput_ips == pytest.approx(8 * 100 / 2.0)
    calls = []
    timing = time_callable(lambda x: calls.append(x.shape), np.zeros((2, 3)), iterations=5, warmup=2)
    assert len(calls) == 7 and timing.iterations == 5 and timing.batch == 2


def test_option_parsing():
    assert parse_batches("1,8,32") == [1, 8, 32]
    for bad, message in (("", "items joined by commas"), ("0", "positive"), ("a,b", "positive"), ("1,,8", "items joined"),
                         ("1,8,", "items joined"), ("8,8", "names 8 more than once"), ("-1", "positive")):
        with pytest.raises(UserError, match=message):
            parse_batches(bad)
    assert parse_backends("ort/int8,trt/fp16") == ["ort/int8", "trt/fp16"]
    for bad, message in (("onnx/int8", "unknown backend"), ("ort/int8,,ort/fp32", "items joined"), ("", "items joined"),
                         ("ort/int8,ort/int8", "more than once")):
        with pytest.raises(UserError, match=message):
            parse_backends(bad)


def test_cpu_info_reads_vnni():
    text = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8380\nflags\t\t: fpu avx2 avx512f avx512_vnni\n"
    info = cpu_info(text)
    assert info["model"].startswith("Intel") and info["vnni"] and info["avx512"]
    assert not cpu_info("model name : AMD EPYC\nflags : avx2\n")["vnni"]


def test_bench_on_cpu_reports_contract_keys(tiny_bundle, tmp_path):
    rep = run_bench(BenchRequest(bundle=tiny_bundle, device="cpu", batches=[1, 4], iterations=3, warmup=1,
                                 backends=["ort/fp32", "ort/int8", "ort-exact/int8"]))
    assert rep["device"] == "cpu" and "vnni" in rep["machine"]["cpu"]
    assert {(r["backend"], r["precision"]) for r in rep["results"]} == {("ort", "fp32"), ("ort", "int8"), ("ort-exact", "int8")}
    for r in rep["results"]:
        assert {"backend", "precision", "batch", "p50_ms", "p90_ms", "p99_ms", "throughput_ips"} <= set(r)
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_ips"] > 0
        assert r["ran_on"] == "cpu" and r["timer"] == "perf_counter"
    files = report_mod.write_report(rep, tmp_path / "out")
    assert json.loads(Path(files["json"]).read_text())["results"] == rep["results"]
    table = Path(files["markdown"]).read_text()
    assert "| ort | int8 | 1 |" in table and "× vs ORT FP32" in table and table.splitlines()[4].endswith("| cpu |")
    assert Path(files["plot"]).stat().st_size > 1000


def test_off_jetson_device_jetson_is_a_user_error(tiny_bundle, cli):
    proc = cli("bench", str(tiny_bundle), "--device", "jetson", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "not a Jetson" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is visible")
def test_cuda_bench_without_a_gpu_is_bad_input(tiny_bundle, cli, tmp_path):
    proc = cli("bench", str(tiny_bundle), "--device", "cuda", "--out", str(tmp_path / "rep"), "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "--host" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "rep").exists() and not (tiny_bundle / "bench").exists()


def test_cuda_plan_times_torch_on_the_gpu_and_leaves_cpu_only_ort_out():
    pairs, skipped = plan_backends("cuda", None)
    assert pairs == [("torch", "fp32"), ("torch", "fp16"), ("torch", "bf16"), ("trt", "fp16"), ("trt", "int8")]
    assert {(s["backend"], s["precision"]) for s in skipped} == {("ort", "fp32"), ("ort", "int8"), ("ort-exact", "int8")}
    assert all("CPU only" in s["reason"] and "--backends" in s["reason"] for s in skipped)
    # asked for explicitly, ORT runs (labelled cpu); on a CPU bench half precision is opt-in
    assert plan_backends("cuda", ["ort/int8", "torch/int8"]) == ([("torch", "int8"), ("ort", "int8")], [])
    assert plan_backends("cpu", None)[0] == [("torch", "fp32"), ("ort", "fp32"), ("ort", "int8"), ("ort-exact", "int8")]
    assert parse_backends("torch/bf16,torch/fp16") == ["torch/bf16", "torch/fp16"]


def test_bench_cli_json(tiny_bundle, cli, tmp_path):
    proc = cli("bench", str(tiny_bundle), "--device", "cpu", "--batch", "1,2", "--iterations", "2", "--warmup", "1",
               "--backends", "ort/int8,ort/fp32", "--out", str(tmp_path / "rep"), "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["device"] == "cpu" and len(rep["results"]) == 4
    assert (tmp_path / "rep" / "bench.md").is_file() and "| backend |" in proc.stderr


def test_speedups_and_accuracy_items():
    rep = {"device": "cpu", "results": [
        {"backend": "torch", "precision": "fp32", "batch": 1, "p50_ms": 130.0, "p90_ms": 1, "p99_ms": 1, "throughput_ips": 1},
        {"backend": "ort", "precision": "fp32", "batch": 1, "p50_ms": 72.0, "p90_ms": 1, "p99_ms": 1, "throughput_ips": 1},
        {"backend": "ort", "precision": "int8", "batch": 1, "p50_ms": 36.0, "p90_ms": 1, "p99_ms": 1, "throughput_ips": 1}]}
    rows = report_mod.speedups(rep)
    assert rows[2]["× vs ORT FP32"] == 2.0 and rows[2]["× vs eager"] == pytest.approx(3.61)
    # a GPU row is compared with the baselines on its own processor only
    gpu = {"backend": "torch", "precision": "fp16", "batch": 1, "p50_ms": 2.0, "p90_ms": 1, "p99_ms": 1,
           "throughput_ips": 1, "ran_on": "cuda:0 (X)", "timer": "cuda-events", "includes_copy": False}
    mixed = {"device": "cuda", "warmup": 3, "results": [dict(r, ran_on="cpu") for r in rep["results"]] + [
        gpu, dict(gpu, precision="fp32", p50_ms=4.0)]}
    rows = report_mod.speedups(mixed)
    assert rows[3]["× vs ORT FP32"] is None and rows[3]["× vs eager"] == 2.0 and rows[2]["× vs eager"] == pytest.approx(3.61)
    table = report_mod.markdown_table(mixed)
    assert "| cuda:0 (X) |" in table and "CUDA events" in table and "not timed" in table
    assert report_mod.accuracy_items({"fp_zeroshot": {"top1": 0.8}, "trained": {"top1": 0.85, "top5": 0.99}}) == [
        ("fp_zeroshot", 0.8), ("trained", 0.85)]
