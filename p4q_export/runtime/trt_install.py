"""Where TensorRT comes from, per target, and which CUDA Python bindings go with it.

The bindings must not be newer than the driver: cuda-bindings 13 links the CUDA 13 runtime
statically and needs an R580+ driver, so on a CUDA 12 driver (JetPack 6, R535-R570 on x86) every
call returns cudaErrorInsufficientDriver (35). A plain `pip install cuda-python` takes the newest
major, so every target pins the major of its driver's CUDA (and JetPack, whose CUDA is part of the
image, the minor too). docs/tensorrt.md's install section is this table; `install_hint` names the one
row that fits the machine it runs on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class InstallTarget:
    key: str
    title: str
    tensorrt: str  # where TensorRT (its Python module) comes from
    cuda: str  # the CUDA major.minor its runtime is
    python: str
    cuda_python: str  # the requirement the bindings must satisfy
    command: str  # the exact install
    extra: str | None = None  # the pyproject extra that carries the pins


TARGETS = {
    "jetpack6": InstallTarget(
        "jetpack6", "JetPack 6.1/6.2 (L4T R36.4, Orin)", "TensorRT 10.3 from JetPack (apt python3-libnvinfer)",
        "12.6", "3.10", "cuda-python>=12.6,<12.7",
        "sudo apt install python3-libnvinfer python3-libnvinfer-dev && pip install 'p4q-export[jetpack6]'", "jetpack6"),
    "jetpack7": InstallTarget(
        "jetpack7", "JetPack 7 (L4T R38/R39, Thor and AGX Orin)", "TensorRT from JetPack (apt python3-libnvinfer)",
        "13.0", "3.12", "cuda-python>=13,<14",
        "sudo apt install python3-libnvinfer python3-libnvinfer-dev && pip install 'p4q-export[jetpack7]'", "jetpack7"),
    "x86-trt10": InstallTarget(
        "x86-trt10", "x86, pip TensorRT 10, CUDA 12 driver (R525+)", "pip tensorrt-cu12 10.x",
        "12", ">=3.10", "cuda-python>=12,<13", "pip install 'p4q-export[trt10-cu12]'", "trt10-cu12"),
    "x86-trt11": InstallTarget(
        "x86-trt11", "x86, pip TensorRT 11, CUDA 13 driver (R580+)", "pip tensorrt-cu13 11.x",
        "13", ">=3.10", "cuda-python>=13,<14", "pip install 'p4q-export[trt11-cu13]'", "trt11-cu13"),
}

# JetPack 6.0 (L4T R36.2/36.3) ships CUDA 12.2 and TensorRT 8.6: the bindings follow its CUDA minor
JETPACK60 = InstallTarget(
    "jetpack60", "JetPack 6.0 (L4T R36.3, Orin)", "TensorRT 8.6 from JetPack (apt python3-libnvinfer)",
    "12.2", "3.10", "cuda-python>=12.2,<12.3",
    "sudo apt install python3-libnvinfer python3-libnvinfer-dev && pip install 'cuda-python>=12.2,<12.3'")


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".") if p != "")
    except ValueError:
        raise UserError(f"cannot read a version from {text!r}") from None


def choose_target(l4t: str | None = None, driver_cuda: str | None = None) -> InstallTarget:
    """The install for a Jetson (its L4T release) or an x86 machine (the CUDA version its driver
    supports, e.g. '12.8' from nvidia-smi or cudaDriverGetVersion)."""
    if l4t:
        major, minor, *_ = _version_tuple(l4t) + (0,)
        if major >= 38:
            return TARGETS["jetpack7"]
        if major == 36:
            return TARGETS["jetpack6"] if minor >= 4 else JETPACK60
        raise UserError(f"L4T R{l4t} (JetPack 5 or older: TensorRT 8.4/8.5, CUDA 11.4, Python 3.8) is not supported: "
                        "p4q-export needs Python 3.10 and TensorRT 8.6 or newer (JetPack 6 or 7)")
    if driver_cuda:
        major = _version_tuple(driver_cuda)[0]
        if major >= 13:
            return TARGETS["x86-trt11"]
        if major == 12:
            return TARGETS["x86-trt10"]
        raise UserError(f"this NVIDIA driver supports CUDA {driver_cuda}: TensorRT 10 needs a CUDA 12 driver (R525 or newer)")
    raise UserError("no L4T release and no NVIDIA driver found: TensorRT needs an NVIDIA GPU")


def bindings_fit_driver(bindings_version: str, driver_cuda: str) -> bool:
    """True when cuda-python `bindings_version` can run on a driver that supports `driver_cuda`:
    its major must not be newer (the minor may be, by CUDA's minor-version compatibility)."""
    return _version_tuple(bindings_version)[0] <= _version_tuple(driver_cuda)[0]


def install_hint(l4t: str | None = None, driver_cuda: str | None = None) -> str:
    """One line: the install for this machine where it can be told, else all four."""
    try:
        target = choose_target(l4t, driver_cuda)
    except UserError:
        target = None
    if target is not None:
        return f"on {target.title}: {target.command}"
    return ("on x86 pip install 'p4q-export[trt10-cu12]' (CUDA 12 driver) or 'p4q-export[trt11-cu13]' (CUDA 13 driver); "
            "on a Jetson sudo apt install python3-libnvinfer and pip install 'p4q-export[jetpack6]' (JetPack 6) "
            "or 'p4q-export[jetpack7]' (JetPack 7)")


# ----------------------------------------------------------------------------- JetPack releases

_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)(?:.*?BOARD:\s*([^,\s]+))?", re.IGNORECASE)

# L4T release -> JetPack (NVIDIA's release notes); the closest lower entry wins for point releases.
L4T_TO_JETPACK = {
    "32.4.3": "4.4", "32.4.4": "4.4.1", "32.5.0": "4.5", "32.5.1": "4.5.1", "32.6.1": "4.6",
    "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4",
    "35.6.1": "5.1.5", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
    "38.2.0": "7.0", "38.4.0": "7.1", "39.2.0": "7.2",
}


def parse_nv_tegra_release(text: str) -> dict | None:
    """'# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ...' -> {'l4t': '36.4.3', ...}."""
    m = _RELEASE.search(text or "")
    if not m:
        return None
    major, revision, board = m.group(1), m.group(2), m.group(3)
    parts = revision.split(".") + ["0"]
    l4t = f"{major}.{parts[0]}.{parts[1]}"
    return {"l4t": l4t, "jetpack": jetpack_for_l4t(l4t), "board": board}


def jetpack_for_l4t(l4t: str) -> str | None:
    if l4t in L4T_TO_JETPACK:
        return L4T_TO_JETPACK[l4t]
    key = tuple(int(p) for p in l4t.split("."))
    older = [v for k, v in L4T_TO_JETPACK.items() if tuple(int(p) for p in k.split("."))[:2] == key[:2]
             and tuple(int(p) for p in k.split(".")) <= key]
    return older[-1] if older else None


