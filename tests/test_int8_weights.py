"""Weights stored as INT8 codes: the codes are the ones ONNX Runtime's QuantizeLinear computes, the
quantized graphs compute exactly what the FP32-weight form computed, and they are about a quarter
of its size."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from p4q_export.deploy.int8_weights import fold_weight_quantizers, quantize_like_onnx


def _ort_quantize(x: np.ndarray, scale: np.ndarray, axis: int, opset: int) -> np.ndarray:
    dtype = TensorProto.FLOAT16 if x.dtype == np.float16 else TensorProto.FLOAT
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis)
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", dtype, list(x.shape))],
                              [helper.make_tensor_value_info("q", TensorProto.INT8, list(x.shape))],
                              [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.zeros(scale.shape, np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("dtype, opset", [(np.float32, 17), (np.float16, 21)])
def test_codes_are_onnx_runtimes_own(dtype, opset):
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (64, 48)).astype(np.float32)
    scale = (np.abs(w).max(axis=1) / 127).astype(np.float32)
    # exact ties (k + 1/2 steps) round half to even; values past the range saturate
    w[0, :8] = (np.arange(8) - 3.5) * scale[0]
    w[1, :2] = [200 * scale[1], -200 * scale[1]]
    w, scale = w.astype(dtype), scale.astype(dtype)
    ours = quantize_like_onnx(w, scale, np.zeros(scale.shape, np.int8), axis=0)
    theirs = _ort_quantize(w, scale, 0, opset)
    assert np.array_equal(ours, theirs)
    assert ours[1, 0] == 127 and ours[1, 1] == -128
    if dtype == np.float32:
        assert ours[0, :8].tolist() == [-4, -2, -2, 0, 0, 2, 2, 4]  # half to even


def test_fold_replaces_weight_quantizers_only(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, (8, 4)).astype(np.float32)
    ws = (np.abs(w).max(axis=1) / 127).astype(np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "z0"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "z0"], ["xd"]),
        helper.make_node("QuantizeLinear", ["w", "ws", "zw"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "ws", "zw"], ["wd"], axis=0),
        helper.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["xd", "wt"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(ws, "ws"),
             numpy_helper.from_array(np.zeros(8, np.int8), "zw"), numpy_helper.from_array(np.float32(0.02), "xs"),
             numpy_helper.from_array(np.int8(0), "z0")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(0, 1, (5, 4)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    before = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert fold_weight_quantizers(model) == 1
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 1  # the activation's stays
    names = {t.name: t for t in model.graph.initializer}
    assert "w" not in names and names["wq"].data_type == TensorProto.INT8
    after = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(before, after)


def test_the_bundles_quantized_graphs_hold_int8_weights(random_testbed_bundle):
    """The test bed's bundle: every weight an INT8 initializer within TensorRT's [-127, 127], no
    weight QuantizeLinear left, and the INT8 graph under 0.3× the bytes of its FP32 twin. (That it
    computes what the reference computes is `validate`'s test, on this form now.)"""
    from p4q_export.deploy.bundle import load_bundle
    from p4q_export.deploy.int8_weights import INT8_MIN
    from p4q_export.deploy.qdq import strip_qdq

    bundle = load_bundle(random_testbed_bundle)
    for precision in ("int8", "int8-fp16"):
        model = onnx.load(str(bundle.graph_path(precision)))
        inits = {t.name: t for t in model.graph.initializer}
        weight_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
        int8_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
        assert not weight_q and len(int8_dq) == bundle.graphs[precision]["quantized_layers"] > 0
        assert all(inits[n.input[0]].data_type == TensorProto.INT8 for n in int8_dq)
        assert all(numpy_helper.to_array(inits[n.input[0]]).min() > INT8_MIN for n in int8_dq)
        float_weights = [t for t in model.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
                         and len(t.dims) == 2 and t.dims[0] * t.dims[1] >= 128 * 128]
        assert not float_weights, [t.name for t in float_weights]  # no quantized layer kept its float weight
    fp32 = strip_qdq(onnx.load(str(bundle.onnx_path)))
    assert bundle.onnx_path.stat().st_size <= 0.3 * len(fp32.SerializeToString())
