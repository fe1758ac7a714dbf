"""Range observers: they watch tensors during calibration and pick the float range [lo, hi] that
the quantizer's grid will cover (per tensor, or per channel along `axis`).

- `minmax`: the global min / max over everything seen.
- `percentile[:P]`: the P-th / (100-P)-th percentiles (default 99.99), averaged over batches;
  clips rare outliers.
- `omse`: the min / max, shrunk by the factor (1 - 0.01·i), i < 90, that minimizes the mean
  squared quantization error on a sample of the observed values (the official P4Q code's OMSE
  observer for activations, after FQ-ViT). Per channel, each channel picks its own factor.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from .grid import fake_quantize_reference, qparams_from_range

OBSERVERS = ("minmax", "percentile", "omse")
DEFAULT_PERCENTILE = 99.99
# Caps that keep calibration memory and time bounded on ViT-B sized activations.
PERCENTILE_MAX_COLUMNS = 1 << 20
OMSE_SAMPLE_ELEMENTS = 1 << 18  # 1 MB per quantizer; plenty to rank 90 clipping ranges
OMSE_STEPS = 90


def _as_rows(x: torch.Tensor, per_channel: bool, axis: int) -> torch.Tensor:
    """[C, M] (per channel along `axis`) or [1, M] float32 view of x."""
    x = x.float()
    if not per_channel:
        return x.reshape(1, -1)
    return x.movedim(axis % x.ndim, 0).reshape(x.shape[axis % x.ndim], -1)


def _strided_columns(rows: torch.Tensor, max_columns: int) -> torch.Tensor:
    """A deterministic, evenly spread subset of at most `max_columns` columns."""
    m = rows.shape[1]
    if m <= max_columns:
        return rows
    stride = -(-m // max_columns)
    return rows[:, ::stride]


def _squeeze(t: torch.Tensor, per_channel: bool) -> torch.Tensor:
    return t if per_channel else t.reshape(())


class Observer:
    def __init__(self, per_channel: bool, axis: int):
        self.per_channel = per_channel
        self.axis = axis
        self.reset()

    def reset(self) -> None:
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    @property
    def has_data(self) -> bool:
        return self.lo is not None

    def observe(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def compute_range(self, qmin: int, qmax: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """[lo, hi] per channel ([C]) or per tensor (0-dim)."""
        return _squeeze(self.lo, self.per_channel), _squeeze(self.hi, self.per_channel)


class MinMaxObserver(Observer):
    def observe(self, x: torch.Tensor) -> None:
        rows = _as_rows(x, self.per_channel, self.axis)
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)


class PercentileObserver(Observer):
    def __init__(self, per_channel: bool, axis: int, percentile: float = DEFAULT_PERCENTILE):
        if not 50.0 < percentile <= 100.0:
            raise UserError(f"percentile observer needs a percentile in (50, 100], got {percentile}")
        self.percentile = percentile
        super().__init__(per_channel, axis)

    def reset(self) -> None:
        super().reset()
        self.batches = 0

    def observe(self, x: torch.Tensor) -> None:
        rows = _strided_columns(_as_rows(x, self.per_channel, self.axis), PERCENTILE_MAX_COLUMNS)
        m = rows.shape[1]
        k_hi = max(1, min(m, round(m * self.percentile / 100.0)))
        k_lo = max(1, min(m, m + 1 - k_hi))
        lo = rows.kthvalue(k_lo, dim=1).values
        hi = rows.kthvalue(k_hi, dim=1).values
        # running mean over batches: every batch counts equally
        n = self.batches
        self.lo = lo if self.lo is None else (self.lo * n + lo) / (n + 1)
        self.hi = hi if self.hi is None else (self.hi * n + hi) / (n + 1)
        self.batches = n + 1


class OmseObserver(MinMaxObserver):
    def reset(self) -> None:
        super().reset()
        self.samples: list[torch.Tensor] = []

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        rows = _as_rows(x, self.per_channel, self.axis)
        max_columns = max(1, OMSE_SAMPLE_ELEMENTS // rows.shape[0])
        self.samples.append(_strided_columns(rows, max_columns).clone())
        # bounded memory, spread over all batches: past twice the budget, thin everything by 2
        if sum(s.shape[1] for s in self.samples) > 2 * max_columns:
            self.samples = [torch.cat(self.samples, dim=1)[:, ::2].clone()]

    def compute_range(self, qmin: int, qmax: int, symmetric: bool):

        sample = torch.cat(self.samples, dim=1)  # [C, M]
        best_err = torch.full((sample.shape[0],), float("inf"), device=sample.device)
        best_lo, best_hi = self.lo.clone(), self.hi.clone()
        for i in range(OMSE_STEPS):
            factor = 1.0 - 0.01 * i
            lo, hi = self.lo * factor, self.hi * factor
            scale, zp = qparams_from_range(lo, hi, qmin, qmax, symmetric)
            err = (fake_quantize_reference(sample, scale, zp, qmin, qmax, axis=0) - sample).pow(2).mean(dim=1)
            if not self.per_channel:  # one factor for the whole tensor
                err = err.mean().expand_as(best_err)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo, best_lo)
            best_hi = torch.where(better, hi, best_hi)
        return _squeeze(best_lo, self.per_channel), _squeeze(best_hi, self.per_channel)


def parse_observer(name: str) -> tuple[str, dict]:
    """'minmax' | 'percentile' | 'percentile:99.9' | 'omse' → (kind, kwargs); UserError otherwise."""
    kind, _, arg = str(name).strip().lower().partition(":")
    if kind not in OBSERVERS:
        raise UserError(f"unknown observer '{name}': choose one of {', '.join(OBSERVERS)} (percentile:P sets P)")
    if arg and kind != "percentile":
        raise UserError(f"observer '{kind}' takes no argument (got '{name}')")
    kwargs = {}
    if arg:
        try:
            kwargs["percentile"] = float(arg)
        except ValueError:
            raise UserError(f"observer '{name}': '{arg}' is not a number") from None
    return kind, kwargs


def make_observer(name: str, per_channel: bool, axis: int) -> Observer:
    kind, kwargs = parse_observer(name)
    cls = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "omse": OmseObserver}[kind]
    return cls(per_channel, axis, **kwargs)
