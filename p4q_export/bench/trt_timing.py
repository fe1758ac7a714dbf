"""Timing a TensorRT engine honestly: device time and end-to-end time, measured apart.

Polygraphy's `infer` copies inputs to the GPU, runs, copies outputs back and returns numpy
arrays; timing it puts host↔device copies and Python into every figure. Here the engine runs on
its own execution context (TensorRT's tensor-address API, `execute_async_v3`) with device buffers
allocated once (cuda-python):

- device time: a pair of CUDA events recorded on the stream around `execute_async_v3` alone;
- end to end: perf_counter around host→device copy, execution, device→host copy and the stream
  synchronize (pageable host memory, as a numpy caller has it).

When `trtexec` is on PATH, `trtexec_figures` runs it on the same plan and shape and parses its
performance summary, so both tools' numbers sit side by side.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..runtime.trt_engine import cudart_module, require_tensorrt
from .timing import Timing, summarize


def _ok(result):
    """cuda-python calls return (error, *values): raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA runtime error {int(err)}")
    return values[0] if len(values) == 1 else values


class EngineExecution:
    """One engine, one input shape: device buffers, a stream and an execution context."""

    def __init__(self, plan: Path, input_name: str, inputs: np.ndarray):
        trt = require_tensorrt()
        cudart = cudart_module()
        if cudart is None:
            raise UserError("timing TensorRT needs cuda-python: pip install cuda-python")
        self.trt, self.cudart = trt, cudart
        self.engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not load {plan} (built by another TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.input_name = input_name
        if not self.context.set_input_shape(input_name, tuple(inputs.shape)):
            lo, _, hi = self.engine.get_tensor_profile_shape(input_name, 0)
            raise UserError(f"batch {inputs.shape[0]} is outside the engine's profile ({lo[0]}..{hi[0]}): "
                            "rebuild it with `build-engine --batch MIN,OPT,MAX`")
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, int] = {}
        self.stream = _ok(cudart.cudaStreamCreate())
        try:
            self._allocate(inputs)
        except BaseException:
            self.close()
            raise

    def _allocate(self, inputs: np.ndarray) -> None:
        trt, cudart, input_name = self.trt, self.cudart, self.input_name
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(self.context.get_tensor_shape(name))
            self.host[name] = np.ascontiguousarray(inputs, dtype=dtype) if name == input_name else np.empty(shape, dtype)
            self.device[name] = int(_ok(cudart.cudaMalloc(max(1, self.host[name].nbytes))))
            self.context.set_tensor_address(name, self.device[name])
        self.outputs = [n for n in self.host if n != input_name]

    def execute(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def round_trip(self) -> None:
        """Host→device, execute, device→host, synchronize: what one numpy call costs."""
        c = self.cudart
        x = self.host[self.input_name]
        _ok(c.cudaMemcpyAsync(self.device[self.input_name], x.ctypes.data, x.nbytes, c.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        self.execute()
        for name in self.outputs:
            y = self.host[name]
            _ok(c.cudaMemcpyAsync(y.ctypes.data, self.device[name], y.nbytes, c.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _ok(c.cudaStreamSynchronize(self.stream))

    def time_device(self, iterations: int, warmup: int) -> Timing:
        """CUDA events around execute_async_v3 only (the input is already on the GPU)."""
        c = self.cudart
        self.round_trip()  # the input on the device once
        for _ in range(max(0, warmup)):
            self.execute()
        _ok(c.cudaStreamSynchronize(self.stream))
        pairs = [(_ok(c.cudaEventCreate()), _ok(c.cudaEventCreate())) for _ in range(iterations)]
        start, t0 = time.monotonic(), time.perf_counter()
        for begin, end in pairs:
            _ok(c.cudaEventRecord(begin, self.stream))
            self.execute()
            _ok(c.cudaEventRecord(end, self.stream))
        _ok(c.cudaStreamSynchronize(self.stream))
        seconds = time.perf_counter() - t0
        latencies = [float(_ok(c.cudaEventElapsedTime(begin, end))) for begin, end in pairs]
        for begin, end in pairs:
            c.cudaEventDestroy(begin)
            c.cudaEventDestroy(end)
        return summarize(latencies, batch=int(self.host[self.input_name].shape[0]), seconds=seconds, start=start, end=time.monotonic())

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
        return summarize(latencies, batch=int(self.host[self.input_name].shape[0]), seconds=seconds, start=start, end=time.monotonic())

    def close(self) -> None:
        for ptr in self.device.values():
            self.cudart.cudaFree(ptr)
        self.device = {}
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None


# ----------------------------------------------------------------------------- trtexec

_SUMMARY_KEYS = {"Throughput": "throughput_qps", "Latency": "latency", "GPU Compute Time": "gpu_compute",
                 "H2D Latency": "h2d", "D2H Latency": "d2h", "Enqueue Time": "enqueue"}
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+)%\))\s*=\s*([0-9.eE+-]+)\s*ms")


def parse_trtexec_summary(text: str) -> dict:
    """trtexec's '=== Performance summary ===' lines → {gpu_compute: {median_ms, mean_ms, p90_ms,
    p99_ms, ...}, latency: {...}, h2d: ..., d2h: ..., enqueue: ..., throughput_qps: float}."""
    out: dict = {}
    for line in text.splitlines():
        m = re.search(r"\]\s*(Throughput|Latency|GPU Compute Time|H2D Latency|D2H Latency|Enqueue Time):\s*(.*)$", line)
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
    return out


def trtexec_figures(plan: Path, input_name: str, shape: tuple[int, ...], iterations: int, timeout_s: int = 600) -> dict | None:
    """trtexec's own figures for the same plan and input shape, or None where it is not on PATH."""
    exe = shutil.which("trtexec")
    if exe is None:
        return None
    dims = "x".join(str(d) for d in shape)
    cmd = [exe, f"--loadEngine={plan}", f"--shapes={input_name}:{dims}", f"--iterations={iterations}", "--warmUp=200", "--duration=0"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"trtexec did not finish in {timeout_s} s"}
    summary = parse_trtexec_summary(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not summary:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return {"error": f"trtexec exited {proc.returncode}: {tail[0][:200]}"}
    return {"command": " ".join(cmd), **summary}
