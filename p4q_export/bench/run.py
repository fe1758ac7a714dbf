"""Benchmark a bundle on this machine: every backend/precision available here, each batch size,
warm-up then timed iterations; machine facts; tegrastats power on a Jetson; report files.

Every row says where it ran (`ran_on`: "cpu" or "cuda:0 (NAME)"). On `--device cuda` the torch
rows run on the GPU (FP32 with TF32 off, FP16, BF16; CUDA-event timing) next to TensorRT where it
is installed; ONNX Runtime here has only its CPU provider, so its rows are opt-in there. Which
rows: bench/plan.py, from the backend registry (runtime/backends)."""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import comma_list
from ..devices import cpu_info
from ..errors import UserError
from ..progress import log as say
from ..runtime.backends import backend_spec
from . import jetson
from .plan import GPU_DEVICES, parse_backends, plan_backends  # noqa: F401 (parse_backends: the bench API)
from .timing import Timing, time_callable, time_cuda_events

DEVICES = ("cpu", "cuda", "jetson")


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
    # torch rows on a GPU: False times the forward pass on an input already on the GPU; True also
    # times the host→device copy of the images and the device→host copy of the logits.
    include_copy: bool = False
    trtexec: str | None = None  # a trtexec executable; None: found where TensorRT installs put it


def parse_batches(text: str) -> list[int]:
    parts = comma_list(text, "--batch", "1,8,32")
    if not all(re.fullmatch(r"[0-9]+", p) and int(p) >= 1 for p in parts):
        raise UserError(f"--batch sizes must be positive integers, got '{text}'")
    return [int(p) for p in parts]


# ----------------------------------------------------------------------------- machine facts

def machine_info(device: str) -> dict:
    from ..manifest import versions

    info = {"hostname": platform.node(), "cpu": cpu_info(), "versions": versions()}
    if device in GPU_DEVICES:
        from ..runtime.trt_engine import gpu_info

        try:
            g = gpu_info()
            info["gpu"] = {"name": g.name, "compute_capability": g.compute_capability, "sm_count": g.sm_count,
                           "module": g.module}
        except UserError:
            info["gpu"] = None
        info["tensorrt"] = _tensorrt_install()
    if device == "jetson":
        from .tegrastats import input_rail_for

        info["jetson"] = jetson.probe()
        if info["jetson"]:
            info["jetson"]["input_rail"] = input_rail_for(info["jetson"].get("model"))
    return info


def _tensorrt_install() -> dict | None:
    """TensorRT's version, where it came from, the CUDA bindings and the driver (None without it)."""
    from ..runtime.cuda_env import tensorrt_install, trt_available

    if not trt_available():
        return None
    import tensorrt

    return tensorrt_install(tensorrt)


def split_device(device: str) -> tuple[str, str]:
    """`--device` → (kind: cpu|cuda|jetson, the torch device spec of the GPU): `auto` is cuda where
    PyTorch sees a GPU, `cuda:N` is the cuda kind on GPU N."""
    from ..devices import device_kind

    kind = device_kind(device)
    text = str(device).strip().lower()
    return kind, (text if kind == "cuda" and ":" in text else "cuda")


def check_device(device: str, gpu: str = "cuda"):
    """The torch.device the torch rows run on: CPU for cpu and jetson, the GPU `gpu` for cuda (None
    when only TensorRT sees the GPU: a CPU-only PyTorch build). No GPU for cuda is bad input."""
    import torch

    if device not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "jetson" and not jetson.is_jetson():
        raise UserError("--device jetson: this machine is not a Jetson (no /etc/nv_tegra_release); "
                        "run on the Jetson or add --host USER@JETSON")
    if device != "cuda":
        return torch.device("cpu")
    from ..devices import resolve_device

    try:
        return resolve_device(gpu)
    except UserError as exc:
        from ..runtime.trt_engine import gpu_info

        try:
            gpu_info()  # cuda-python may see a GPU that this PyTorch build cannot use
        except UserError:
            raise UserError(f"{exc}, or bench a GPU machine with --host USER@HOST") from None
        return None


def ran_on(backend: str, torch_device) -> str:
    """Where a row's arithmetic ran: what the `ran_on` key of every bench row records."""
    from ..devices import describe_device

    runs_on = backend_spec(backend).runs_on
    if runs_on == "torch" and torch_device is not None:
        return describe_device(torch_device)
    if runs_on != "gpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return describe_device(torch.device("cuda"))
    from ..runtime.trt_engine import gpu_info

    try:
        return f"cuda:0 ({gpu_info().name})"
    except UserError:
        return "cuda"


# ----------------------------------------------------------------------------- runners

def _open(bundle, backend: str, precision: str, threads: int | None, torch_device=None) -> Callable:
    from ..runtime.base import open_runner

    spec = backend_spec(backend)
    opts: dict = {"precision": precision}
    if spec.threads and threads:
        opts["threads"] = threads
    if spec.runs_on == "torch" and torch_device is None:
        import torch

        raise UserError(f"this PyTorch build ({torch.__version__}) has no CUDA: its rows would run on the CPU")
    return open_runner(bundle, backend, device=torch_device, **opts)


