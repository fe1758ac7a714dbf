"""`ort-exact`: ONNX Runtime on the CPU with `session.disable_quant_qdq=1`: every Q/DQ node stays
its own exact float op, so the arithmetic is TensorRT's (runtime/ort_runner.py). The CPU
stand-in for TensorRT, and what a bundle runs on by default."""

from __future__ import annotations

from . import BackendSpec


def _open(bundle, device, **opts):
    from ..ort_runner import OrtRunner

    return OrtRunner(bundle, backend="ort-exact", session_config={"session.disable_quant_qdq": "1"}, **opts)


SPEC = BackendSpec(
    name="ort-exact",
    help="ONNX Runtime computing Q/DQ exactly, the CPU stand-in for TensorRT",
    open=_open,
    runs_on="cpu",
    bench=("int8",),
    threads=True,
    ort_mode="exact",
    rounding_replay=True,
)
