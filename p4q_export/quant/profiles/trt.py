"""`trt`: what TensorRT's INT8 kernels run: 8-bit weights per output channel on the narrow
symmetric grid (±127), 8-bit symmetric per-tensor activations. Exported with the strongly typed
int8-fp16 deploy graph."""

from __future__ import annotations

from . import ProfileSpec

SPEC = ProfileSpec(
    name="trt",
    help="TensorRT INT8",
    bits=(8, 8),
    # minmax only: on the narrow grid a clipping observer leaves weights below -127·s, which
    # PyTorch clamps to -127 and ONNX's QuantizeLinear saturates to -128
    weight_observers=("minmax",),
    deploy_precision="int8-fp16",
)
