"""ONNX Runtime on the CPU, in two modes over the same QDQ graph:

- `ort` (fast): ORT fuses Q/DQ pairs into its integer kernels (MatMulInteger & co). On AVX2 CPUs
  without VNNI those u8s8 kernels saturate full-range int8 weights, hence the `ort-x86` profile.
- `ort-exact`: session option `session.disable_quant_qdq=1` keeps every Q/DQ node as its own
  exact float op (no QDQ fusion), so the arithmetic is what TensorRT computes: the CPU stand-in.
`precision="fp32"` runs the same graph with its Q/DQ stripped (benchmarks' FP32 baseline).
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError


class OrtRunner:
    def __init__(self, bundle, exact: bool = False, precision: str = "int8", threads: int | None = None):
        import onnxruntime as ort

        if precision not in ("int8", "fp32"):
            raise UserError(f"ORT precision must be int8 or fp32, got '{precision}'")
        self.backend = "ort-exact" if exact else "ort"
        self.precision = precision
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        if exact:
            so.add_session_config_entry("session.disable_quant_qdq", "1")
        model: str | bytes = str(bundle.onnx_path)
        if precision == "fp32":
            from ..deploy.qdq import strip_qdq

            model = strip_qdq(_load_onnx(bundle.onnx_path)).SerializeToString()
        try:
            self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            raise UserError(f"ONNX Runtime cannot load {bundle.onnx_path}: {str(exc).splitlines()[0][:200]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names[:1], {self.input_name: images})[0]

    def run_all(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output (logits and, if exported, the embedding)."""
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: images})))


def _load_onnx(path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
