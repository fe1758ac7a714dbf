"""Benchmark a bundle on this machine: every backend/precision available here, each batch size,
warm-up then timed iterations; machine facts; tegrastats power on a Jetson; report files."""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import jetson
from .timing import time_callable

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "jetson")
# (backend, precision) in report order; the contract's names.
CPU_BACKENDS = [("torch", "fp32"), ("torch", "int8"), ("ort", "fp32"), ("ort", "int8"), ("ort-exact", "int8")]
GPU_BACKENDS = [("trt", "fp16"), ("trt", "int8")]
DEFAULT_SKIP = {("torch", "int8")}  # the fake-quant reference is slow and not a deployment target: opt-in


@dataclass
class BenchRequest:
    bundle: Path
    device: str = "cpu"
    batches: list = field(default_factory=lambda: [1, 8, 32])
    iterations: int = 20
    warmup: int = 3
    backends: list | None = None  # ["ort/int8", "torch/fp32", ...]; None = all available
    threads: int | None = None
    build_engines: bool = True
    tegrastats_interval_ms: int = 100


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in str(text).split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--batch expects comma-separated sizes like 1,8,32, got {text!r}") from None
    if not batches or min(batches) < 1:
        raise UserError(f"--batch sizes must be positive integers, got {text!r}")
    return batches


def parse_backends(text: str | None) -> list | None:
    if not text:
        return None
    known = {f"{b}/{p}" for b, p in CPU_BACKENDS + GPU_BACKENDS}
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise UserError(f"unknown backend {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    return chosen


# ----------------------------------------------------------------------------- machine facts

def cpu_info(cpuinfo_text: str | None = None) -> dict:
    """CPU model, core counts and the SIMD flags that decide INT8 speed (VNNI) from /proc/cpuinfo."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo_text = ""
    fields: dict = {}
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key and key not in fields:
            fields[key] = value.strip()
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name") or fields.get("hardware") or platform.processor() or platform.machine()
    return {
        "model": model,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "available_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni", "avx512vnni"}) or "asimddp" in flags,  # x86 VNNI / Arm dot product
        "amx_int8": "amx_int8" in flags,
    }


def machine_info(device: str) -> dict:
    from ..manifest import versions

    info = {"hostname": platform.node(), "cpu": cpu_info(), "versions": versions()}
    if device in ("cuda", "jetson"):
        from ..runtime.trt_engine import gpu_info

        try:
            g = gpu_info()
            info["gpu"] = {"name": g.name, "compute_capability": g.compute_capability}
        except UserError:
            info["gpu"] = None
    if device == "jetson":
        info["jetson"] = jetson.probe()
    return info


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "jetson" and not jetson.is_jetson():
        raise UserError("--device jetson: this machine is not a Jetson (no /etc/nv_tegra_release); "
                        "run on the Jetson or add --host USER@JETSON")
    if device == "cuda":
        from ..runtime.trt_engine import gpu_info

        gpu_info()  # UserError when no GPU is visible


# ----------------------------------------------------------------------------- runners

def _open(bundle, backend: str, precision: str, threads: int | None) -> Callable:
    from ..runtime.base import open_runner

    opts: dict = {"precision": precision}
    if backend in ("ort", "ort-exact") and threads:
        opts["threads"] = threads
    return open_runner(bundle, backend, **opts)


def _ensure_engine(bundle, precision: str) -> None:
    """Engines are per GPU + TensorRT version: build the missing one here (minutes, once)."""
    from ..runtime import trt_engine

    trt = trt_engine.require_tensorrt()
    try:
        trt_engine.find_engine(bundle.path, trt_engine.gpu_info(), trt.__version__, precision)
    except UserError:
        log.warning("building the %s TensorRT engine for this GPU (first run only)", precision)
        options = trt_engine.BuildOptions(int8=precision == "int8", fp16=True)
        trt_engine.build_engine(bundle.path, options)


def candidate_backends(device: str, chosen: list | None) -> list[tuple[str, str]]:
    pairs = CPU_BACKENDS + (GPU_BACKENDS if device in ("cuda", "jetson") else [])
    if chosen is None:
        return [p for p in pairs if p not in DEFAULT_SKIP]
    return [p for p in pairs if f"{p[0]}/{p[1]}" in chosen]


def random_inputs(bundle, batch: int, seed: int = 0) -> np.ndarray:
    """Timing does not depend on pixel values; shape and dtype match the bundle's input."""
    rng = np.random.default_rng(seed)
    s = bundle.image_size
    if bundle.uint8_input:
        return rng.integers(0, 256, size=(batch, 3, s, s), dtype=np.uint8)
    return rng.standard_normal((batch, 3, s, s), dtype=np.float32)


# ----------------------------------------------------------------------------- the run

def run_bench(req: BenchRequest) -> dict:
    from ..deploy.bundle import load_bundle

    check_device(req.device)
    if req.iterations < 1 or req.warmup < 0:
        raise UserError("--iterations must be >= 1 and --warmup >= 0")
    bundle = load_bundle(req.bundle)
    sampler = None
    if req.device == "jetson":
        from .tegrastats import TegrastatsSampler

        if TegrastatsSampler.available():
            sampler = TegrastatsSampler(req.tegrastats_interval_ms).__enter__()
        else:
            log.warning("tegrastats not found: no power numbers")
    results, skipped = [], []
    try:
        for backend, precision in candidate_backends(req.device, req.backends):
            try:
                if backend == "trt" and req.build_engines:
                    _ensure_engine(bundle, precision)
                runner = _open(bundle, backend, precision, req.threads)
            except (UserError, ImportError, TypeError, NotImplementedError) as exc:
                skipped.append({"backend": backend, "precision": precision, "reason": str(exc).splitlines()[0]})
                log.warning("skipping %s/%s: %s", backend, precision, exc)
                continue
            for batch in req.batches:
                print(f"bench {backend}/{precision} batch {batch} ...", file=sys.stderr, flush=True)
                timing = time_callable(runner, random_inputs(bundle, batch), req.iterations, req.warmup)
                row = {"backend": backend, "precision": precision, **timing.as_result()}
                if sampler is not None:
                    row.update(_power(sampler, timing))
                results.append(row)
            close = getattr(runner, "close", None)
            if callable(close):
                close()
            del runner
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
    return {
        "device": req.device,
        "bundle": str(req.bundle),
        "model": bundle.manifest.get("model"),
        "profile": bundle.profile,
        "iterations": req.iterations,
        "warmup": req.warmup,
        "results": results,
        "skipped": skipped,
        "accuracy": bundle.manifest.get("accuracy"),
        "machine": machine_info(req.device),
    }


def _power(sampler, timing) -> dict:
    from .tegrastats import images_per_joule, mean_input_power_w

    samples = sampler.between(timing.start, timing.end)
    if not samples:  # a window shorter than the sampling interval: take the nearest later sample
        samples = sampler.between(timing.start, timing.end + 1.0)[:1]
    if not samples:
        return {"power_w": None, "images_per_joule": None}
    images = timing.batch * timing.iterations
    watts = mean_input_power_w(samples)
    return {"power_w": round(watts, 3) if watts else None, "power_rail": samples[0].input_rail,
            "power_samples": len(samples),
            "images_per_joule": round(images_per_joule(images, timing.seconds, samples) or 0.0, 3) or None}
