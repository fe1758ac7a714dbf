"""Observers (MinMax, percentile, OMSE) and the quantization profiles."""

from __future__ import annotations

import pytest
import torch

from p4q_export.errors import UserError
from p4q_export.quant import FakeQuantizer, get_profile
from p4q_export.quant.observers import make_observer


def test_minmax_accumulates_over_batches_per_channel():
    obs = make_observer("minmax", per_channel=True, axis=-1)
    obs.observe(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    obs.observe(torch.tensor([[-4.0, 0.0]]))
    lo, hi = obs.compute_range(-128, 127, True)
    assert lo.tolist() == [-4.0, -2.0] and hi.tolist() == [3.0, 0.5]


def test_percentile_clips_outliers():
    x = torch.linspace(-1, 1, 100_001)
    x[0], x[-1] = -50.0, 50.0  # two outliers among 100k
    obs = make_observer("percentile:99.9", per_channel=False, axis=0)
    obs.observe(x)
    a, b = obs.compute_range(-128, 127, True)
    assert -1.0 < a.item() < -0.99 and 0.99 < b.item() < 1.0
    mm = make_observer("minmax", False, 0)
    mm.observe(x)
    assert mm.compute_range(-128, 127, True)[1].item() == 50.0


def _mse(x, observer, bits=4, per_channel=False):
    q = FakeQuantizer(bits, True, per_channel, axis=-1, observer=observer)
    q.calibrate_from(x)
    return (q(x) - x).pow(2).mean().item(), q


def test_omse_beats_minmax_on_heavy_tails():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 8, generator=g) ** 3  # heavy tails
    mse_minmax, q_mm = _mse(x, "minmax")
    mse_omse, q_om = _mse(x, "omse")
    assert q_om.scale.item() < q_mm.scale.item()  # it clipped
    assert mse_omse < 0.7 * mse_minmax
    # per channel: every channel gets its own clipping
    mse_c, qc = _mse(x, "omse", per_channel=True)
    assert qc.scale.shape == (8,) and mse_c <= mse_omse * 1.05


def test_profiles_trt_ortx86_paper():
    trt = get_profile("trt")
    assert (trt.w_bits, trt.a_bits, trt.w_symmetric, trt.a_symmetric, trt.w_per_channel, trt.a_per_channel) == (8, 8, True, True, True, False)
    assert trt.exportable and trt.export_reason is None and trt.bits == "8/8"
    ort = get_profile("ort-x86", "8/8")
    assert (ort.w_bits, ort.a_bits, ort.exportable) == (7, 8, True)
    paper = get_profile("paper", "4/8", a_observer="omse", quantize_patch_embed=True)
    assert (paper.w_bits, paper.a_bits, paper.a_observer, paper.quantize_patch_embed) == (4, 8, "omse", True)
    assert not paper.exportable
    assert "not deployable" in paper.export_reason and "--profile trt or ort-x86" in paper.export_reason
    with pytest.raises(UserError, match="not deployable"):
        paper.require_exportable()
    assert get_profile("paper", "3/3", a_symmetric=False, a_per_channel=True).a_per_channel


@pytest.mark.parametrize(
    "args,message",
    [
        (("tensorrt",), "unknown quantization profile 'tensorrt'"),
        (("trt", "4/4"), "supports only --bits 8/8"),
        (("ort-x86", "8/4"), "supports only --bits 8/8"),
        (("paper", "1/8"), "2 to 8"),
        (("paper", "4/9"), "2 to 8"),
        (("paper", "four"), "W/A"),
        (("paper", "4/4/4"), "W/A"),
    ],
)
def test_profile_user_errors(args, message):
    with pytest.raises(UserError, match=message):
        get_profile(*args)


def test_unknown_observer_in_profile_is_user_error():
    with pytest.raises(UserError, match="unknown observer 'entropy'"):
        get_profile("paper", "4/4", a_observer="entropy")


@pytest.mark.parametrize("name", ["trt", "ort-x86"])
@pytest.mark.parametrize("observer", ["percentile", "percentile:99.9", "omse"])
def test_deployable_profiles_refuse_clipping_weight_observers(name, observer):
    """A clipping weight observer on the narrow ±127 grid leaves weights that PyTorch clamps to -127
    and ONNX's QuantizeLinear saturates to -128: refused when the recipe is checked, not at export."""
    with pytest.raises(UserError, match="minmax"):
        get_profile(name, "8/8", w_observer=observer)
    assert get_profile(name, "8/8", w_observer="minmax").w_observer == "minmax"
    assert get_profile("paper", "8/8", w_observer=observer).w_observer == observer  # research profile: any
