"""The bundle's two folders (deploy/ for the device, validation/ for `validate`), a deploy folder
copied alone, and a bundle written before the split by an earlier p4q-export.

tests/data/bundle-p4q-bundle-1.tar.xz was written by p4q-export at commit 99bd8a2 (flat folder,
FP32 weight initializers -> QuantizeLinear -> DequantizeLinear) with
`p4q-export export p4q-testbed --data fashion-mnist --calib-images 64`, the arguments of the
random_testbed_bundle fixture: the same network, calibration and codes.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import REPO, run_cli

from p4q_export.deploy.bundle import FLAT_FORMAT, load_bundle
from p4q_export.errors import UserError

OLD_BUNDLE = REPO / "tests" / "data" / "bundle-p4q-bundle-1.tar.xz"
IMAGE = REPO / "docs" / "glyphs-contact-sheet.png"


@pytest.fixture
def old_bundle(tmp_path) -> Path:
    with tarfile.open(OLD_BUNDLE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "oldbundle"


def test_old_flat_bundle_loads_validates_predicts_and_evaluates(old_bundle):
    b = load_bundle(old_bundle)  # every hash verified, as when it was written
    assert b.manifest["format"] == FLAT_FORMAT and b.path == old_bundle and b.precision == "int8-fp16"
    graph = onnx.load(str(b.onnx_path)).graph
    inits = {t.name for t in graph.initializer}
    # the old form: every DequantizeLinear reads a QuantizeLinear (FP32 weights quantized in the graph)
    assert not [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    proc = run_cli("--json", "validate", str(old_bundle), "--data", "fashion-mnist", "--limit", "64", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["passed"] and report["precision"] == "int8-fp16" and (old_bundle / "validation.json").is_file()
    proc = run_cli("--json", "predict", str(old_bundle), str(IMAGE), "--top-k", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = json.loads(proc.stdout)["predictions"][0]
    assert len(pred["labels"]) == 2 and set(pred["labels"]) <= set(b.classnames)
    proc = run_cli("--json", "eval", str(old_bundle), "--data", "fashion-mnist", "--limit", "64")
    assert proc.returncode == 0 and json.loads(proc.stdout)["n"] == 64


def _basic_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.disable_quant_qdq", "1")
    # ORT's extended fusions pick different kernels for differently shaped graphs; its basic level
    # (constant folding, no fusion) runs each graph as written
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_the_new_graphs_compute_what_the_old_form_did(old_bundle, random_testbed_bundle):
    """Same network, same calibration: the simplified graphs with INT8 weight initializers hold the
    codes the old graphs computed with QuantizeLinear, and compute the same outputs bit for bit."""
    from p4q_export.data import load_dataset
    from p4q_export.runtime.inputs import dataset_input_batches

    old, new = load_bundle(old_bundle), load_bundle(random_testbed_bundle)
    assert old.manifest["ptq"]["calibration_sha256"] == new.manifest["ptq"]["calibration_sha256"]
    x = np.concatenate(list(dataset_input_batches(new, load_dataset("fashion-mnist", "test"), 64, indices=np.arange(64))))
    fp32 = _basic_session(new.onnx_path).run(None, {"image": x})
    a = _basic_session(old.onnx_path).run(None, {"image": x})
    assert all(np.array_equal(u, v) for u, v in zip(a, fp32))
    # the FP16 graphs: the same codes; where the old graph computed the attention scale from the
    # shape in FP16 (three roundings), the simplified one holds the constant rounded once, so it
    # lies at least as close to the FP32 arithmetic
    a = _basic_session(old.graph_path("int8-fp16")).run(None, {"image": x})[1]
    b = _basic_session(new.graph_path("int8-fp16")).run(None, {"image": x})[1]
    assert np.abs(b - fp32[1]).mean() <= np.abs(a - fp32[1]).mean()
    assert new.onnx_path.stat().st_size <= 0.3 * old.onnx_path.stat().st_size  # INT8 codes instead of FP32 weights
    assert len(onnx.load(str(new.onnx_path)).graph.node) <= 0.55 * len(onnx.load(str(old.onnx_path)).graph.node)


def test_a_deploy_folder_copied_alone_predicts_and_validate_says_what_is_missing(random_testbed_bundle, tmp_path):
    device = tmp_path / "on the device" / "clip"
    shutil.copytree(random_testbed_bundle / "deploy", device)
    b = load_bundle(device)
    assert b.validation_dir is None and b.graph_path("int8-fp16").parent == device
    proc = run_cli("--json", "predict", str(device), str(IMAGE))
    assert proc.returncode == 0, proc.stderr[-2000:]
    full = run_cli("--json", "predict", str(random_testbed_bundle), str(IMAGE))
    assert json.loads(proc.stdout)["predictions"] == json.loads(full.stdout)["predictions"]
    proc = run_cli("validate", str(device), "--data", "fashion-mnist", "--limit", "8")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "reference.pt is in the bundle's validation/ folder" in proc.stderr
    assert not (device / "validation.json").exists()
    with pytest.raises(UserError, match="model.fp16.onnx is in the bundle's validation/ folder"):
        b.graph_path("fp16")
    # a trt bundle's deploy folder on a CPU: nothing to time, and bench says why for each pair
    proc = run_cli("--json", "bench", str(device), "--device", "cpu", "--batch", "1", "--iterations", "1", "--warmup", "0",
                   "--out", str(tmp_path / "bench"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    said = [ln for ln in proc.stderr.splitlines() if ln.startswith("skipping ")]
    assert report["results"] == [] and len(said) == len(report["skipped"]) == 4
    assert all("validation/ folder" in ln for ln in said)


def test_every_command_takes_the_bundle_or_its_deploy_folder(random_testbed_bundle):
    assert load_bundle(random_testbed_bundle).path == load_bundle(random_testbed_bundle / "deploy").path
    b = load_bundle(random_testbed_bundle / "deploy")
    assert b.validation_dir == (random_testbed_bundle / "validation").resolve() and b.reference_path.is_file()


def test_a_changed_validation_file_is_refused_on_load(random_testbed_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(random_testbed_bundle, copy)
    with open(copy / "validation" / "reference.pt", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(UserError, match="reference.pt was changed after export"):
        load_bundle(copy)
    (copy / "validation" / "reference.pt").unlink()  # gone: only validate needs it, and says so
    b = load_bundle(copy)
    with pytest.raises(UserError, match="reference.pt is in the bundle's validation/ folder"):
        b.reference_path  # noqa: B018


def test_every_graph_is_simplified_and_holds_no_unused_initializer(random_testbed_bundle):
    """onnxslim folded the exporter's shape arithmetic; nothing is left for ONNX Runtime to remove."""
    b = load_bundle(random_testbed_bundle)
    for precision in b.graphs:
        g = onnx.load(str(b.graph_path(precision))).graph
        ops = [n.op_type for n in g.node]
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        assert [t.name for t in g.initializer if t.name not in used] == [], precision
        assert ops.count("Constant") == 0 and ops.count("Shape") <= 3 and ops.count("Concat") <= 3, (precision, ops)
        assert ops.count("MatMul") >= 17  # the network itself is all there
