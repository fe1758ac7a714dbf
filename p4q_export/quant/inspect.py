"""Per-layer quantization diagnosis of a calibrated model (the library behind `inspect`; no printing).

Definitions (every number is over the calibration sample, with every OTHER layer in FP):
- `sqnr_db` = 10·log10(Σ y² / Σ (y − ŷ)²), y = the layer's FP output, ŷ = its output with its own
  input and weight quantizers on, both computed from the same FP input.
- `cosine` = Σ y·ŷ / √(Σ y² · Σ ŷ²) over all outputs (flattened).
- `in_max` = max |x| of the layer input; `in_p999` = the 99.9th percentile of |x| per batch,
  averaged over batches; `outlier_ratio` = in_max / in_p999 (how much of the range a per-tensor
  grid spends on rare values); `channel_spread` = max over input channels of the per-channel max |x|
  divided by its median over channels (what per-tensor activation scales suffer from).
Accuracy effects (keep one layer FP, quantize one layer alone, the greedy `suggest`) switch the
quantizers of a single calibrated model on and off; nothing is re-calibrated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from .clip import quant_layers, quantization_disabled, text_layer_names


@dataclass
class LayerStats:
    index: int  # network order
    name: str
    tower: str  # image | text
    kind: str  # Linear | Conv2d
    sqnr_db: float
    cosine: float
    in_max: float
    in_p999: float
    outlier_ratio: float
    channel_spread: float
    n_outputs: int  # output elements the SQNR is over

    def as_dict(self) -> dict:
        return asdict(self)


class _Accumulator:
    def __init__(self) -> None:
        self.sy2 = self.se2 = self.syq = self.sq2 = 0.0
        self.amax = 0.0
        self.p999: list[float] = []
        self.ch_max: torch.Tensor | None = None
        self.n = 0

    def add(self, x: torch.Tensor, y: torch.Tensor, yq: torch.Tensor, axis: int) -> None:
        y, yq = y.double(), yq.double()
        self.sy2 += float((y * y).sum())
        self.se2 += float(((y - yq) ** 2).sum())
        self.syq += float((y * yq).sum())
        self.sq2 += float((yq * yq).sum())
        self.n += y.numel()
        a = x.detach().abs().float()
        self.amax = max(self.amax, float(a.max()))
        flat = a.flatten()
        k = max(1, min(flat.numel(), math.ceil(0.999 * flat.numel())))
        self.p999.append(float(flat.kthvalue(k).values))
        ch = a.movedim(axis % a.ndim, -1).reshape(-1, a.shape[axis]).amax(0)
        self.ch_max = ch if self.ch_max is None else torch.maximum(self.ch_max, ch)

    def stats(self, index: int, name: str, tower: str, kind: str) -> LayerStats:
        sqnr = float("inf") if self.se2 == 0 else 10.0 * math.log10(self.sy2 / self.se2) if self.sy2 > 0 else float("-inf")
        cos = self.syq / math.sqrt(self.sy2 * self.sq2) if self.sy2 > 0 and self.sq2 > 0 else 0.0
        p999 = sum(self.p999) / len(self.p999) if self.p999 else 0.0
        spread = 0.0
        if self.ch_max is not None:
            med = float(self.ch_max.median())
            spread = float(self.ch_max.max()) / med if med > 0 else float("inf")
        return LayerStats(index, name, tower, kind, round(sqnr, 4), round(cos, 6), self.amax, p999,
                          self.amax / p999 if p999 > 0 else float("inf"), spread, self.n)


def collect_layer_stats(model: torch.nn.Module, images: Iterable[torch.Tensor], text_tokens: torch.Tensor | None = None,
                        batch_size: int = 128) -> list[LayerStats]:
    """SQNR, cosine and input-range statistics of every quantized layer (definitions in the module
    docstring), from FP forwards of `images` (batches on the model's device) and, when the text
    tower is quantized, of `text_tokens`."""
    from ..data.loader import tensor_batches
    from ..devices import module_device
    from ..models.text import encode_tokens

    layers = quant_layers(model)
    text = text_layer_names(model)
    acc = {name: _Accumulator() for name in layers}

    def hook(name: str):
        def fn(module, inputs, output):
            x = inputs[0]
            iq, wq = module.input_quantizer, module.weight_quantizer
            iq.enabled = wq.enabled = True
            try:
                yq = module.forward(x)  # forward, not __call__: no hook recursion
            finally:
                iq.enabled = wq.enabled = False
            acc[name].add(x, output, yq, iq.axis)
        return fn

    device = module_device(model)
    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with quantization_disabled(model), torch.no_grad():
            for batch in images:
                model.encode_image(batch.to(device))
            if text & set(layers) and text_tokens is not None:
                for batch in tensor_batches(text_tokens, batch_size):
                    encode_tokens(model, batch.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [acc[name].stats(i, name, "text" if name in text else "image", type(layer).__name__.replace("Quant", ""))
            for i, (name, layer) in enumerate(layers.items()) if acc[name].n]


def _set(model: torch.nn.Module, names, enabled: bool) -> dict:
    layers = quant_layers(model)
    saved = {}
    for name in names:
        layer = layers[name]
        saved[name] = (layer.input_quantizer.enabled, layer.weight_quantizer.enabled)
        layer.input_quantizer.enabled = layer.weight_quantizer.enabled = enabled
    return saved


def _restore(model: torch.nn.Module, saved: dict) -> None:
    layers = quant_layers(model)
    for name, (i, w) in saved.items():
        layers[name].input_quantizer.enabled, layers[name].weight_quantizer.enabled = i, w


@contextmanager
def layers_in_fp(model: torch.nn.Module, names) -> Iterator[torch.nn.Module]:
    """The named quantized layers run FP inside the block (the others as they were)."""
    saved = _set(model, list(names), False)
    try:
        yield model
    finally:
        _restore(model, saved)


@contextmanager
def only_quantized(model: torch.nn.Module, names) -> Iterator[torch.nn.Module]:
    """Every quantizer off except the named layers' (each layer's effect alone)."""
    with quantization_disabled(model):
        saved = _set(model, list(names), True)
        try:
            yield model
        finally:
            _restore(model, saved)


Scorer = Callable[[str, frozenset], float]  # (mode, layers that differ from the mode's base) -> top-1


def layer_effects(model, names: list[str], score: Scorer, mode: str) -> dict[str, float]:
    """top-1 per named layer with that layer alone kept FP (`keep_fp`: every other layer
    quantized) or alone quantized (`alone`: every other layer FP)."""
    toggle = {"keep_fp": layers_in_fp, "alone": only_quantized}[mode]
    out = {}
    for name in names:
        with toggle(model, [name]):
            out[name] = score(mode, frozenset([name]))
    return out


def greedy_keep_fp(model, names: list[str], score: Scorer, k: int, baseline: float,
                   first: dict[str, float] | None = None) -> list[dict]:
    """Up to `k` layers to keep FP, greedily: each step keeps the layer whose FP-ness gives the best
    top-1 given those already kept; stops early when no layer improves on the current top-1.
    `first`: already measured single-layer effects (the first step's candidates)."""
    kept: list[str] = []
    steps: list[dict] = []
    current = baseline
    for step in range(k):
        results = {}
        for name in names:
            if name in kept:
                continue
            if step == 0 and first and name in first:
                results[name] = first[name]
                continue
            with layers_in_fp(model, kept + [name]):
                results[name] = score("keep_fp", frozenset(kept + [name]))
        if not results:
            break
        best = max(results, key=lambda n: (results[n], -names.index(n)))
        if results[best] <= current:
            break
        kept.append(best)
        current = results[best]
        steps.append({"layer": best, "top1": current, "kept": list(kept)})
    return steps
