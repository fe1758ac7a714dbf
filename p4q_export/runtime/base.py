"""The one interface every backend implements, and the factory that opens a bundle on a backend.

    runner = open_runner("bundle/", "ort-exact")
    logits = runner(images)   # float32 N×3×S×S normalized (uint8 N×3×S×S 0-255 for --uint8-input bundles)

The backends (`torch`, `ort`, `ort-exact`, `trt`, ...) are the registry's: runtime/backends/,
one module each; a runner's module is imported only when it is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .backends import backend_spec


@runtime_checkable
class Runner(Protocol):
    backend: str  # the registered backend's name (runtime/backends)
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
    torch (TorchRunner): precision="int8"|"fp32"|"fp16"|"bf16", threads=N;
    the ORT backends (OrtRunner): precision="int8"|"fp32" (fp32 = the graph with Q/DQ stripped), threads=N;
    trt: whatever trt_runner.TrtRunner accepts (e.g. engine path, fp16)."""
    from ..deploy.bundle import Bundle, load_bundle

    b = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
    return backend_spec(backend).open(b, device, **opts)


def run_batched(runner: Runner, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for many images, `batch_size` at a time (keeps memory flat on big splits)."""
    outs = [runner(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
