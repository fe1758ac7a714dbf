"""`trt`: the bundle's TensorRT engine for this GPU (runtime/trt_runner.py). TensorRT is optional:
without it, opening the runner raises a UserError that says how to install it."""

from __future__ import annotations

from . import BackendSpec


def _open(bundle, device, **opts):
    from ..trt_runner import TrtRunner

    return TrtRunner(bundle, **opts)


SPEC = BackendSpec(
    name="trt",
    help="TensorRT on the GPU",
    open=_open,
    runs_on="gpu",
    bench=("fp16", "int8"),
    tensorrt=True,
)
