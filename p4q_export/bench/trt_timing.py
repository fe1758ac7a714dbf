"""Timing a TensorRT engine honestly: device time and end-to-end time, measured apart.

Polygraphy's `infer` copies inputs to the GPU, runs, copies outputs back and returns numpy
arrays; timing it puts host↔device copies and Python into every figure. Here the engine runs on
its own execution context (TensorRT's tensor-address API, `execute_async_v3`) with device buffers
allocated once (cuda-python, bench/cuda_io.py):

- device time: a pair of CUDA events recorded on the stream around `execute_async_v3` alone;
- end to end: perf_counter around host→device copy, execution, device→host copy and the stream
  synchronize (pageable host memory, as a numpy caller has it).

Where `trtexec` is found (--trtexec, PATH, or where JetPack and the TensorRT tarball put it),
`trtexec_figures` runs it on the same plan and shape and parses its performance summary, so both
tools' numbers sit side by side.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..runtime.cuda_env import check_cuda_bindings, gpu_errors, require_tensorrt
from .cuda_io import DeviceIO
from .timing import Timing, summarize


class EngineExecution:
    """One engine, one input shape: an execution context over DeviceIO's buffers and stream."""

    def __init__(self, plan: Path, input_name: str, inputs: np.ndarray):
        trt = require_tensorrt()
        cudart = check_cuda_bindings()  # bindings newer than the driver: one line, not error 35 on every call
        self.trt, self.io = trt, None
        logger = trt.Logger(trt.Logger.ERROR)
        with gpu_errors(f"TensorRT could not load {Path(plan).name}"):
            trt.init_libnvinfer_plugins(logger, "")  # engines with plugin layers deserialize only after this
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not load {plan} (built by another TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.input_name = input_name
        if not self.context.set_input_shape(input_name, tuple(inputs.shape)):
            lo, _, hi = self.engine.get_tensor_profile_shape(input_name, 0)
            raise UserError(f"batch {inputs.shape[0]} is outside the engine's profile ({lo[0]}..{hi[0]}): "
                            "rebuild it with `build-engine --batch MIN,OPT,MAX`")
        self.io = DeviceIO(cudart)
        try:
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                host = inputs.astype(dtype, copy=False) if name == input_name else \
                    np.empty(tuple(self.context.get_tensor_shape(name)), dtype)
                self.context.set_tensor_address(name, self.io.allocate(name, host))
        except BaseException:
            self.close()
            raise
        self.outputs = [n for n in self.io.host if n != input_name]
        self.batch = int(inputs.shape[0])

    def execute(self) -> None:
        if not self.context.execute_async_v3(int(self.io.stream)):
            raise UserError("TensorRT execute_async_v3 failed (see TensorRT's log above)")

    def round_trip(self) -> None:
        """Host→device, execute, device→host, synchronize: what one numpy call costs."""
        self.io.upload(self.input_name)
        self.execute()
        for name in self.outputs:
            self.io.download(name)
        self.io.synchronize()

    def time_device(self, iterations: int, warmup: int) -> Timing:
        """CUDA events around execute_async_v3 only (the input is already on the GPU)."""
        self.round_trip()  # the input on the device once
        for _ in range(max(0, warmup)):
            self.execute()
        self.io.synchronize()
        latencies, seconds, start, end = self.io.event_times(self.execute, iterations)
        return summarize(latencies, batch=self.batch, seconds=seconds, start=start, end=end)

    def time_end_to_end(self, iterations: int, warmup: int) -> Timing:
        for _ in range(max(0, warmup)):
            self.round_trip()
        latencies = []
        start, t_start = time.monotonic(), time.perf_counter()
        for _ in range(iterations):
            t0 = time.perf_counter()
            self.round_trip()
            latencies.append((time.perf_counter() - t0) * 1000.0)
        seconds = time.perf_counter() - t_start
        return summarize(latencies, batch=self.batch, seconds=seconds, start=start, end=time.monotonic())

    def close(self) -> None:
        if self.io is not None:
            self.io.close()
            self.io = None


# ----------------------------------------------------------------------------- trtexec

# JetPack's deb and the TensorRT tarball put trtexec outside PATH; pip TensorRT ships none
TRTEXEC_PLACES = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")


def find_trtexec(explicit: str | None = None, env: dict | None = None) -> str | None:
    """--trtexec PATH, else PATH, else $TENSORRT_ROOT/bin or $TRT_ROOT/bin, else JetPack's and the
    tarball's usual places. An explicit path that is not an executable is bad input."""
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UserError(f"--trtexec {explicit}: no executable trtexec there")
        return str(path)
    env = os.environ if env is None else env
    found = shutil.which("trtexec", path=env.get("PATH"))
    if found:
        return found
    roots = [env[k] + "/bin/trtexec" for k in ("TENSORRT_ROOT", "TRT_ROOT") if env.get(k)]
    for place in [*roots, *TRTEXEC_PLACES]:
        if Path(place).is_file() and os.access(place, os.X_OK):
            return place
    return None


_SUMMARY_KEYS = {"Throughput": "throughput_qps", "Latency": "latency", "GPU Compute Time": "gpu_compute",
                 "H2D Latency": "h2d", "D2H Latency": "d2h", "Enqueue Time": "enqueue"}
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([0-9.eE+-]+)\s*ms")


def parse_trtexec_summary(text: str, batch: int | None = None) -> dict:
    """trtexec's '=== Performance summary ===' lines → {gpu_compute: {median_ms, mean_ms, p90_ms,
    p99_ms, p99.9_ms, ...}, latency: {...}, h2d, d2h, enqueue, throughput_qps}. trtexec counts
    inferences (one per batch) per second: with `batch`, images_per_s = throughput_qps × batch."""
    out: dict = {}
    for line in text.splitlines():
        # "[date] [I] Latency: ..." as printed, or without the prefixes as often pasted
        m = re.search(r"(?:^|\]\s*)(Throughput|Latency|GPU Compute Time|H2D Latency|D2H Latency|Enqueue Time):\s*(.*)$", line.strip())
        if not m or m.group(1) not in _SUMMARY_KEYS:
            continue
        key, rest = _SUMMARY_KEYS[m.group(1)], m.group(2)
        if key == "throughput_qps":
            num = re.match(r"([0-9.eE+-]+)\s*qps", rest)
            if num:
                out[key] = float(num.group(1))
            continue
        stats = {}
        for name, pct, value in _STAT.findall(rest):
            stats[f"p{pct}_ms" if pct else f"{name}_ms"] = float(value)
        if stats:
            out[key] = stats
    if batch and "throughput_qps" in out:
        out["batch"] = int(batch)
        out["images_per_s"] = round(out["throughput_qps"] * int(batch), 3)
    return out


def trtexec_figures(plan: Path, input_name: str, shape: tuple[int, ...], iterations: int, timeout_s: int = 600,
                    trtexec: str | None = None) -> dict | None:
    """trtexec's own figures for the same plan and input shape, or None where there is no trtexec."""
    exe = find_trtexec(trtexec)
    if exe is None:
        return None
    dims = "x".join(str(d) for d in shape)
    cmd = [exe, f"--loadEngine={plan}", f"--shapes={input_name}:{dims}", f"--iterations={iterations}", "--warmUp=200", "--duration=0"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"trtexec did not finish in {timeout_s} s"}
    except OSError as exc:
        return {"error": f"trtexec did not start: {exc}"}
    summary = parse_trtexec_summary(proc.stdout + proc.stderr, batch=shape[0])
    if proc.returncode != 0 or not summary:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return {"error": f"trtexec exited {proc.returncode}: {tail[0][:200]}"}
    return {"command": " ".join(cmd), **summary}
