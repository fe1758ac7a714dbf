"""The CUDA side of TensorRT, on this GPU-less machine with the real libraries: cuda-python's
runtime bindings (a torch dependency here) fail every call with cudaErrorInsufficientDriver, as
cuda-python 13 does on a CUDA 12 driver; polygraphy's CUDA wrapper loads a real libcudart and fails
the same way. Every such failure must reach the user as one named line, and the install pins must
follow the driver's CUDA major."""

import ctypes
import os

import pytest

from p4q_export.errors import UserError
from p4q_export.runtime import cuda_env
from p4q_export.runtime.trt_install import (
    JETPACK60,
    TARGETS,
    bindings_fit_driver,
    choose_target,
    install_hint,
)

cudart = cuda_env.cudart_module()
needs_bindings = pytest.mark.skipif(cudart is None, reason="cuda-python's runtime bindings are not installed here")
no_driver = cuda_env.driver_cuda_version() is None
needs_no_driver = pytest.mark.skipif(not no_driver, reason="checks the failure where no NVIDIA driver is loaded")


# ----------------------------------------------------------------------------- the pin decision table

@pytest.mark.parametrize("l4t,driver,key,pin", [
    ("36.4.3", None, "jetpack6", "cuda-python>=12.6,<12.7"),  # JetPack 6.2: TensorRT 10.3, CUDA 12.6, Python 3.10
    ("36.4.4", None, "jetpack6", "cuda-python>=12.6,<12.7"),
    ("36.3.0", None, "jetpack60", "cuda-python>=12.2,<12.3"),  # JetPack 6.0: CUDA 12.2
    ("38.2.0", None, "jetpack7", "cuda-python>=13,<14"),  # JetPack 7.0 (Thor): CUDA 13
    ("39.2.0", None, "jetpack7", "cuda-python>=13,<14"),  # JetPack 7.2 (Thor and AGX Orin)
    (None, "12.2", "x86-trt10", "cuda-python>=12,<13"),  # an R535 driver
    (None, "12.8", "x86-trt10", "cuda-python>=12,<13"),  # R570
    (None, "13.0", "x86-trt11", "cuda-python>=13,<14"),  # R580
])
def test_each_target_pins_the_bindings_of_its_cuda(l4t, driver, key, pin):
    target = choose_target(l4t, driver)
    assert target.key == key and target.cuda_python == pin
    assert (pin in target.command) if target.extra is None else (f"p4q-export[{target.extra}]" in target.command)


def test_the_bindings_never_run_ahead_of_the_driver():
    """The finding: `pip install cuda-python` resolves to 13.x, which a CUDA 12 driver cannot run."""
    assert not bindings_fit_driver("13.4.4", "12.6") and not bindings_fit_driver("13.0.0", "12.8")
    assert bindings_fit_driver("12.9.0", "12.2") and bindings_fit_driver("12.6.2", "13.0")
    for target in [*TARGETS.values(), JETPACK60]:
        lower = target.cuda_python.split(">=")[1].split(",")[0]
        assert bindings_fit_driver(lower, target.cuda), target.key
        assert target.cuda.split(".")[0] in target.cuda_python  # the major is pinned, never open-ended
        assert "<" in target.cuda_python


def test_old_jetpack_and_old_drivers_are_refused_with_the_reason():
    with pytest.raises(UserError, match="JetPack 5"):
        choose_target("35.6.0")
    with pytest.raises(UserError, match="CUDA 12 driver"):
        choose_target(driver_cuda="11.8")
    assert "[trt10-cu12]" in install_hint() and "[jetpack7]" in install_hint()
    assert install_hint(driver_cuda="13.1") == f"on {TARGETS['x86-trt11'].title}: {TARGETS['x86-trt11'].command}"


def test_the_extras_in_pyproject_match_the_table():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for target in TARGETS.values():
        assert target.cuda_python in extras[target.extra], (target.extra, extras[target.extra])
    assert extras["tensorrt"] == ["p4q-export[trt10-cu12]"]


# ----------------------------------------------------------------------------- real CUDA failures

@needs_bindings
@needs_no_driver
def test_a_failing_cuda_call_is_one_named_line():
    with pytest.raises(cuda_env.CudaError) as err:
        cuda_env.cuda_call(cudart.cudaStreamCreate(), "cudaStreamCreate")
    message = str(err.value)
    assert "cudaStreamCreate failed: cudaErrorInsufficientDriver (35)" in message
    assert "no NVIDIA driver is loaded" in message and "\n" not in message
    assert isinstance(err.value, UserError)  # exit 2, not a traceback


@needs_bindings
@needs_no_driver
def test_the_start_up_check_names_the_missing_driver():
    with pytest.raises(cuda_env.CudaError, match="no NVIDIA driver is loaded"):
        cuda_env.check_cuda_bindings()


def test_error_names_come_from_the_runtime():
    if cudart is None:
        assert cuda_env.error_name(35) == "CUDA error 35"
    else:
        assert cuda_env.error_name(35).startswith("cudaErrorInsufficientDriver (35): CUDA driver version is insufficient")
        assert cuda_env.error_name(2).startswith("cudaErrorMemoryAllocation (2)")


