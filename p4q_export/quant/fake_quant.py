"""Fake quantization: the integer grids, scale/zero-point math, the slow reference formula and the
`FakeQuantizer` module (observe → finalize → quantize-dequantize with a straight-through gradient).

Grids (b = bits):
- symmetric activations: [-(2**(b-1)), 2**(b-1)-1], zero point 0;
- symmetric weights: the *narrow* range [-(2**(b-1)-1), 2**(b-1)-1] (TensorRT style: the int8
  weight grid is symmetric around 0, so -w quantizes to -q; 7-bit ort-x86 weights are [-63, 63]);
- asymmetric (either): [0, 2**b - 1] with an integer zero point inside the grid.
Scales: symmetric scale = max|x| / qmax; asymmetric scale = (max - min) / (qmax - qmin) over a
range widened to include 0 (so 0 is exact, as every int8 runtime requires).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .observers import make_observer

MIN_BITS, MAX_BITS = 2, 8
# Smallest scale: an all-zero channel gets this instead of 0 (division by zero), and still maps to 0.
MIN_SCALE = 1e-8


def check_bits(bits: int, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise UserError(f"{what} must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def quant_range(bits: int, symmetric: bool, narrow_range: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of the integer grid; see the module docstring."""
    check_bits(bits)
    if not symmetric:
        return 0, 2**bits - 1
    qmax = 2 ** (bits - 1) - 1
    return (-qmax if narrow_range else -qmax - 1), qmax


def qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int, symmetric: bool):
    """Scale (float32) and zero point (int32) that map [lo, hi] onto [qmin, qmax]."""
    lo = torch.minimum(lo.float(), torch.zeros_like(lo, dtype=torch.float32))
    hi = torch.maximum(hi.float(), torch.zeros_like(hi, dtype=torch.float32))
    if symmetric:
        scale = (torch.maximum(-lo, hi) / qmax).clamp_min(MIN_SCALE)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp_min(MIN_SCALE)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def _broadcast(param: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None or param.ndim == 0:
        return param
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return param.reshape(shape)


def fake_quantize_reference(x, scale, zero_point, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """The hand formula, slow and plain: q = clamp(round(x / s) + z, qmin, qmax); x̂ = (q - z) · s.
    `axis` names the channel dimension of per-channel `scale`/`zero_point` (None: per tensor)."""
    scale = _broadcast(torch.as_tensor(scale, dtype=torch.float32), x, axis)
    zero_point = _broadcast(torch.as_tensor(zero_point).to(torch.float32), x, axis)
    q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def fake_quantize_ste(x, scale, zero_point, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """The same formula with a straight-through gradient (d x̂ / d x = 1) for any bit width."""
    return x + (fake_quantize_reference(x, scale, zero_point, qmin, qmax, axis) - x).detach()


class FakeQuantizer(nn.Module):
    """Quantize-dequantize one tensor (a layer input or a weight).

    Modes: `enabled=False` → identity (the FP teacher); `calibrating=True` → record statistics with
    the observer and return x unchanged; otherwise fake-quantize with `scale`/`zero_point`, which
    `finalize()` computes from the observer (or `load_state_dict` restores).

    8-bit symmetric/asymmetric grids and the 7-bit narrow weight grid run through torch's own
    `torch.fake_quantize_per_{tensor,channel}_affine` (gradient: straight-through, zero outside the
    grid), which the legacy ONNX exporter turns into QuantizeLinear/DequantizeLinear. That exporter
    only accepts the int8 bounds (-128, 127) / (0, 255), so while exporting the narrow weight grids
    are passed as (-128, 127): identical for calibrated weights, whose codes never go below -qmax.
    Other bit widths use the formula with a straight-through estimator.
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
    def _uses_torch_op(self) -> bool:
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
        if not self._uses_torch_op():
            return fake_quantize_ste(x, self.scale, self.zero_point, self.qmin, self.qmax, axis)
        qmin, qmax = self.qmin, self.qmax
        if self.narrow_range and torch.onnx.is_in_onnx_export():
            qmin, qmax = -128, 127  # see the class docstring
        if axis is None:
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, qmin, qmax)
        return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, axis, qmin, qmax)
