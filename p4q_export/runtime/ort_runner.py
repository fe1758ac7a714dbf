"""ONNX Runtime on the CPU, in two modes over the same QDQ graph (backends/ort.py, ort_exact.py):

- `ort` (fast): ORT fuses Q/DQ pairs into its integer kernels (MatMulInteger & co). On AVX2 CPUs
  without VNNI those u8s8 kernels saturate full-range int8 weights, hence the `ort-x86` profile.
- `ort-exact`: session option `session.disable_quant_qdq=1` keeps every Q/DQ node as its own
  exact float op (no QDQ fusion), so the arithmetic is what TensorRT computes: the CPU stand-in.
A backend is the runner's name plus its session config entries.
`precision` picks the bundle's graph: int8 (model.onnx), int8-fp16 or fp16 (the FP16 graphs, run
with ORT's CPU FP16 kernels), fp32 (model.fp32.onnx, else model.onnx with its Q/DQ stripped: the
benchmarks' FP32 baseline).
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError


class OrtRunner:
    def __init__(self, bundle, backend: str = "ort", session_config: dict[str, str] | None = None,
                 precision: str | None = None, threads: int | None = None):
        """`backend`: the name the runner reports; `session_config`: ORT session config entries
        (ort-exact: session.disable_quant_qdq=1); `precision`: which graph (default: the deploy
        graph, the one a device copy holds)."""
        import onnxruntime as ort

        from ..deploy.precision import check_precision

        precision = check_precision(precision or bundle.precision)
        self.backend = backend
        self.precision = precision
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        for key, value in (session_config or {}).items():
            so.add_session_config_entry(key, value)
        if precision == "fp32" and "fp32" not in bundle.graphs:
            from ..deploy.qdq import strip_qdq

            path = bundle.onnx_path
            model: str | bytes = strip_qdq(_load_onnx(path)).SerializeToString()
        else:
            path = bundle.graph_path(precision)
            model = str(path)
        try:
            self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            raise UserError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
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
