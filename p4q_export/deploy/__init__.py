"""Folding, QDQ ONNX export, the TensorRT-compatibility lint and bundles (see export_bundle)."""

from .bundle import Bundle, load_bundle  # noqa: F401
from .qdq import strip_qdq  # noqa: F401
from .trt_lint import check_trt_compatible, lint_model  # noqa: F401
