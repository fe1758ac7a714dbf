"""The graphs a bundle carries by precision (int8, int8-fp16, the FP16 twin): what each computes
in which type, the TensorRT lint on them (including the faults it must catch), and validation of
each against the PyTorch reference on real Fashion-MNIST images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from p4q_export.deploy.bundle import load_bundle
from p4q_export.deploy.precision import FP32_OPS, graphs_for, head_nodes, tensor_types
from p4q_export.deploy.trt_lint import (
    check_trt_compatible,
    lint_model,
    lint_precision,
    module_of,
)
from p4q_export.errors import CheckFailed


@pytest.fixture(scope="module")
def bundle(testbed_model, tmp_path_factory):
    """The pretrained test bed exported for TensorRT at the default precision (int8-fp16)."""
    from conftest import run_cli

    out = tmp_path_factory.mktemp("prec") / "bundle"
    run_cli("--json", "export", str(testbed_model), "--out", str(out), "--data", "fashion-mnist", "--calib-images", "256", check=True)
    return out


def test_trt_bundle_carries_the_deploy_graph_the_int8_graph_and_the_fp16_twin(bundle):
    manifest = json.loads((bundle / "deploy" / "manifest.json").read_text())
    assert manifest["precision"] == "int8-fp16"
    assert set(manifest["graphs"]) == {"int8", "int8-fp16", "fp16"}
    for entry in manifest["graphs"].values():
        listed = manifest["files"] if entry["folder"] == "deploy" else manifest["validation"]["files"]
        assert entry["file"] in listed and entry["trt_lint"] == "passed"
    assert [k for k, e in manifest["graphs"].items() if e["folder"] == "deploy"] == ["int8-fp16"]
    g = manifest["graphs"]
    assert g["int8"]["qdq_pairs"] == g["int8-fp16"]["qdq_pairs"] == 2 * g["int8"]["quantized_layers"] > 0
    assert g["fp16"]["qdq_pairs"] == 0 and g["fp16"]["quantized"] is False
    assert g["int8-fp16"]["opset"] == 19 and g["int8-fp16"]["fp16_compute_nodes"] > 0


@pytest.mark.parametrize("key", ["int8-fp16", "fp16"])
def test_fp16_graphs_keep_layernorm_softmax_normalization_and_logits_in_fp32(bundle, key):
    model = onnx.load(str(load_bundle(bundle).graph_path(key)))
    types = tensor_types(model)
    fp32, fp16 = TensorProto.FLOAT, TensorProto.FLOAT16
    islands = [n for n in model.graph.node if n.op_type in FP32_OPS]
    assert {n.op_type for n in islands} == set(FP32_OPS)
    assert all(types[n.output[0]] == fp32 for n in islands)
    head = set(head_nodes(model))
    logits_mm = next(n for n in model.graph.node if n.output[0] == "logits" or ("logits" in n.output and n.op_type == "MatMul"))
    assert logits_mm.name in head and types[logits_mm.input[0]] == fp32
    # everything else that multiplies runs in FP16
    mm = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and n.name not in head]
    assert mm and all(types[n.output[0]] == fp16 for n in mm)
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [fp32, fp32]
    assert lint_precision(model, sorted(head)) == []
    if key == "int8-fp16":  # Q/DQ in FP16 (ModelOpt's form), each Q feeding its DQ directly
        qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert qs and all(types[n.input[0]] == fp16 for n in qs)
        assert check_trt_compatible(model).ok


@pytest.mark.parametrize("precision", ["int8-fp16", "fp16"])
def test_every_graph_validates_against_the_reference_on_500_images(bundle, cli, precision):
    r = json.loads(cli("--json", "validate", str(bundle), "--precision", precision, "--data", "fashion-mnist",
                       "--limit", "500", check=True).stdout)
    assert r["n"] == 500 and r["precision"] == precision and r["passed"]
    assert r["cosine_min"] >= 0.999 and r["top1_agreement"] >= 0.99
    # the FP16 twin is compared with the unquantized network, the int8-fp16 graph with the fake-quant one
    assert ("quantizers off" in r["reference"]) == (precision == "fp16")
    name = "validation.json" if precision == "int8-fp16" else f"validation.{precision}.json"
    assert json.loads((bundle / "deploy" / name).read_text())["precision"] == precision
    if precision == "int8-fp16":  # eval of a bundle scores the deploy graph, on the same 500 images
        e = json.loads(cli("--json", "eval", str(bundle), "--data", "fashion-mnist", "--limit", "500", check=True).stdout)
        assert e["precision"] == "int8-fp16" and e["top1"] == r["accuracy"]["ort-exact"]["top1"]


def test_export_precision_int8_writes_no_fp16_deploy_graph_and_bad_precision_is_exit_2(testbed_model, tmp_path, cli):
    assert graphs_for("int8") == ("int8", "fp16") and graphs_for("int8-fp16") == ("int8-fp16", "int8", "fp16")
    proc = cli("--json", "export", str(testbed_model), "--out", str(tmp_path / "b"), "--data", "fashion-mnist",
               "--calib-images", "64", "--precision", "fp8")
    assert proc.returncode == 2 and "--precision" in proc.stderr and not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------- the lint on small graphs

def _linear(cast_between: bool = False, name: str = "/visual/blocks.0/fc/MatMul") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(np.float32(0.05), "xs"), numpy_helper.from_array(np.int8(0), "xz"),
             numpy_helper.from_array((np.abs(w).max(1) / 127).astype(np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"), numpy_helper.from_array(w, "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"])]
    src = "xq"
    if cast_between:
        nodes.append(helper.make_node("Cast", ["xq"], ["xq_c"], to=TensorProto.INT8))
        src = "xq_c"
    nodes += [helper.make_node("DequantizeLinear", [src, "xs", "xz"], ["xd"]),
              helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0),
              helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
              helper.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0]),
              helper.make_node("MatMul", ["xd", "wt"], ["y"], name=name)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_lint_catches_a_cast_between_q_and_dq():
    assert lint_model(_linear()).ok
    report = lint_model(_linear(cast_between=True))
    assert any("Cast between QuantizeLinear and its DequantizeLinear" in v for v in report.violations)
    with pytest.raises(CheckFailed, match="Cast between"):
        check_trt_compatible(_linear(cast_between=True))


def test_lint_catches_quantization_of_a_layer_the_profile_keeps_fp():
    assert module_of("/visual/blocks.0/fc/MatMul") == "visual.blocks.0.fc"
    assert lint_model(_linear(), quantized_modules={"visual.blocks.0.fc"}).ok
    kept_fp = lint_model(_linear(), quantized_modules=set())
    assert any("'visual.blocks.0.fc' has Q/DQ but the profile keeps it in floating point" in v for v in kept_fp.violations)
    missing = lint_model(_linear(), quantized_modules={"visual.blocks.0.fc", "visual.conv1"})
    assert any("'visual.conv1' is quantized in the reference but has no Q/DQ" in v for v in missing.violations)


def test_lint_catches_layernorm_and_outputs_in_fp16():
    h = TensorProto.FLOAT16
    nodes = [helper.make_node("Cast", ["x"], ["xh"], to=h),
             helper.make_node("LayerNormalization", ["xh", "g", "b"], ["yh"], name="ln"),
             helper.make_node("Identity", ["yh"], ["y"])]
    inits = [numpy_helper.from_array(np.ones(8, np.float16), "g"), numpy_helper.from_array(np.zeros(8, np.float16), "b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", h, ["n", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    violations = lint_precision(model)
    assert any("LayerNormalization 'ln': computes in float16, must stay FP32" in v for v in violations)
    assert any("output 'y' is float16, must be FP32" in v for v in violations)
