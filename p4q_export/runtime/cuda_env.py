"""The CUDA and TensorRT environment an engine runs in: the TensorRT module, the CUDA runtime
library polygraphy loads, the driver and the CUDA Python bindings, the GPU (and on a Jetson, the
module); and every failure of theirs as one line.

TensorRT and the bindings are optional (see runtime/trt_install.py): everything here imports them
lazily, so the rest of the package works without them.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import UserError
from .trt_install import (
    bindings_fit_driver,
    choose_target,
    install_hint,
    parse_nv_tegra_release,
)

DEVICE_TREE_MODEL = "proc/device-tree/model"
L4T_RELEASE = "etc/nv_tegra_release"


class CudaError(UserError):
    """A CUDA runtime call failed (exit 2: the environment, not the model, is wrong)."""


# ----------------------------------------------------------------------------- the machine

def device_tree_model(root: Path = Path("/")) -> str | None:
    """'NVIDIA Jetson AGX Orin Developer Kit' on a Jetson, None elsewhere (no device tree)."""
    try:
        text = (Path(root) / DEVICE_TREE_MODEL).read_text(errors="replace")
    except OSError:
        return None
    return text.strip("\x00 \n") or None


def l4t_release(root: Path = Path("/")) -> str | None:
    """'36.4.3' from /etc/nv_tegra_release, else None (not a Jetson)."""
    try:
        text = (Path(root) / L4T_RELEASE).read_text(errors="replace")
    except OSError:
        return None
    release = parse_nv_tegra_release(text)
    return release["l4t"] if release else None


# ----------------------------------------------------------------------------- optional imports

def trt_available() -> bool:
    """True when `import tensorrt` works (it does not check for a GPU)."""
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def require_tensorrt():
    """The tensorrt module, or a UserError that says how to install it on this machine."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a stub wheel that raises on import
        hint = install_hint(l4t_release(), driver_cuda_version())
        raise UserError(f"TensorRT is not installed: {hint} "
                        f"(all install paths: docs/tensorrt.md) ({type(exc).__name__}: {exc})") from None
    return trt


def cudart_module():
    """cuda-python's runtime bindings (new layout first, then the pre-12.6 `from cuda import cudart`)."""
    try:
        from cuda.bindings import runtime as cudart
    except Exception:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except Exception:
            return None
    return cudart


def bindings_version() -> str | None:
    for dist in ("cuda-bindings", "cuda-python"):  # cuda-python >= 12.6 is a meta package over cuda-bindings
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return None


# ----------------------------------------------------------------------------- CUDA errors

def error_name(code: int, cudart=None) -> str:
    """'cudaErrorInsufficientDriver (35): CUDA driver version is insufficient for CUDA runtime version'."""
    cudart = cudart or cudart_module()
    if cudart is not None:
        with contextlib.suppress(Exception):
            err = cudart.cudaError_t(int(code))
            name, text = cudart.cudaGetErrorName(err)[1], cudart.cudaGetErrorString(err)[1]
            decode = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else str(b)
            return f"{decode(name)} ({int(code)}): {decode(text)}"
    return f"CUDA error {int(code)}"


def cuda_call(result, what: str = "CUDA call", cudart=None):
    """cuda-python calls return (error, *values): a CudaError naming the error, else the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CudaError(f"{what} failed: {error_name(int(err), cudart)}{_driver_note(int(err))}")
    return values[0] if len(values) == 1 else values


def _driver_note(code: int) -> str:
    if code not in (35, 34):  # insufficient driver, stub library
        return ""
    driver, bindings = driver_cuda_version(), bindings_version()
    if driver is None:
        return " (no NVIDIA driver is loaded on this machine)"
    try:
        fix = f": pip install '{choose_target(driver_cuda=driver).cuda_python}'"
    except UserError as exc:  # a driver older than any supported CUDA: say that instead
        fix = f": {exc}"
    return f" (driver supports CUDA {driver}, cuda-python {bindings}{fix})"


def driver_cuda_version() -> str | None:
    """The CUDA version the loaded driver supports ('12.6'), None without a driver."""
    cudart = cudart_module()
    version = 0
    if cudart is not None:
        with contextlib.suppress(Exception):
            err, version = cudart.cudaDriverGetVersion()
            version = int(version) if int(err) == 0 else 0
    if not version:
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            value = ctypes.c_int(0)
            if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(value)) == 0:
                version = value.value
    return f"{version // 1000}.{version % 1000 // 10}" if version else None


def check_cuda_bindings() -> object:
    """The runtime bindings, checked against the driver before any real call: a missing module,
    no driver, or bindings of a newer CUDA major than the driver are one line each."""
    cudart = cudart_module()
    if cudart is None:
        raise UserError(f"timing TensorRT needs the CUDA Python bindings: {install_hint(l4t_release(), driver_cuda_version())}")
    driver, bindings = driver_cuda_version(), bindings_version()
    if driver is None:
        raise CudaError("no NVIDIA driver is loaded on this machine (cudaDriverGetVersion reports none): "
                        "TensorRT engines run on an NVIDIA GPU")
    if bindings and not bindings_fit_driver(bindings, driver):
        pin = choose_target(driver_cuda=driver).cuda_python
        raise CudaError(f"cuda-python {bindings} needs a CUDA {bindings.split('.')[0]} driver, this driver supports CUDA "
                        f"{driver} (every call would fail with cudaErrorInsufficientDriver): pip install '{pin}'")
    return cudart


# ----------------------------------------------------------------------------- the runtime library

CUDART_WHEEL_DIRS = ("nvidia/cu13/lib", "nvidia/cu12/lib", "nvidia/cuda_runtime/lib")


def find_cudart() -> Path | None:
    """libcudart.so of this environment: NVIDIA's cuda-pathfinder where installed (it knows the
    CUDA 12 and 13 wheel layouts, conda and CUDA_HOME), else the wheels' folders, else the toolkit."""
    with contextlib.suppress(Exception):
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return Path(os.path.normpath(load_nvidia_dynamic_lib("cudart").abs_path))  # torch may have loaded it via lib/../..
    import site
    import sys

    roots = [Path(p) for p in [*sys.path, *site.getsitepackages()] if p]
    candidates = [root / sub for root in roots for sub in CUDART_WHEEL_DIRS]
    candidates += [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "lib64", Path("/usr/local/cuda/lib64")]
    for folder in candidates:
        found = sorted(folder.glob("libcudart.so*")) if folder.is_dir() else []
        if found:
            return found[-1]
    return None


