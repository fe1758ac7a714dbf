"""`ort`: ONNX Runtime on the CPU with its fast INT8 kernels (Q/DQ pairs fused into integer ops;
runtime/ort_runner.py). The kernels the `ort-x86` profile is made for."""

from __future__ import annotations

from . import BackendSpec


def _open(bundle, device, **opts):
    from ..ort_runner import OrtRunner

    return OrtRunner(bundle, backend="ort", **opts)


SPEC = BackendSpec(
    name="ort",
    help="ONNX Runtime's fast INT8 kernels on the CPU",
    open=_open,
    runs_on="cpu",  # the CPUExecutionProvider only
    bench=("fp32", "int8"),
    threads=True,
    ort_mode="fast",
)
