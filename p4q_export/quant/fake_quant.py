"""The `FakeQuantizer` module (observe → finalize → quantize-dequantize with a straight-through
gradient) on the grids of grid.py."""

from __future__ import annotations

import torch
from torch import nn

from .grid import (
    check_bits,
    fake_quantize_ste,
    qparams_from_range,
    quant_range,
    quantize_codes,
)
from .observers import make_observer


class _QuantizeLinearSte(torch.autograd.Function):
    """The reference formula with torch.fake_quantize_*'s gradient: straight through where the code
    lies inside the grid, zero where it saturates."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int, axis: int | None):
        q, scale, zero_point = quantize_codes(x, scale, zero_point, axis)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return q.clamp_(qmin, qmax).sub_(zero_point).mul_(scale)  # in place: activations are large

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None, None


class FakeQuantizer(nn.Module):
    """Quantize-dequantize one tensor (a layer input or a weight).

    Modes: `enabled=False` → identity (the FP teacher); `calibrating=True` → record statistics with
    the observer and return x unchanged; otherwise fake-quantize with `scale`/`zero_point`, which
    `finalize()` computes from the observer (or `load_state_dict` restores).

    Every grid computes ONNX QuantizeLinear → DequantizeLinear exactly (`fake_quantize_reference`:
    divide by the scale, round half to even, saturate). torch's own `fake_quantize_*` multiply by
    1/scale instead, which rounds ties the other way for some inputs (13% of a tie grid; ~30 of
    ViT-B's weights), so they serve only while exporting: the legacy ONNX exporter turns them into
    clean QuantizeLinear/DequantizeLinear pairs, whose meaning is the division. The 8-bit grids and
    the 7-bit narrow weight grid keep torch's gradient (straight-through, zero outside the grid);
    other bit widths pass the gradient everywhere (`fake_quantize_ste`). That exporter only
    accepts the int8 bounds (-128, 127) / (0, 255), so while exporting the narrow weight grids are
    passed as (-128, 127): identical for calibrated weights, whose codes never go below -qmax.
    """

    def __init__(
        self,
        bits: int,
        symmetric: bool = True,
        per_channel: bool = False,
        axis: int = 0,
        observer: str = "minmax",
        *,
        narrow_range: bool = False,
        channels: int | None = None,
    ):
        super().__init__()
        self.bits = check_bits(bits)
        self.symmetric = bool(symmetric)
        self.per_channel = bool(per_channel)
        self.axis = int(axis)
        self.narrow_range = bool(narrow_range and symmetric)
        self.qmin, self.qmax = quant_range(bits, self.symmetric, self.narrow_range)
        self.observer_name = observer
        self.observer = make_observer(observer, per_channel=self.per_channel, axis=self.axis)
        shape = (channels,) if (self.per_channel and channels) else (() if not self.per_channel else (1,))
        self.register_buffer("scale", torch.ones(shape, dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32))
        self.register_buffer("calibrated", torch.tensor(False))
        self._is_calibrated = False  # python mirror of the buffer: no tensor→bool while tracing
        self.enabled = True
        self.calibrating = False

    def extra_repr(self) -> str:
        kind = f"per-channel(axis={self.axis})" if self.per_channel else "per-tensor"
        sym = "symmetric" if self.symmetric else "asymmetric"
        return f"bits={self.bits}, {sym}, {kind}, range=[{self.qmin}, {self.qmax}], observer={self.observer_name}"

    # --- calibration -----------------------------------------------------------------------
    def reset_observer(self) -> None:
        self.observer.reset()

    def observe(self, x: torch.Tensor) -> None:
        self.observer.observe(x.detach())

    @property
    def is_calibrated(self) -> bool:
        return self._is_calibrated

    @property
    def has_observations(self) -> bool:
        return self.observer.has_data

    def finalize(self) -> None:
        """scale / zero_point from what the observer saw (then the observer's memory is freed)."""
        if not self.observer.has_data:
            raise RuntimeError("FakeQuantizer.finalize() called before it observed any data")
        lo, hi = self.observer.compute_range(self.qmin, self.qmax, self.symmetric)
        self.set_qparams(*qparams_from_range(lo, hi, self.qmin, self.qmax, self.symmetric))
        self.observer.reset()

    def calibrate_from(self, x: torch.Tensor) -> None:
        """Observe one tensor (a weight) and finalize at once."""
        self.observer.reset()
        self.observe(x)
        self.finalize()

    def set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        device = self.scale.device
        shape = (-1,) if self.per_channel else ()
        self.scale = scale.detach().to(device=device, dtype=torch.float32).reshape(shape)
        self.zero_point = zero_point.detach().to(device=device, dtype=torch.int32).reshape(shape)
        self.calibrated.fill_(True)
        self._is_calibrated = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Per-channel buffers may have been created before the channel count was known: take the
        # stored shapes, so a calibrated state always loads.
        for name in ("scale", "zero_point"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._is_calibrated = bool(self.calibrated)

    # --- forward ---------------------------------------------------------------------------
    def _int8_grid(self) -> bool:
        return self.bits == 8 or (self.narrow_range and self.bits == 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.calibrating:
            self.observe(x)
            return x
        if not self._is_calibrated:
            raise RuntimeError(
                "fake quantizer used before calibration: run calibrate_clip() or load a calibration state"
            )
        return self.fake_quantize(x)

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        axis = (self.axis % x.ndim) if self.per_channel else None
        if not self._int8_grid():
            return fake_quantize_ste(x, self.scale, self.zero_point, self.qmin, self.qmax, axis)
        if not torch.onnx.is_in_onnx_export():
            return _QuantizeLinearSte.apply(x, self.scale, self.zero_point, self.qmin, self.qmax, axis)
        qmin, qmax = (-128, 127) if self.narrow_range else (self.qmin, self.qmax)  # see the class docstring
        if axis is None:
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, qmin, qmax)
        return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, axis, qmin, qmax)
