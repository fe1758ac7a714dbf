"""Quantized layers: a Linear / Conv2d whose input and weight pass through fake quantizers.

Weights are data-free, so their quantizer is calibrated at construction; in training mode a
trainable weight (e.g. the P4Q adapter) is re-observed on every forward, as in QAT, so its grid
always covers it. Input quantizers need `calibrate_clip` (or a loaded calibration state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fake_quant import FakeQuantizer
from .profiles import QuantProfile


def _quantizers(profile: QuantProfile, out_channels: int, in_channels: int, input_axis: int, w_bits, a_bits):
    weight_q = FakeQuantizer(
        profile.w_bits if w_bits is None else w_bits,
        profile.w_symmetric,
        profile.w_per_channel,
        axis=0,
        observer=profile.w_observer,
        narrow_range=profile.w_narrow_range,
        channels=out_channels,
    )
    input_q = FakeQuantizer(
        profile.a_bits if a_bits is None else a_bits,
        profile.a_symmetric,
        profile.a_per_channel,
        axis=input_axis,
        observer=profile.a_observer,
        channels=in_channels,
    )
    return input_q, weight_q


class _QuantWeightMixin:
    weight: nn.Parameter
    weight_quantizer: FakeQuantizer
    input_quantizer: FakeQuantizer

    def calibrate_weight(self) -> None:
        self.weight_quantizer.calibrate_from(self.weight.detach())

    def quantized_weight(self) -> torch.Tensor:
        wq = self.weight_quantizer
        if wq.enabled and not wq.calibrating and self.training and self.weight.requires_grad:
            self.calibrate_weight()
        return wq(self.weight)


class QuantLinear(_QuantWeightMixin, nn.Module):
    """F.linear(input_quantizer(x), weight_quantizer(weight), bias); input quantized per tensor or
    per channel along the last (feature) dimension."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, profile: QuantProfile | None = None, w_bits=None, a_bits=None):
        super().__init__()
        profile = profile or QuantProfile("trt", 8, 8)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.input_quantizer, self.weight_quantizer = _quantizers(profile, out_features, in_features, -1, w_bits, a_bits)

    @classmethod
    def from_linear(cls, linear: nn.Linear, profile: QuantProfile, w_bits: int | None = None, a_bits: int | None = None):
        """Wrap `linear`'s own Parameters (no copy), calibrate the weight quantizer."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, profile, w_bits, a_bits)
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.calibrate_weight()
        layer.train(linear.training)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuantProjection(QuantLinear):
    """open_clip's `x @ proj` parameter matrices (visual.proj, text_projection) as a QuantLinear
    with weight = proj.T. `x @ layer` still works (via __rmatmul__), so open_clip's own code runs
    unchanged."""

    @classmethod
    def from_matrix(cls, proj: torch.Tensor, profile: QuantProfile, w_bits=None, a_bits=None):
        in_features, out_features = proj.shape
        layer = cls(in_features, out_features, False, profile, w_bits, a_bits)
        layer.weight = nn.Parameter(proj.detach().t().contiguous(), requires_grad=proj.requires_grad)
        layer.calibrate_weight()
        return layer

    def __rmatmul__(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


class QuantConv2d(_QuantWeightMixin, nn.Module):
    """The patch-embedding conv with a fake-quantized input (per tensor, or per channel on axis 1)
    and per-output-channel weights."""

    def __init__(self, conv: nn.Conv2d, profile: QuantProfile, w_bits=None, a_bits=None):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError("QuantConv2d supports zero padding only")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.weight = conv.weight
        self.bias = conv.bias
        self.input_quantizer, self.weight_quantizer = _quantizers(profile, conv.out_channels, conv.in_channels, 1, w_bits, a_bits)
        self.calibrate_weight()
        self.train(conv.training)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, profile: QuantProfile, w_bits=None, a_bits=None):
        return cls(conv, profile, w_bits, a_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.input_quantizer(x), self.quantized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