def prepare_polygraphy_cuda() -> Path:
    """Put the CUDA runtime's folder first on LD_LIBRARY_PATH, where polygraphy's CUDA wrapper
    looks (polygraphy 0.53 knows only the CUDA 12 wheel's nvidia/cuda_runtime/lib, not CUDA 13's
    nvidia/cu13/lib). Called before polygraphy first touches CUDA."""
    lib = find_cudart()
    if lib is None:
        raise UserError("no CUDA runtime library (libcudart.so) found: install the CUDA toolkit or "
                        "`pip install nvidia-cuda-runtime` for your driver's CUDA major")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != str(lib.parent)]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(lib.parent), *paths])
    return lib


_POLYGRAPHY_CUDA = re.compile(r"CUDA Error: (\d+)")


@contextlib.contextmanager
def gpu_errors(what: str):
    """TensorRT, polygraphy and CUDA failures inside the block become one-line UserErrors (exit 2):
    polygraphy raises PolygraphyException after logging, ctypes an OSError for a missing library,
    TensorRT's bindings RuntimeError. Other types (a TypeError from a wrong call) are bugs and stay
    tracebacks."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if not _is_gpu_stack_error(exc):
            raise
        text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        if m := _POLYGRAPHY_CUDA.search(text):
            text = error_name(int(m.group(1))) + _driver_note(int(m.group(1)))
        raise UserError(f"{what}: {text[:300]}") from None


def _is_gpu_stack_error(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, RuntimeError, ImportError)):
        return True
    return any(c.__name__ == "PolygraphyException" for c in type(exc).__mro__)


# ----------------------------------------------------------------------------- the GPU

@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"
    sm_count: int | None = None  # tells Orin modules apart: all are "Orin", 8.7
    module: str | None = None  # the Jetson's /proc/device-tree/model; None on a discrete GPU

    @property
    def label(self) -> str:
        """The GPU in engine names: the name, plus the SM count on a Jetson, where one name covers
        several modules (AGX Orin 16 SMs, Orin NX 16 GB 8, Orin Nano 4 GB 4)."""
        return f"{self.name} {self.sm_count}sm" if self.module and self.sm_count else self.name


def gpu_info(device: int = 0) -> GpuInfo:
    """Name, compute capability, SM count and Jetson module of CUDA device `device` (cuda-python,
    else torch)."""
    module = device_tree_model()
    cudart = cudart_module()
    if cudart is not None:
        with contextlib.suppress(Exception):
            err, props = cudart.cudaGetDeviceProperties(device)
            if int(err) == 0:
                name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
                return GpuInfo(name.strip("\x00 ").strip(), f"{props.major}.{props.minor}", int(props.multiProcessorCount), module)
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(device)
            return GpuInfo(props.name, f"{props.major}.{props.minor}", int(props.multi_processor_count), module)
    raise UserError("no CUDA GPU is visible on this machine: TensorRT engines must be built and run on the GPU that uses them")


def tensorrt_install(trt) -> dict:
    """What the engine entries and bench rows record about the TensorRT in use: its version, the
    distributions that provide the module (tensorrt, tensorrt-cu12/-cu13 and their -bindings;
    none for JetPack's apt python3-libnvinfer, recorded by path), the bindings and the driver."""
    dists = sorted(set(metadata.packages_distributions().get("tensorrt", [])))
    source = ", ".join(f"{d} {_dist_version(d)}" for d in dists) or f"{Path(trt.__file__).parent} (system package)"
    return {"tensorrt": str(trt.__version__), "tensorrt_source": source, "cuda_python": bindings_version(),
            "driver_cuda": driver_cuda_version()}


def _dist_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"