def test_a_missing_runtime_library_is_one_line():
    with pytest.raises(UserError) as err, cuda_env.gpu_errors("TensorRT could not load x.plan"):
        ctypes.CDLL("libcudart.so.99")  # the loader's real OSError
    assert str(err.value).startswith("TensorRT could not load x.plan: libcudart.so.99") and "\n" not in str(err.value)
    with pytest.raises(ZeroDivisionError), cuda_env.gpu_errors("x"):  # a bug stays a bug
        _ = 1 / 0


@needs_bindings
def test_polygraphy_finds_the_pip_cuda_runtime_and_its_failure_is_one_line(monkeypatch):
    """polygraphy 0.53 looks for libcudart in nvidia/cuda_runtime/lib (the CUDA 12 wheel), not in
    nvidia/cu13/lib where the CUDA 13 wheel puts it; prepare_polygraphy_cuda puts the runtime first
    on the search path, then polygraphy's own CUDA wrapper loads it and fails as it would on a
    machine whose driver is too old: PolygraphyException 'CUDA Error: 35' becomes one named line."""
    from polygraphy import cuda as pcuda
    from polygraphy import util
    from polygraphy.cuda import cuda as pcuda_impl

    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    lib = cuda_env.find_cudart()
    assert lib is not None and lib.name.startswith("libcudart.so")
    if "cu13" in lib.parts:  # the finding: polygraphy's own search misses the CUDA 13 wheel
        assert str(lib.parent) not in pcuda_impl._find_cuda_lib_dirs()
    assert cuda_env.prepare_polygraphy_cuda() == lib
    assert os.environ["LD_LIBRARY_PATH"].split(os.pathsep)[0] == str(lib.parent)
    dirs = pcuda_impl._find_cuda_lib_dirs()
    assert util.find_in_dirs("libcudart.so*", dirs)[0].startswith(str(lib.parent))
    if not no_driver:
        return
    monkeypatch.setattr(pcuda_impl, "G_CUDA", None)  # a fresh wrapper, as in a new process
    with pytest.raises(UserError) as err, cuda_env.gpu_errors("TensorRT could not load engine.plan"):
        pcuda.Stream()
    message = str(err.value)
    assert message.startswith("TensorRT could not load engine.plan: cudaErrorInsufficientDriver (35)")
    assert "\n" not in message and "https://" not in message
    assert pcuda_impl.G_CUDA.handle._name.startswith(str(lib.parent))


def test_the_jetson_module_is_read_from_the_device_tree(tmp_path):
    assert cuda_env.device_tree_model(tmp_path) is None
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert cuda_env.device_tree_model(tmp_path) == "NVIDIA Jetson AGX Orin Developer Kit"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    assert cuda_env.l4t_release(tmp_path) == "36.4.3"
    assert choose_target(cuda_env.l4t_release(tmp_path)).key == "jetpack6"


def test_the_tensorrt_install_is_recorded_without_a_pip_distribution(tmp_path):
    """JetPack's apt python3-libnvinfer has no pip distribution: its path is recorded instead, beside
    the bindings and the driver (the module here is a stand-in with the attributes read)."""
    from types import SimpleNamespace

    module = SimpleNamespace(__version__="10.3.0", __file__="/usr/lib/python3.10/dist-packages/tensorrt/__init__.py")
    info = cuda_env.tensorrt_install(module)
    assert info["tensorrt"] == "10.3.0" and info["tensorrt_source"] == "/usr/lib/python3.10/dist-packages/tensorrt (system package)"
    assert info["cuda_python"] == cuda_env.bindings_version() and info["driver_cuda"] == cuda_env.driver_cuda_version()
    from p4q_export.manifest import TRACKED_PACKAGES

    assert {"tensorrt-cu12", "tensorrt-cu13", "cuda-python", "cuda-bindings"} <= set(TRACKED_PACKAGES)


@needs_bindings
@pytest.mark.gpu
@pytest.mark.skipif(no_driver, reason="needs an NVIDIA GPU and its driver (none here)")
def test_the_cuda_half_of_engine_timing_on_a_real_gpu():
    """What EngineExecution does around execute_async_v3, without TensorRT: buffers, both copies,
    a device-side operation on the stream, and CUDA-event timing of it."""
    import numpy as np

    from p4q_export.bench.cuda_io import DeviceIO

    io = DeviceIO(cuda_env.check_cuda_bindings())
    try:
        x = np.arange(8 * 3 * 32 * 32, dtype=np.float32).reshape(8, 3, 32, 32)
        ptr = io.allocate("x", x.copy())
        io.upload("x")
        io.host["x"][:] = 0
        io.download("x")
        io.synchronize()
        assert np.array_equal(io.host["x"], x)  # the round trip through device memory
        c = io.cudart
        zero = lambda: cuda_env.cuda_call(c.cudaMemsetAsync(ptr, 0, x.nbytes, io.stream), "cudaMemsetAsync", c)
        latencies, seconds, start, end = io.event_times(zero, 20)
        assert len(latencies) == 20 and all(0 <= ms < 1000 for ms in latencies) and end >= start and seconds > 0
        io.download("x")
        io.synchronize()
        assert not io.host["x"].any()  # the timed operation ran on the device
    finally:
        io.close()
    assert io.stream is None and io.device == {}
