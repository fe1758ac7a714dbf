"""`export` of a bare MODEL (the test-bed architecture with random weights: fast, no pretraining)
through the real CLI: graph structure, manifest, hashes, refusals and the atomic write."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from p4q_export.deploy.bundle import load_bundle
from p4q_export.errors import UserError

TESTBED_LAYERS = 4 * 4 + 1  # 4 blocks × (qkv, out, fc, proj) + the visual projection


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("export") / "bundle"
    proc = run_cli("--json", "export", "p4q-testbed", "--data", "fashion-mnist", "--out", str(out), "--calib-images", "128", check=True)
    return out, json.loads(proc.stdout)


def _zero_points(model):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def test_graph_has_qdq_on_every_quantized_layer(bundle):
    out, result = bundle
    model = onnx.load(str(out / "validation" / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert result["quantized_layers"] == TESTBED_LAYERS
    ops = [n.op_type for n in model.graph.node]
    # activations: Q -> DQ; weights: an INT8 initializer -> DQ (its Q computed at export)
    assert ops.count("DequantizeLinear") == 2 * TESTBED_LAYERS and ops.count("QuantizeLinear") == TESTBED_LAYERS
    inits = {t.name: t for t in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weight_dq) == TESTBED_LAYERS and all(inits[n.input[0]].data_type == onnx.TensorProto.INT8 for n in weight_dq)
    assert "LayerNormalization" in ops and "DynamicQuantizeLinear" not in ops
    q_outputs = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    consumers = [n for n in model.graph.node if set(n.input) & q_outputs]
    assert {n.op_type for n in consumers} == {"DequantizeLinear"}  # no Clip between Q and DQ
    assert model.opset_import[0].version >= 17
    zps = _zero_points(model)
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    # image → logits (+ the embedding, exported by default), dynamic batch; the folded head is the last MatMul
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits", "embedding"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    last = next(n for n in reversed(model.graph.node) if n.output[0] == "logits")
    assert last.op_type == "MatMul"


def test_manifest_records_everything_and_hashes_verify(bundle):
    out, _ = bundle
    m = json.loads((out / "deploy" / "manifest.json").read_text())
    for key in ("model", "profile", "classnames", "preprocessing", "inputs", "outputs", "versions", "files", "accuracy", "reference"):
        assert key in m, key
    assert m["profile"]["name"] == "trt" and len(m["classnames"]) == 10
    assert m["preprocessing"]["mean"] and m["preprocessing"]["folded_into_graph"] is False
    assert m["inputs"][0] == {**m["inputs"][0], "name": "image", "dtype": "float32", "shape": ["batch", 3, 32, 32]}
    assert m["outputs"][0]["shape"] == ["batch", 10]
    # deploy/: what a device runs; validation/: what only validate reads
    assert set(m["files"]) == {"model.int8-fp16.onnx", "classnames.txt"}
    rest = set(m["validation"]["files"]) - {"model.onnx", "model.fp16.onnx", "reference.pt"}
    assert len(rest) == 1 and rest.pop().startswith("calibration-fashion-mnist")
    assert m["graphs"]["int8-fp16"]["folder"] == "deploy" and m["graphs"]["int8"]["folder"] == "validation"
    assert sorted(p.name for p in (out / "deploy").iterdir()) == ["classnames.txt", "manifest.json", "model.int8-fp16.onnx"]
    assert m["sizes"]["deploy_bytes"] == sum((out / "deploy" / f).stat().st_size for f in m["files"])
    assert m["sizes"]["validation_bytes"] == sum((out / "validation" / f).stat().st_size for f in m["validation"]["files"])
    assert all(len(v["sha256"]) == 64 for v in [*m["files"].values(), *m["validation"]["files"].values()])
    assert "torch" in m["versions"] and "onnx" in m["versions"]
    load_bundle(out)  # verifies every hash


def test_reference_and_ort_exact_agree(bundle):
    from p4q_export.data import load_dataset
    from p4q_export.runtime import open_runner
    from p4q_export.runtime.inputs import dataset_inputs

    out, _ = bundle
    b = load_bundle(out)
    ds = load_dataset("fashion-mnist", "test").subset(range(64))
    x = dataset_inputs(b, ds)
    ref = open_runner(b, "torch").run_all(x)
    ort_exact = open_runner(b, "ort-exact", precision="int8").run_all(x)
    fp32 = open_runner(b, "ort-exact", precision="fp32").run_all(x)
    assert ref["logits"].shape == ort_exact["logits"].shape == (64, 10)

    def cosine(a, b):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    # random weights make the logits nearly flat: the embedding is what the INT8 tower computes.
    # Same Q/DQ arithmetic → the same embedding; the FP32 twin differs by quantization only, which
    # moves it several times more than any difference between the two INT8 backends
    backend_gap = 1 - cosine(ref["embedding"], ort_exact["embedding"])
    quant_gap = 1 - cosine(fp32["embedding"], ort_exact["embedding"])
    assert backend_gap.max() <= 1e-4  # a code may flip where float summation orders differ at a tie
    assert (backend_gap <= 1e-6).mean() >= 0.5  # most images: the very same embedding
    assert quant_gap.mean() > 5 * max(backend_gap.mean(), 1e-7)
    assert (ref["logits"].argmax(1) == ort_exact["logits"].argmax(1)).mean() >= 0.95


def test_uint8_input_bundle_folds_preprocessing(tmp_path, cli):
    out = tmp_path / "u8"
    proc = cli("--json", "export", "p4q-testbed", "--data", "digits", "--out", str(out), "--calib-images", "64",
               "--uint8-input", "--no-embedding", "--profile", "ort-x86", check=True)
    assert json.loads(proc.stdout)["uint8_input"] is True
    model = onnx.load(str(out / "deploy" / "model.onnx"))  # ort-x86: the int8 graph is the deploy graph
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in model.graph.output] == ["logits"]  # --no-embedding
    m = load_bundle(out).manifest
    assert m["preprocessing"]["folded_into_graph"] is True and m["profile"]["name"] == "ort-x86"
    assert m["inputs"][0]["dtype"] == "uint8"


def test_paper_profile_is_refused_and_nothing_is_written(tmp_path, cli):
    out = tmp_path / "paper"
    proc = cli("export", "p4q-testbed", "--data", "fashion-mnist", "--out", str(out), "--profile", "paper")
    assert proc.returncode == 2
    assert "not deployable" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".paper*"))


def test_existing_bundle_is_not_overwritten_without_force(bundle, cli):
    out, _ = bundle
    proc = cli("export", "p4q-testbed", "--data", "fashion-mnist", "--out", str(out))
    assert proc.returncode == 2 and "--force" in proc.stderr


def test_changed_or_truncated_files_are_user_errors(bundle, tmp_path, cli):
    import shutil

    out, _ = bundle
    for name, damage in (("changed", lambda p: p.write_text(p.read_text().replace("bag", "bog"))),
                         ("truncated", None)):
        copy = tmp_path / name
        shutil.copytree(out, copy)
        if damage:
            damage(copy / "deploy" / "classnames.txt")
        else:  # a validation file that is there is checked on load like a deploy file
            data = (copy / "validation" / "model.onnx").read_bytes()
            (copy / "validation" / "model.onnx").write_bytes(data[: len(data) // 2])
        with pytest.raises(UserError, match="changed after export"):
            load_bundle(copy)
        proc = cli("validate", str(copy), "--data", "fashion-mnist", "--limit", "10")
        assert proc.returncode == 2 and "changed after export" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not list(copy.rglob("validation*.json"))


def test_export_eval_and_train_calibrate_on_the_same_sample(tmp_path):
    """`export MODEL`, `eval --quant` and `train` share one calibration definition (1,280 seeded
    training images), so the bundle's PTQ is the one eval reports; eval leaves no file behind."""
    from conftest import REPO, run_cli

    from p4q_export.config import CALIB_IMAGES, TrainRecipe
    from p4q_export.tasks.evaluate import EvalRequest

    assert TrainRecipe().calib_images == EvalRequest(target="x").calib_images == CALIB_IMAGES == 1280
    out = tmp_path / "bundle"
    run_cli("--json", "export", "p4q-testbed", "--data", "digits", "--out", str(out), "--device", "cpu", check=True)
    ptq = load_bundle(out).manifest["ptq"]
    before = sorted((REPO / "calibration").iterdir())
    proc = run_cli("--json", "eval", "p4q-testbed", "--data", "digits", "--quant", "trt", "--limit", "50", "--device", "cpu",
                   check=True)
    q = json.loads(proc.stdout)["quantization"]
    assert ptq["n_calib"] == q["n_calib"] == CALIB_IMAGES
    assert ptq["calibration_sha256"] == q["calibration_sha256"]
    assert sorted((REPO / "calibration").iterdir()) == before
