"""The static TensorRT-compatibility lint on small graphs built by hand: a clean one passes, each
deliberately broken one fails with a message that names the problem."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from p4q_export.deploy.qdq import strip_qdq
from p4q_export.deploy.trt_lint import check_trt_compatible, lint_model
from p4q_export.errors import CheckFailed

D_IN, D_OUT = 8, 4


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def build(*, zp_dtype=np.int8, zp_value=0, w_axis=0, act_per_channel=False, clip_between=False,
          qdq_before_add=False, extra_node=None, weight_scale=None, dynamic_quant=False, quantize_weight=True,
          int8_weight=False):
    """x[N, D_IN] → Q/DQ → MatMul(W^T via Q/DQ(W) + Transpose) → Add(bias) → y. Options break it."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((D_OUT, D_IN)).astype(np.float32)
    w_scale = weight_scale if weight_scale is not None else (np.abs(w).max(axis=1) / 127).astype(np.float32)
    inits = [
        _init("x_scale", np.float32(0.05)),
        _init("x_zp", np.array(zp_value, dtype=zp_dtype)),
        _init("w_scale", w_scale),
        _init("w_zp", np.zeros(D_OUT, dtype=np.int8)),
        _init("bias", np.zeros(D_OUT, np.float32)),
    ]
    nodes = []
    if dynamic_quant:
        nodes.append(helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]))
        nodes.append(helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xdq"]))
    else:
        x_scale = "x_scale"
        if act_per_channel:
            inits.append(_init("x_scale_c", np.full(D_IN, 0.05, np.float32)))
            inits.append(_init("x_zp_c", np.zeros(D_IN, np.int8)))
        qargs = ["x", "x_scale_c", "x_zp_c"] if act_per_channel else ["x", x_scale, "x_zp"]
        attrs = {"axis": 1} if act_per_channel else {}
        nodes.append(helper.make_node("QuantizeLinear", qargs, ["xq"], **attrs))
        src = "xq"
        if clip_between:
            inits += [_init("lo", np.int8(-100)), _init("hi", np.int8(100))]
            nodes.append(helper.make_node("Clip", ["xq", "lo", "hi"], ["xq_c"]))
            src = "xq_c"
        nodes.append(helper.make_node("DequantizeLinear", [src, qargs[1], qargs[2]], ["xdq"], **attrs))
    if int8_weight:
        inits.append(_init("w_q", np.clip(np.round(w / w_scale[:, None]), -128, 127).astype(np.int8)))
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["wdq"], axis=w_axis))
    elif quantize_weight:
        inits.append(_init("w", w))
        nodes.append(helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zp"], ["wq"], axis=w_axis))
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wdq"], axis=w_axis))
    else:
        inits.append(_init("wdq", w))
    nodes.append(helper.make_node("Transpose", ["wdq"], ["wt"], perm=[1, 0]))
    nodes.append(helper.make_node("MatMul", ["xdq", "wt"], ["mm"]))
    if qdq_before_add:
        nodes.append(helper.make_node("QuantizeLinear", ["mm", "x_scale", "x_zp"], ["mq"]))
        nodes.append(helper.make_node("DequantizeLinear", ["mq", "x_scale", "x_zp"], ["mdq"]))
        nodes.append(helper.make_node("Add", ["mdq", "bias"], ["y"]))
    else:
        nodes.append(helper.make_node("Add", ["mm", "bias"], ["y"]))
    if extra_node:
        nodes[-1].output[0] = "y0"
        nodes.append(helper.make_node(extra_node, ["y0"], ["y"]))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", D_OUT])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_clean_graph_passes_and_is_valid_onnx():
    m = build()
    onnx.checker.check_model(m, full_check=True)
    report = check_trt_compatible(m, expected_layers=1)
    assert report.ok and report.quantized_layers and report.qdq_pairs == 2


def test_int8_initializer_weight_form_passes():
    assert lint_model(build(int8_weight=True)).ok


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"zp_value": 3}, "zero point must be 0"),
        ({"zp_dtype": np.uint8, "zp_value": 0}, "TensorRT needs int8"),
        ({"w_axis": 1, "weight_scale": np.full(D_IN, 0.02, np.float32)}, "axis 1"),
        ({"act_per_channel": True}, "per-channel scale on an activation"),
        ({"clip_between": True}, "must feed DequantizeLinear directly"),
        ({"qdq_before_add": True}, "only around MatMul/Gemm/Conv"),
        ({"dynamic_quant": True}, "DynamicQuantizeLinear"),
        ({"extra_node": "NonMaxSuppression"}, "not on the supported-ops list"),
        ({"weight_scale": np.full(D_OUT, 1e-3, np.float32)}, "outside [-127, 127]"),
        ({"quantize_weight": False}, "only one of input/weight is quantized"),
    ],
)
def test_broken_graphs_fail_with_a_clear_message(kwargs, message):
    m = build(**kwargs)
    report = lint_model(m)
    assert not report.ok
    assert any(message in v for v in report.violations), report.violations
    with pytest.raises(CheckFailed, match="not TensorRT-compatible"):
        check_trt_compatible(m)


def test_expected_layer_count_is_enforced():
    with pytest.raises(CheckFailed, match="expected 2"):
        check_trt_compatible(build(), expected_layers=2)


def test_strip_qdq_gives_the_fp32_graph():
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((3, D_IN)).astype(np.float32)
    for m in (build(), build(int8_weight=True)):
        stripped = strip_qdq(m)
        onnx.checker.check_model(stripped, full_check=True)
        ops = {n.op_type for n in stripped.graph.node}
        assert not ops & {"QuantizeLinear", "DequantizeLinear"}
        sess = ort.InferenceSession(stripped.SerializeToString(), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"x": x})[0]
        inits = {t.name: numpy_helper.to_array(t) for t in stripped.graph.initializer}
        w = next(v for k, v in inits.items() if v.shape == (D_OUT, D_IN))
        np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)
    assert len(build().graph.node) > len(strip_qdq(build()).graph.node)  # input untouched, copy changed
