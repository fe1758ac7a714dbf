"""`torch`: the PyTorch reference (runtime/torch_runner.py), on --device: int8 is the fake-quant
network validate compares every other backend with, fp32/fp16/bf16 the same network unquantized."""

from __future__ import annotations

from . import BackendSpec


def _open(bundle, device, **opts):
    from ..torch_runner import TorchRunner

    return TorchRunner(bundle, device=device or "cpu", **opts)


SPEC = BackendSpec(
    name="torch",
    help="the fake-quant PyTorch reference",
    open=_open,
    runs_on="torch",
    bench=("fp32", "fp16", "bf16", "int8"),
    bench_opt_in=("int8",),  # the fake-quant reference is slow and not a deployment target
    reference=True,
)
