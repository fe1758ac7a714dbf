"""Runners behind one interface (torch reference, ONNX Runtime fast/exact, TensorRT), validation
against the reference, bundle evaluation and prediction."""

from .base import BACKENDS, Runner, open_runner, run_batched  # noqa: F401
