"""The `trt` backend on a bundle `export` wrote (the test bed's architecture, random weights).
Without TensorRT it must fail as a one-line install hint; with TensorRT and a GPU, the default
strongly typed int8-fp16 engine must match ONNX Runtime on the same graph, and `validate --backend
trt` must pass against the PyTorch reference."""

import json
from pathlib import Path

import numpy as np
import pytest

from p4q_export.errors import UserError
from p4q_export.runtime.trt_engine import trt_available

needs_trt = pytest.mark.skipif(not trt_available(), reason="TensorRT is not installable on this machine (no NVIDIA index, no GPU)")


@pytest.fixture
def tiny_bundle(random_testbed_bundle, tmp_path):
    """A copy of a real export: engines and manifest edits stay out of the session's bundle."""
    import shutil

    return Path(shutil.copytree(random_testbed_bundle, tmp_path / "bundle"))


@pytest.mark.skipif(trt_available(), reason="checks the message shown where TensorRT is missing")
def test_trt_backend_without_tensorrt_says_how_to_install(tiny_bundle):
    from p4q_export.runtime.base import open_runner

    with pytest.raises(UserError, match=r"p4q-export\[trt10-cu12\]"):
        open_runner(tiny_bundle, "trt")


@pytest.mark.skipif(trt_available(), reason="checks the message shown where TensorRT is missing")
def test_bench_lists_trt_as_skipped_without_tensorrt(tiny_bundle, monkeypatch):
    from p4q_export.bench import run

    monkeypatch.setattr(run, "check_device", lambda device, gpu="cuda": None)  # pretend there is a GPU
    rep = run.run_bench(run.BenchRequest(bundle=tiny_bundle, device="cuda", batches=[1], iterations=1, warmup=0,
                                         backends=["trt/int8"]))
    assert rep["results"] == [] and rep["skipped"][0]["backend"] == "trt"
    assert "p4q-export[trt10-cu12]" in rep["skipped"][0]["reason"]


@needs_trt
@pytest.mark.tensorrt
def test_build_load_and_match_ort_exact(tiny_bundle, cli):
    proc = cli("build-engine", str(tiny_bundle), "--int8", "--batch", "1,2,4", "--no-validate", "--json")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["engine"]
    assert (tiny_bundle / "deploy" / entry["path"]).is_file() and entry["tensorrt"] and entry["compute_capability"]
    manifest = json.loads((tiny_bundle / "deploy" / "manifest.json").read_text())
    assert manifest["engines"][0]["path"] == entry["path"] and entry["path"] in manifest["files"]

    from p4q_export.data import load_dataset
    from p4q_export.deploy.bundle import load_bundle
    from p4q_export.runtime.base import open_runner
    from p4q_export.runtime.inputs import dataset_input_batches

    bundle = load_bundle(tiny_bundle)
    assert entry["precision"] == "int8-fp16" and entry["build_options"]["strongly_typed"]  # TensorRT 10 and 11
    x = np.concatenate(list(dataset_input_batches(bundle, load_dataset("fashion-mnist", "test"), 64, indices=np.arange(64))))
    trt_out = open_runner(bundle, "trt").run_all(x)["embedding"]
    # the graph the engine was built from, run by ORT with exact Q/DQ: the same INT8 codes, FP16
    # elsewhere (kernels differ: the project's validation bar, not bit equality)
    ort_out = open_runner(bundle, "ort-exact", precision="int8-fp16").run_all(x)["embedding"]
    cos = (trt_out * ort_out).sum(1) / (np.linalg.norm(trt_out, axis=1) * np.linalg.norm(ort_out, axis=1))
    assert cos.min() >= 0.999


@needs_trt
@pytest.mark.tensorrt
def test_validate_backend_trt_passes_against_the_reference(tiny_bundle, cli):
    assert cli("build-engine", str(tiny_bundle), "--int8", "--batch", "1,8,32", "--no-validate").returncode == 0
    r = json.loads(cli("--json", "validate", str(tiny_bundle), "--backend", "trt", "--data", "fashion-mnist", "--limit", "256",
                       check=True).stdout)
    assert r["backend"] == "trt" and r["precision"] == "int8-fp16" and r["passed"] is True
    assert r["cosine_min"] >= 0.999 and r["n"] == 256


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