def _ensure_engine(bundle, precision: str) -> None:
    """Engines are per GPU + TensorRT version: build the missing one here (minutes, once)."""
    from ..runtime import trt_engine

    trt = trt_engine.require_tensorrt()
    try:
        trt_engine.find_engine(bundle.path, trt_engine.gpu_info(), trt.__version__, precision)
    except UserError:
        say(f"building the {precision} TensorRT engine for this GPU (first run only) ...")
        options = trt_engine.BuildOptions(engine=precision)
        trt_engine.build_engine(bundle.path, options)


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

    req.device, gpu = split_device(req.device)
    torch_device = check_device(req.device, gpu)
    if req.iterations < 1 or req.warmup < 0:
        raise UserError("--iterations must be >= 1 and --warmup >= 0")
    bundle = load_bundle(req.bundle)
    sampler = None
    if req.device == "jetson":
        from .tegrastats import TegrastatsSampler

        if TegrastatsSampler.available():
            from ..runtime.cuda_env import device_tree_model

            sampler = TegrastatsSampler(req.tegrastats_interval_ms, module=device_tree_model()).__enter__()
        else:
            say("tegrastats not found: no power numbers")
    pairs, skipped = plan_backends(req.device, req.backends)
    results = []
    try:
        for backend, precision in pairs:
            try:
                if backend_spec(backend).tensorrt and req.build_engines:
                    _ensure_engine(bundle, precision)
                runner = _open(bundle, backend, precision, req.threads, torch_device)
            except (UserError, ImportError, TypeError, NotImplementedError) as exc:
                skipped.append({"backend": backend, "precision": precision, "reason": str(exc).splitlines()[0]})
                say(f"skipping {backend}/{precision}: {skipped[-1]['reason']}")
                continue
            where = ran_on(backend, torch_device)
            for batch in req.batches:
                say(f"bench {backend}/{precision} batch {batch} on {where} ...")
                try:
                    row, timing = _time_row(runner, backend, precision, bundle, batch, req, torch_device)
                except _oom_errors() as exc:  # a batch too big for this GPU: report it, go on
                    skipped.append({"backend": backend, "precision": precision, "batch": batch,
                                    "reason": f"out of GPU memory ({str(exc).splitlines()[0][:120]})"})
                    say(f"skipping {backend}/{precision} batch {batch}: {skipped[-1]['reason']}")
                    _release_gpu_memory()
                    continue
                except (UserError, RuntimeError) as exc:  # e.g. a batch outside the engine's profile, a CUDA error
                    skipped.append({"backend": backend, "precision": precision, "batch": batch,
                                    "reason": str(exc).splitlines()[0][:200]})
                    say(f"skipping {backend}/{precision} batch {batch}: {skipped[-1]['reason']}")
                    continue
                row["ran_on"] = where
                if sampler is not None:
                    row.update(_power(sampler, timing))
                results.append(row)
            close = getattr(runner, "close", None)
            if callable(close):
                close()
            del runner
            _release_gpu_memory()
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


def _time_row(runner, backend: str, precision: str, bundle, batch: int, req: BenchRequest, torch_device) -> tuple[dict, Timing]:
    """One result row. Torch on a GPU: CUDA events, the input pre-allocated on the GPU unless
    req.include_copy. TensorRT: device time and end to end (_time_trt). Everything else:
    perf_counter around a host-synchronous call."""
    images = random_inputs(bundle, batch)
    extra: dict = {"timer": "perf_counter"}
    spec = backend_spec(backend)
    if spec.runs_on == "torch" and torch_device is not None and torch_device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(torch_device)
        if req.include_copy:
            timing = time_cuda_events(runner, images, req.iterations, req.warmup)
        else:
            timing = time_cuda_events(runner.forward, runner.to_device(images), req.iterations, req.warmup)
        from ..devices import peak_gpu_memory_mb

        extra = {"timer": "cuda-events", "includes_copy": bool(req.include_copy),
                 "peak_gpu_mb": peak_gpu_memory_mb(torch_device)}
    elif spec.tensorrt:
        timing, extra = _time_trt(runner, images, req)
    else:
        timing = time_callable(runner, images, req.iterations, req.warmup)
    return {"backend": backend, "precision": precision, **timing.as_result(), **extra}, timing


def _time_trt(runner, images, req: BenchRequest) -> tuple[Timing, dict]:
    """Device time (CUDA events around the engine's execution: the row's figures), the end-to-end
    time with host↔device copies beside it, and trtexec's figures where it is on PATH."""
    from .trt_timing import EngineExecution, trtexec_figures

    runner.close()  # polygraphy's copy of the engine: one engine in GPU memory while timing (Jetsons)
    execution = EngineExecution(runner.plan_path, runner.input_name, images)
    try:
        device = execution.time_device(req.iterations, req.warmup)
        e2e = execution.time_end_to_end(req.iterations, req.warmup)
    finally:
        execution.close()
    extra = {"timer": "cuda-events", "includes_copy": False, "engine_precision": runner.precision,
             "end_to_end": {**e2e.as_result(), "timer": "perf_counter", "includes_copy": True}}
    trtexec = trtexec_figures(runner.plan_path, runner.input_name, tuple(images.shape), req.iterations, trtexec=req.trtexec)
    if trtexec is not None:
        extra["trtexec"] = trtexec
    return device, extra


def _oom_errors() -> tuple:
    import torch

    return (torch.cuda.OutOfMemoryError,)


def _release_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
