"""Post-training quantization of open_clip CLIP towers: fake-quant modules, observers, profiles,
explicit attention, calibration and the calibration state."""

from .attention import ExplicitAttention, make_attention_explicit  # noqa: F401
from .clip import (  # noqa: F401
    calibrate_clip,
    calibrating,
    fake_quantizers,
    load_quant_state,
    quant_layers,
    quant_state_dict,
    quantization_disabled,
    quantize_clip,
    resolve_keep_fp,
)
from .fake_quant import FakeQuantizer  # noqa: F401
from .grid import fake_quantize_reference, qparams_from_range, quant_range  # noqa: F401
from .layers import QuantConv2d, QuantLinear, QuantProjection  # noqa: F401
from .observers import OBSERVERS  # noqa: F401
from .profiles import PROFILES, QuantProfile, get_profile, parse_bits  # noqa: F401
