"""Warm-up, then timed iterations of one callable; latency percentiles and throughput.
`time_callable` times host-synchronous calls with perf_counter; `time_cuda_events` times GPU work
with a pair of CUDA events per iteration."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Timing:
    batch: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_ips: float  # images per second over the whole timed window
    seconds: float  # wall time of the timed window
    start: float  # time.monotonic() at the start of the timed window (for power sampling)
    end: float

    def as_result(self) -> dict:
        return {"batch": self.batch, "iterations": self.iterations, "p50_ms": round(self.p50_ms, 3),
                "p90_ms": round(self.p90_ms, 3), "p99_ms": round(self.p99_ms, 3),
                "mean_ms": round(self.mean_ms, 3), "throughput_ips": round(self.throughput_ips, 2)}


def summarize(latencies_ms: list[float], batch: int, seconds: float, start: float = 0.0, end: float = 0.0) -> Timing:
    lat = np.asarray(latencies_ms, dtype=np.float64)
    if lat.size == 0:
        raise ValueError("no timed iterations")
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    return Timing(batch=batch, iterations=int(lat.size), p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99),
                  mean_ms=float(lat.mean()), throughput_ips=batch * lat.size / seconds if seconds > 0 else 0.0,
                  seconds=seconds, start=start, end=end)


def time_callable(fn: Callable[[np.ndarray], object], inputs: np.ndarray, iterations: int = 20, warmup: int = 3) -> Timing:
    """Call fn(inputs) `warmup` times untimed (lazy init, allocator, caches), then `iterations`
    times, each timed with perf_counter. The runner must return when its output is ready (ORT and
    polygraphy's TrtRunner copy outputs to host, so they do)."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    for _ in range(max(0, warmup)):
        fn(inputs)
    latencies = []
    start = time.monotonic()
    t_start = time.perf_counter()
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn(inputs)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    seconds = time.perf_counter() - t_start
    return summarize(latencies, batch=int(inputs.shape[0]), seconds=seconds, start=start, end=time.monotonic())


def time_cuda_events(fn: Callable[[Any], object], inputs: Any, iterations: int = 20, warmup: int = 3) -> Timing:
    """Call fn(inputs) `warmup` times untimed (cuBLAS/cuDNN heuristics, the caching allocator,
    lazy module init), then `iterations` times, each between two CUDA events recorded on the
    current stream and synchronized on the end event, so a latency is the GPU time of one call
    (kernel launches are asynchronous: perf_counter alone would time the launch, not the work).
    `inputs` (numpy or a device tensor) is what fn gets; whether a host→device copy is timed
    depends on which of the two the caller passes. Throughput is over the wall time of the window."""
    import torch

    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    for _ in range(max(0, warmup)):
        fn(inputs)
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iterations)]
    start = time.monotonic()
    t_start = time.perf_counter()
    for begin, end in events:
        begin.record()
        fn(inputs)
        end.record()
        end.synchronize()
    seconds = time.perf_counter() - t_start
    latencies = [begin.elapsed_time(end) for begin, end in events]  # milliseconds
    return summarize(latencies, batch=int(inputs.shape[0]), seconds=seconds, start=start, end=time.monotonic())
