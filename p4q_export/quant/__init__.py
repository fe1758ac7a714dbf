"""Post-training quantization of open_clip CLIP towers: fake-quant modules, observers, profiles,
explicit attention, calibration and the calibration state.

The names below load on first use: the CLI reads the profile registry (quant/profiles) for its
help texts, and importing this package must not load torch for that."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "attention": ("ExplicitAttention", "make_attention_explicit"),
    "clip": ("calibrate_clip", "calibrating", "fake_quantizers", "load_quant_state", "quant_layers", "quant_state_dict",
             "quantization_disabled", "quantize_clip", "resolve_keep_fp"),
    "fake_quant": ("FakeQuantizer",),
    "grid": ("fake_quantize_reference", "qparams_from_range", "quant_range"),
    "layers": ("QuantConv2d", "QuantLinear", "QuantProjection"),
    "observers": ("OBSERVERS",),
    "profiles": ("ProfileSpec", "QuantProfile", "get_profile", "parse_bits"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
