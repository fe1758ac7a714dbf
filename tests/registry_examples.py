"""Extensions registered at test time, from outside the package (test_registries.py): a backend
and, further down, a quantization profile. Nothing in p4q_export names them; every place that
lists backends or profiles must still offer them."""

from __future__ import annotations

from p4q_export.runtime.backends import REGISTRY as BACKENDS
from p4q_export.runtime.backends import BackendSpec

SPIN = "session.intra_op.allow_spinning"


def _open_nospin(bundle, device, **opts):
    from p4q_export.runtime.ort_runner import OrtRunner

    return OrtRunner(bundle, backend="ort-nospin", session_config={SPIN: "0"}, **opts)


# ORT's fast kernels with the intra-op threads not spinning while they wait (a shared CPU)
ORT_NOSPIN = BackendSpec(name="ort-nospin", help="ONNX Runtime's fast kernels, threads not spinning", open=_open_nospin,
                         runs_on="cpu", bench=("fp32", "int8"), bench_opt_in=("fp32",), threads=True)


def register() -> None:
    BACKENDS.register(ORT_NOSPIN)


def unregister() -> None:
    BACKENDS.unregister(ORT_NOSPIN.name)
