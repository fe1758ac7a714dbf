"""The one interface every backend implements, and the factory that opens a bundle on a backend.

    runner = open_runner("bundle/", "ort-exact")
    logits = runner(images)   # float32 N×3×S×S normalized (uint8 N×3×S×S 0-255 for --uint8-input bundles)

Backends: `torch` (the fake-quant PyTorch reference), `ort` (ONNX Runtime CPU, its fast INT8
kernels), `ort-exact` (ORT computing Q/DQ exactly: the CPU stand-in for TensorRT), `trt`
(TensorRT, p4q_export.runtime.trt_runner, imported only when asked for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import UserError

BACKENDS = ("torch", "ort", "ort-exact", "trt")


@runtime_checkable
class Runner(Protocol):
    backend: str  # torch | ort | ort-exact | trt
    precision: str  # fp32 | fp16 | bf16 | int8

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Bundle-input images (see module doc) → float32 logits N×C."""
        ...

    def run_all(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the bundle by name: `logits`, and `embedding` where it was exported."""
        ...


def open_runner(bundle, backend: str, device: str | None = None, **opts) -> Runner:
    """`bundle`: a Bundle or a bundle directory (hashes verified). `device` is where the torch
    backend runs (auto|cpu|cuda|cuda:N; default cpu); the other backends choose their own, so
    they ignore it. `opts` go to the runner:
    torch: precision="int8"|"fp32"|"fp16"|"bf16", threads=N;
    ort/ort-exact: precision="int8"|"fp32" (fp32 = the same graph with Q/DQ stripped), threads=N;
    trt: whatever trt_runner.TrtRunner accepts (e.g. engine path, fp16)."""
    from ..deploy.bundle import Bundle, load_bundle

    b = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
    if backend == "torch":
        from .torch_runner import TorchRunner

        return TorchRunner(b, device=device or "cpu", **opts)
    if backend in ("ort", "ort-exact"):
        from .ort_runner import OrtRunner

        return OrtRunner(b, exact=backend == "ort-exact", **opts)
    if backend == "trt":
        # imports without TensorRT: constructing the runner says how to install it
        from .trt_runner import TrtRunner

        return TrtRunner(b, **opts)
    raise UserError(f"unknown backend '{backend}' (expected one of: {', '.join(BACKENDS)})")


def run_batched(runner: Runner, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for many images, `batch_size` at a time (keeps memory flat on big splits)."""
    outs = [runner(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
