"""The `trt` backend. Without TensorRT it must fail as a one-line install hint; with TensorRT and
a GPU, a built engine must match ONNX Runtime's exact Q/DQ arithmetic on the tiny bundle."""

import json

import numpy as np
import pytest

from p4q_export.errors import UserError
from p4q_export.runtime.trt_engine import trt_available

needs_trt = pytest.mark.skipif(not trt_available(), reason="TensorRT is not installable on this machine (no NVIDIA index, no GPU)")


@pytest.fixture
def tiny_bundle(tmp_path):
    from test_bench_run import make_tiny_bundle

    return make_tiny_bundle(tmp_path / "tiny")


@pytest.mark.skipif(trt_available(), reason="checks the message shown where TensorRT is missing")
def test_trt_backend_without_tensorrt_says_how_to_install(tiny_bundle):
    from p4q_export.runtime.base import open_runner

    with pytest.raises(UserError, match="pypi.nvidia.com"):
        open_runner(tiny_bundle, "trt")


@pytest.mark.skipif(trt_available(), reason="checks the message shown where TensorRT is missing")
def test_bench_lists_trt_as_skipped_without_tensorrt(tiny_bundle, monkeypatch):
    from p4q_export.bench import run

    monkeypatch.setattr(run, "check_device", lambda device, gpu="cuda": None)  # pretend there is a GPU
    rep = run.run_bench(run.BenchRequest(bundle=tiny_bundle, device="cuda", batches=[1], iterations=1, warmup=0,
                                         backends=["trt/int8"]))
    assert rep["results"] == [] and rep["skipped"][0]["backend"] == "trt"
    assert "pypi.nvidia.com" in rep["skipped"][0]["reason"]


@needs_trt
@pytest.mark.tensorrt
def test_build_load_and_match_ort_exact(tiny_bundle, cli):
    proc = cli("build-engine", str(tiny_bundle), "--int8", "--batch", "1,2,4", "--no-validate", "--json")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["engine"]
    assert (tiny_bundle / "deploy" / entry["path"]).is_file() and entry["tensorrt"] and entry["compute_capability"]
    manifest = json.loads((tiny_bundle / "deploy" / "manifest.json").read_text())
    assert manifest["engines"][0]["path"] == entry["path"] and entry["path"] in manifest["files"]

    from p4q_export.runtime.base import open_runner

    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8), dtype=np.float32)
    trt_out = open_runner(tiny_bundle, "trt")(x)
    # the graph the engine was built from (int8-fp16 on TensorRT 10/11), run exactly by ORT
    graph = entry["precision"] if entry["precision"] in json.loads((tiny_bundle / "deploy" / "manifest.json").read_text())["graphs"] else "int8"
    ort_out = open_runner(tiny_bundle, "ort-exact", precision=graph)(x)
    # the same INT8 codes: per-image cosine ~1, differences far below one quantization step
    cos = (trt_out * ort_out).sum(1) / (np.linalg.norm(trt_out, axis=1) * np.linalg.norm(ort_out, axis=1))
    assert cos.min() >= 0.9999
    np.testing.assert_allclose(trt_out, ort_out, rtol=0, atol=1e-3 * np.abs(ort_out).max())
    assert (trt_out.argmax(1) == ort_out.argmax(1)).mean() >= 0.98


@needs_trt
@pytest.mark.tensorrt
def test_engine_from_another_gpu_is_refused(tiny_bundle, cli):
    assert cli("build-engine", str(tiny_bundle), "--int8", "--batch", "1,1,2", "--no-validate").returncode == 0
    m = json.loads((tiny_bundle / "deploy" / "manifest.json").read_text())
    m["engines"][0]["gpu"] = "Some Other GPU"
    from p4q_export.deploy.bundle import seal

    (tiny_bundle / "deploy" / "manifest.json").write_text(json.dumps(seal(m)))  # an engine entry as if recorded there
    from p4q_export.runtime.trt_runner import TrtRunner

    with pytest.raises(UserError, match="Rebuild"):
        TrtRunner(tiny_bundle, engine_path=m["engines"][0]["path"])
