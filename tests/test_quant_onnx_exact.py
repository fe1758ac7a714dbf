"""The PyTorch reference quantizes exactly as ONNX QuantizeLinear does (divide by the scale, round
half to even, saturate): on a grid of inputs at rounding ties, ±1 ulp, every code equals ONNX
Runtime's, per tensor and per channel, for signed and unsigned grids. torch's own
fake_quantize_* (a multiply by 1/scale) misses some of them; that is why the reference divides."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from p4q_export.quant import FakeQuantizer

SCALES = np.array([0.1, 0.0137, 3.0 / 7.0, 0.0031, 1.9e-3, 0.7], dtype=np.float32)


def tie_grid(scales: np.ndarray, zero_points: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """[C, N]: for each channel, (k + 0.5 - z)·s for every code k of the grid and beyond, and the
    float32 neighbours one ulp either side."""
    k = np.arange(qmin - 3, qmax + 3, dtype=np.float32) + np.float32(0.5)
    rows = []
    for s, z in zip(scales, zero_points):
        ties = ((k - np.float32(z)) * s).astype(np.float32)
        rows.append(np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))]))
    return np.stack(rows).astype(np.float32)


def ort_codes(x: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, per_channel: bool, unsigned: bool) -> np.ndarray:
    """QuantizeLinear in ONNX Runtime (graph optimizations off: nothing is fused or folded)."""
    zdtype = np.uint8 if unsigned else np.int8
    out_type = TensorProto.UINT8 if unsigned else TensorProto.INT8
    scale = scales if per_channel else scales[:1]
    zp = zero_points.astype(zdtype) if per_channel else zero_points[:1].astype(zdtype)
    node = helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], axis=0)
    graph = helper.make_graph(
        [node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("q", out_type, list(x.shape))],
        initializer=[numpy_helper.from_array(scale.reshape(-1) if per_channel else scale.reshape(()), "scale"),
                     numpy_helper.from_array(zp.reshape(-1) if per_channel else zp.reshape(()), "zp")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0].astype(np.int64)


def torch_codes(out: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor) -> np.ndarray:
    """The codes behind a fake-quantized tensor: (x̂ / s) + z is an integer up to float error."""
    return torch.round(out / scales[:, None] + zero_points[:, None].float()).long().numpy()


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("unsigned", [False, True])
def test_reference_codes_equal_onnx_quantizelinear_at_ties(per_channel, unsigned):
    qmin, qmax = (0, 255) if unsigned else (-128, 127)
    scales = SCALES if per_channel else SCALES[:1]
    zero_points = np.array([0, 3, 128, 17, 250, 60] if unsigned else [0] * 6, dtype=np.int64)[: len(scales)]
    x = tie_grid(scales, zero_points, qmin, qmax)
    q = FakeQuantizer(8, symmetric=not unsigned, per_channel=per_channel, axis=0)
    q.set_qparams(torch.from_numpy(scales), torch.from_numpy(zero_points))
    xt = torch.from_numpy(x)
    out = q(xt)
    s_t = torch.from_numpy(scales).reshape(-1)
    z_t = torch.from_numpy(zero_points).reshape(-1)
    if not per_channel:
        s_t, z_t = s_t.expand(len(x)), z_t.expand(len(x))
    ours = torch_codes(out, s_t, z_t)
    theirs = ort_codes(x, scales, zero_points, per_channel, unsigned)
    assert ours.min() >= qmin and ours.max() <= qmax
    assert np.array_equal(ours, theirs), f"{int((ours != theirs).sum())} of {ours.size} codes differ"
    # the grid is a real test: torch's multiply-by-reciprocal fake quantization gets some ties wrong
    if per_channel:
        fq = torch.fake_quantize_per_channel_affine(xt, s_t, z_t.int(), 0, qmin, qmax)
    else:
        fq = torch.fake_quantize_per_tensor_affine(xt, float(scales[0]), int(zero_points[0]), qmin, qmax)
    assert (torch_codes(fq, s_t, z_t) != theirs).any()


def test_reference_keeps_torchs_gradient():
    """Straight through inside the grid, zero where the code saturates (as torch.fake_quantize_*)."""
    q = FakeQuantizer(8, symmetric=True)
    q.set_qparams(torch.tensor(0.1), torch.tensor(0))
    x = torch.tensor([0.0, 1.0, -5.0, 12.69, 12.76, -12.81, -12.86, 40.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
