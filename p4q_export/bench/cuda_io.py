"""The CUDA half of timing an engine, through cuda-python alone: a stream, device buffers for
host arrays, copies both ways and CUDA-event timing. Kept apart from TensorRT so that it runs (and
is tested) on any NVIDIA GPU, with or without TensorRT."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..runtime.cuda_env import cuda_call


class DeviceIO:
    def __init__(self, cudart):
        self.cudart = cudart
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, int] = {}
        self.stream = cuda_call(cudart.cudaStreamCreate(), "cudaStreamCreate", cudart)

    def allocate(self, name: str, host: np.ndarray) -> int:
        """A device buffer the size of `host` (kept as the copy's host side); its address."""
        self.host[name] = np.ascontiguousarray(host)
        self.device[name] = int(cuda_call(self.cudart.cudaMalloc(max(1, self.host[name].nbytes)), "cudaMalloc", self.cudart))
        return self.device[name]

    def upload(self, name: str) -> None:
        c, x = self.cudart, self.host[name]
        cuda_call(c.cudaMemcpyAsync(self.device[name], x.ctypes.data, x.nbytes, c.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                    self.stream), "cudaMemcpyAsync (host to device)", c)

    def download(self, name: str) -> None:
        c, y = self.cudart, self.host[name]
        cuda_call(c.cudaMemcpyAsync(y.ctypes.data, self.device[name], y.nbytes, c.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                    self.stream), "cudaMemcpyAsync (device to host)", c)

    def synchronize(self) -> None:
        cuda_call(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize", self.cudart)

    def event_times(self, run: Callable[[], None], iterations: int) -> tuple[list[float], float, float, float]:
        """Milliseconds of `run` (work queued on this stream) per iteration between CUDA events, the
        wall seconds of the loop, and its monotonic start and end (for power samples)."""
        c = self.cudart
        pairs = [(cuda_call(c.cudaEventCreate(), "cudaEventCreate", c), cuda_call(c.cudaEventCreate(), "cudaEventCreate", c))
                 for _ in range(iterations)]
        try:
            start, t0 = time.monotonic(), time.perf_counter()
            for begin, end in pairs:
                cuda_call(c.cudaEventRecord(begin, self.stream), "cudaEventRecord", c)
                run()
                cuda_call(c.cudaEventRecord(end, self.stream), "cudaEventRecord", c)
            self.synchronize()
            seconds = time.perf_counter() - t0
            latencies = [float(cuda_call(c.cudaEventElapsedTime(begin, end), "cudaEventElapsedTime", c)) for begin, end in pairs]
        finally:
            for begin, end in pairs:
                c.cudaEventDestroy(begin)
                c.cudaEventDestroy(end)
        return latencies, seconds, start, time.monotonic()

    def close(self) -> None:
        for ptr in self.device.values():
            self.cudart.cudaFree(ptr)
        self.device = {}
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
