"""Extensions registered at test time, from outside the package (test_registries.py): a backend
and, further down, a quantization profile. Nothing in p4q_export names them; every place that
lists backends or profiles must still offer them."""

from __future__ import annotations

import dataclasses

from p4q_export.quant.profiles import REGISTRY as PROFILES
from p4q_export.quant.profiles.trt import SPEC as TRT
from p4q_export.runtime.backends import REGISTRY as BACKENDS
from p4q_export.runtime.backends import BackendSpec

SPIN = "session.intra_op.allow_spinning"


def _open_nospin(bundle, device, **opts):
    from p4q_export.runtime.ort_runner import OrtRunner

    return OrtRunner(bundle, backend="ort-nospin", session_config={SPIN: "0"}, **opts)


# ORT's fast kernels with the intra-op threads not spinning while they wait (a shared CPU)
ORT_NOSPIN = BackendSpec(name="ort-nospin", help="ONNX Runtime's fast kernels, threads not spinning", open=_open_nospin,
                         runs_on="cpu", bench=("fp32", "int8"), bench_opt_in=("fp32",), threads=True)


# trt's grids with 4-bit weights: research, not exportable
TRT_W4 = dataclasses.replace(TRT, name="trt-w4", help="trt with 4-bit weights", bits=(4, 8),
                             not_exportable="4-bit weight fake quantization")
# trt's grids for ONNX Runtime on CPUs with VNNI (no saturation: full-range weights), int8 deploy graph
ORT_VNNI = dataclasses.replace(TRT, name="ort-vnni", help="8-bit weights for ONNX Runtime on VNNI CPUs", deploy_precision="int8")


def register() -> None:
    BACKENDS.register(ORT_NOSPIN)
    PROFILES.register(TRT_W4)
    PROFILES.register(ORT_VNNI)


def unregister() -> None:
    BACKENDS.unregister(ORT_NOSPIN.name)
    PROFILES.unregister(TRT_W4.name)
    PROFILES.unregister(ORT_VNNI.name)
