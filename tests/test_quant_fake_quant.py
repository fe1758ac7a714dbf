"""FakeQuantizer against the hand formula (quantize → round → clamp → dequantize), per granularity
and bit width, with the edge cases; gradients; modes."""

from __future__ import annotations

import pytest
import torch

from p4q_export.errors import UserError
from p4q_export.quant import FakeQuantizer, fake_quantize_reference, quant_range

ALL_BITS = list(range(2, 9))


def _calibrated(x, bits, symmetric, per_channel, axis=0, narrow=False, observer="minmax"):
    q = FakeQuantizer(bits, symmetric, per_channel, axis=axis, observer=observer, narrow_range=narrow)
    q.calibrate_from(x)
    return q


def _hand_minmax_qparams(x, bits, symmetric, per_channel, axis, narrow):
    """Independent re-derivation of MinMax scale / zero point with plain Python floats."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        qmin = -qmax if narrow else -qmax - 1
    else:
        qmin, qmax = 0, 2**bits - 1
    rows = x.movedim(axis, 0).reshape(x.shape[axis], -1) if per_channel else x.reshape(1, -1)
    scales, zps = [], []
    for row in rows:
        lo, hi = min(row.min().item(), 0.0), max(row.max().item(), 0.0)
        if symmetric:
            s = max(max(-lo, hi) / qmax, 1e-8)
            z = 0
        else:
            s = max((hi - lo) / (qmax - qmin), 1e-8)
            z = int(min(max(qmin - round(lo / s), qmin), qmax))
        scales.append(s)
        zps.append(z)
    return torch.tensor(scales), torch.tensor(zps), qmin, qmax


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel,axis", [(False, 0), (True, 0), (True, -1)])
def test_fake_quant_matches_hand_reference(bits, symmetric, per_channel, axis):
    g = torch.Generator().manual_seed(bits * 7 + symmetric)
    x = torch.randn(6, 5, 12, generator=g) * torch.linspace(0.1, 3.0, 12)  # channels of different range
    x[0, 0, 0] += 4.0  # an outlier
    narrow = axis == 0 and symmetric  # weights (axis 0) use the narrow symmetric grid
    q = _calibrated(x, bits, symmetric, per_channel, axis, narrow)
    scale, zp, qmin, qmax = _hand_minmax_qparams(x, bits, symmetric, per_channel, axis % 3, narrow)
    assert (q.qmin, q.qmax) == (qmin, qmax)
    torch.testing.assert_close(q.scale.reshape(-1), scale.float(), rtol=1e-6, atol=0)
    assert torch.equal(q.zero_point.reshape(-1).long(), zp.long())
    ref = fake_quantize_reference(x, scale if per_channel else scale[0], zp if per_channel else zp[0], qmin, qmax, axis=axis if per_channel else None)
    out = q(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    # the result lies on the grid: at most 2**bits distinct values per channel
    rows = out.movedim(axis, 0).reshape(x.shape[axis], -1) if per_channel else out.reshape(1, -1)
    assert max(len(torch.unique(r)) for r in rows) <= 2**bits
    # and the error of an in-range value is at most half a step
    err = (out - x).abs().movedim(axis % 3, 0).reshape(x.shape[axis], -1) if per_channel else (out - x).abs().reshape(1, -1)
    step = scale.reshape(-1, 1) if per_channel else scale[0]
    assert bool((err <= step / 2 + 1e-6).all())


def test_grids_documented_ranges():
    assert quant_range(8, True) == (-128, 127)
    assert quant_range(8, True, narrow_range=True) == (-127, 127)
    assert quant_range(7, True, narrow_range=True) == (-63, 63)
    assert quant_range(4, False) == (0, 15)
    assert quant_range(2, True) == (-2, 1)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_all_zero_channel_stays_zero(bits):
    w = torch.randn(4, 9)
    w[2] = 0.0
    q = _calibrated(w, bits, True, True, axis=0, narrow=True)
    assert q.scale[2].item() > 0  # no division by zero
    out = q(w)
    assert torch.equal(out[2], torch.zeros(9))
    assert torch.isfinite(out).all()
    qa = _calibrated(w, bits, False, True, axis=0)
    assert torch.equal(qa(w)[2], torch.zeros(9))


@pytest.mark.parametrize("bits", [3, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_constant_tensor_is_exact(bits, symmetric):
    x = torch.full((3, 5), 0.731)
    q = _calibrated(x, bits, symmetric, False)
    torch.testing.assert_close(q(x), x, rtol=1e-6, atol=1e-7)
    neg = torch.full((3, 5), -2.5)
    qn = _calibrated(neg, bits, symmetric, False)
    torch.testing.assert_close(qn(neg), neg, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bits", [4, 8])
def test_values_at_and_beyond_the_clip_bound(bits):
    q = FakeQuantizer(bits, symmetric=True, per_channel=False)
    scale = 0.05
    q.set_qparams(torch.tensor(scale), torch.tensor(0))
    x = torch.tensor([q.qmax * scale, q.qmin * scale, (q.qmax + 3) * scale, (q.qmin - 3) * scale, 0.0])
    out = q(x)
    expected = torch.tensor([q.qmax * scale, q.qmin * scale, q.qmax * scale, q.qmin * scale, 0.0])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out, fake_quantize_reference(x, scale, 0, q.qmin, q.qmax), rtol=0, atol=1e-7)


def test_asymmetric_zero_point_at_bound_values():
    q = FakeQuantizer(4, symmetric=False, per_channel=False)
    q.set_qparams(torch.tensor(0.1), torch.tensor(3))
    x = torch.tensor([-0.3, 1.2, -0.5, 1.6, 0.0])  # qmin, qmax, below, above, zero
    torch.testing.assert_close(q(x), torch.tensor([-0.3, 1.2, -0.3, 1.2, 0.0]), rtol=1e-6, atol=1e-7)


def test_straight_through_gradient():
    x = torch.randn(4, 8, requires_grad=True)
    for bits in (4, 8):
        q = _calibrated(x.detach(), bits, True, False)
        (q(x) * torch.arange(8.0)).sum().backward()
        torch.testing.assert_close(x.grad, torch.arange(8.0).expand(4, 8))
        x.grad = None


def test_modes_disabled_calibrating_and_uncalibrated():
    x = torch.randn(3, 4)
    q = FakeQuantizer(4, True, False)
    with pytest.raises(RuntimeError, match="calibrat"):
        q(x)
    q.calibrating = True
    y = x * 3
    assert q(x) is x and q(y) is y  # observes, returns its input unchanged
    q.calibrating = False
    q.finalize()
    step = y.abs().max().item() / 7  # 4 bits symmetric: the grid -8..7, from the largest value observed (y's)
    torch.testing.assert_close(q.scale.reshape(()), torch.tensor(step), rtol=1e-7, atol=0)
    assert (q.qmin, q.qmax) == (-8, 7) and int(q.zero_point) == 0
    codes = torch.tensor([max(-8, min(7, round(v / step))) for v in x.flatten().tolist()])
    torch.testing.assert_close(q(x), (codes * step).reshape(x.shape).float(), rtol=0, atol=1e-6)
    assert codes.abs().max() == 2  # x spans a third of the range observed: its largest value is code round(7/3)
    q.enabled = False
    assert q(x) is x


def test_quantizer_state_round_trips_per_channel_shape():
    x = torch.randn(5, 7)
    q = _calibrated(x, 6, False, True, axis=-1)
    fresh = FakeQuantizer(6, False, True, axis=-1)  # channel count unknown yet
    fresh.load_state_dict(q.state_dict())
    torch.testing.assert_close(fresh(x), q(x), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [1, 9, 0, 16, 4.0, "8"])
def test_bits_outside_range_is_user_error(bad):
    with pytest.raises(UserError, match="2 to 8"):
        FakeQuantizer(bad, True, False)


def test_unknown_observer_is_user_error():
    with pytest.raises(UserError, match="unknown observer 'kl'.*minmax, percentile, omse"):
        FakeQuantizer(8, True, False, observer="kl")


def test_calibrating_context_for_any_module():
    """An adapter-like stack of QuantLinear layers calibrates with `calibrating`."""
    from p4q_export.quant import QuantLinear, calibrating, get_profile

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 8))
    x = torch.randn(32, 8)
    with torch.no_grad():
        ref = net(x)
        hidden = torch.relu(net[0](x))  # what the second layer sees while the first is still FP
    lin0, lin2 = net[0], net[2]
    net[0] = QuantLinear.from_linear(net[0], get_profile("trt"))
    net[2] = QuantLinear.from_linear(net[2], get_profile("paper", "4/4"))
    with calibrating(net), torch.no_grad():
        torch.testing.assert_close(net(x), ref)  # FP while observing
    assert net[0].input_quantizer.is_calibrated and net[2].input_quantizer.is_calibrated
    # minmax, symmetric: scale = max|x| / qmax, from the FP activations seen while calibrating
    torch.testing.assert_close(net[0].input_quantizer.scale.reshape(()), x.abs().max() / 127, rtol=0, atol=0)
    torch.testing.assert_close(net[2].input_quantizer.scale.reshape(()), hidden.abs().max() / 7, rtol=0, atol=0)

    def fq(q, t):  # ONNX's QuantizeLinear -> DequantizeLinear, written out, per tensor or per output channel
        s, z = (q.scale.reshape(()), q.zero_point.reshape(())) if q.scale.numel() == 1 else \
            (q.scale.reshape(-1, 1), q.zero_point.reshape(-1, 1))
        return (torch.clamp(torch.round(t / s) + z, q.qmin, q.qmax) - z) * s

    with torch.no_grad():
        out = net(x)
        h = torch.relu(torch.nn.functional.linear(fq(net[0].input_quantizer, x), fq(net[0].weight_quantizer, lin0.weight), lin0.bias))
        expected = torch.nn.functional.linear(fq(net[2].input_quantizer, h), fq(net[2].weight_quantizer, lin2.weight), lin2.bias)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert (out - ref).abs().max() > 1e-3  # and it is quantized: 4-bit W/A moves the output


def test_quant_conv2d_is_quantizelinear_dequantizelinear_per_output_channel():
    """QuantConv2d (the conv towers' layer) with the trt profile: weight scales per output channel
    and the input scale from the range calibration saw, both max|.|/127; its forward is the
    convolution of QuantizeLinear → DequantizeLinear of both, here run by ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from p4q_export.quant import QuantConv2d, calibrating, get_profile

    g = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(4, 3, 3, 3, generator=g) * torch.tensor([0.01, 0.1, 1.0, 5.0]).view(4, 1, 1, 1))
        conv.bias.copy_(torch.randn(4, generator=g))
    w = conv.weight.detach().clone()
    layer = QuantConv2d.from_conv(conv, get_profile("trt"))
    wq, xq = layer.weight_quantizer, layer.input_quantizer
    # weights: symmetric, narrow [-127, 127], one scale per output channel (its own max |w|)
    assert (wq.qmin, wq.qmax, xq.qmin, xq.qmax) == (-127, 127, -128, 127)
    w_scale = w.abs().amax(dim=(1, 2, 3)) / 127
    torch.testing.assert_close(wq.scale.reshape(-1), w_scale, rtol=0, atol=0)
    assert not xq.is_calibrated
    # calibration: two batches, the second with the wider range; min-max over both
    x1, x2 = torch.randn(2, 3, 9, 9, generator=g), 3 * torch.randn(2, 3, 9, 9, generator=g)
    with calibrating(layer), torch.no_grad():
        torch.testing.assert_close(layer(x1), conv(x1), rtol=0, atol=0)  # FP while observing
        layer(x2)
    x_scale = torch.maximum(x1.abs().max(), x2.abs().max()) / 127
    torch.testing.assert_close(xq.scale.reshape(()), x_scale, rtol=0, atol=0)
    assert int(xq.zero_point) == 0 and not wq.zero_point.any()

    x = 4 * torch.randn(5, 3, 9, 9, generator=g)  # beyond the calibrated range in places: saturates
    w_codes = torch.clamp(torch.round(w / w_scale.view(4, 1, 1, 1)), -127, 127).to(torch.int8)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
         helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
         helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=0),
         helper.make_node("Conv", ["x_dq", "w_dq", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[3, 3])],
        "qconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 5, 5]),
         helper.make_tensor_value_info("x_dq", TensorProto.FLOAT, ["n", 3, 9, 9]),
         helper.make_tensor_value_info("w_dq", TensorProto.FLOAT, [4, 3, 3, 3])],
        [numpy_helper.from_array(x_scale.numpy().astype("float32"), "x_scale"),
         numpy_helper.from_array(torch.tensor(0, dtype=torch.int8).numpy(), "x_zp"),
         numpy_helper.from_array(w_codes.numpy(), "w_q"), numpy_helper.from_array(w_scale.numpy(), "w_scale"),
         numpy_helper.from_array(torch.zeros(4, dtype=torch.int8).numpy(), "w_zp"),
         numpy_helper.from_array(conv.bias.detach().numpy(), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_quant_qdq", "1")  # Q/DQ as written, no fused int8 kernels
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    expected, x_dq, w_dq = (torch.from_numpy(a) for a in sess.run(None, {"x": x.numpy()}))
    with torch.no_grad():
        out = layer(x)
        fp = conv(x)
        # what the layer convolves is ONNX's Q/DQ of input and weight, value for value
        assert torch.equal(xq(x), x_dq) and torch.equal(layer.quantized_weight(), w_dq)
    assert (x.abs() > 127 * x_scale).any() and (x_dq.abs().max() == 128 * x_scale)  # some inputs saturate at -128
    # the convolution itself: the same sums, accumulated in another order by each library
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert (out - fp).abs().max() > 1e-3  # quantized, not the FP convolution
