"""Runners behind one interface (torch reference, ONNX Runtime fast/exact, TensorRT: the registry
in runtime/backends), validation against the reference, bundle evaluation and prediction."""


def __getattr__(name: str):
    # lazy: the CLI reads runtime.backends for its help texts without loading numpy
    if name in ("Runner", "open_runner", "run_batched"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
