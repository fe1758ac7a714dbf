"""The integer grids and their arithmetic: bit widths, (qmin, qmax), scale / zero point from a
range, and ONNX QuantizeLinear → DequantizeLinear as a plain formula. Shared by the observers
(OMSE ranks clipping ranges with it) and the fake quantizers.

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

from ..errors import UserError

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


def quantize_codes(x, scale, zero_point, axis: int | None):
    """(round(x / s) + z before saturation, s, z), broadcast along `axis`. Division, not a multiply
    by 1/s, and torch.round's half-to-even: ONNX QuantizeLinear's arithmetic, code for code."""
    scale = _broadcast(torch.as_tensor(scale, dtype=torch.float32, device=x.device), x, axis)
    zero_point = _broadcast(torch.as_tensor(zero_point, device=x.device).to(torch.float32), x, axis)
    return torch.div(x, scale).round_().add_(zero_point), scale, zero_point  # in place: one temporary


def fake_quantize_reference(x, scale, zero_point, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """QuantizeLinear then DequantizeLinear: q = clamp(round(x / s) + z, qmin, qmax); x̂ = (q - z) · s.
    `axis` names the channel dimension of per-channel `scale`/`zero_point` (None: per tensor).
    Values only (no gradient): the quantizers attach theirs."""
    q, scale, zero_point = quantize_codes(x.detach(), scale, zero_point, axis)
    return q.clamp_(qmin, qmax).sub_(zero_point).mul_(scale)


def fake_quantize_ste(x, scale, zero_point, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """The same formula with a straight-through gradient (d x̂ / d x = 1) for any bit width."""
    return x + (fake_quantize_reference(x, scale, zero_point, qmin, qmax, axis) - x).detach()
