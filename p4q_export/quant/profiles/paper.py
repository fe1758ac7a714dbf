"""`paper`: research fake quantization as in the P4Q paper: any W/A in 2-8, asymmetric or
channel-wise activations (the recipe's act_symmetric / act_per_channel), any observer. No runtime
executes these grids, so export refuses it."""

from __future__ import annotations

from . import ProfileSpec

SPEC = ProfileSpec(
    name="paper",
    help="research fake quantization: any W/A in 2-8, every observer, not exportable",
    bits=None,
    a_symmetric=None,
    a_per_channel=None,
    weight_observers=None,
    not_exportable="research fake quantization",
)
