"""`ort-x86`: `trt`'s grids with 7-bit weights (±63) for ONNX Runtime's INT8 CPU kernels: their
u8s8 kernels saturate full-range int8 weights on x86 CPUs without VNNI. Takes --bits 8/8;
exported with the int8 deploy graph (FP32 between the Q/DQ pairs)."""

from __future__ import annotations

from . import ProfileSpec

SPEC = ProfileSpec(
    name="ort-x86",
    help="7-bit weights for ONNX Runtime's INT8 kernels on CPUs without VNNI",
    bits=(8, 8),
    weight_bits=7,
    weight_observers=("minmax",),  # as trt: a clipping observer saturates differently in ONNX
)
