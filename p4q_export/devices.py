"""Where a model runs: `--device auto|cpu|cuda|cuda:N` resolved once, described the same way in
every run manifest, bundle and bench row.

The quantized reference stays FP32 on a GPU too: TF32 matmuls would round the inputs of every
fake-quantized Linear to a 10-bit mantissa, so PyTorch and ONNX (and TensorRT's INT8 path) would
no longer compute the same codes. `resolve_device` switches TF32 off for that reason.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .errors import UserError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def device_kind(spec: str | None = "auto") -> str:
    """`cpu` or `cuda` for a --device value without claiming a GPU (`auto`: cuda where PyTorch sees
    one); other values (e.g. jetson) come back as given."""
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if text.startswith("cuda") else text


def resolve_device(spec: str | None = "auto") -> torch.device:
    """`auto` → CUDA when a GPU is visible (the torchrun rank's LOCAL_RANK GPU), else CPU.
    Asking for CUDA where there is none is bad input."""
    text = (spec or "auto").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise UserError(f"unknown --device '{spec}' (expected {DEVICE_CHOICES})")
    if not torch.cuda.is_available():
        raise UserError(f"--device {spec}: no CUDA GPU is visible here (torch {torch.__version__}); use --device cpu")
    n = torch.cuda.device_count()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: one GPU per rank, from LOCAL_RANK (nccl refuses a shared GPU)
        if index:
            raise UserError(f"--device {spec}: under torchrun each rank takes the GPU of its LOCAL_RANK; use --device cuda")
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if ranks_here > n:
            raise UserError(f"torchrun starts {ranks_here} ranks on this machine but it has {n} CUDA device(s): "
                            f"use --nproc_per_node {n}, or --device cpu")
        i = int(os.environ.get("LOCAL_RANK", "0"))
    else:
        i = int(index) if index else 0
    if i >= n:
        raise UserError(f"--device {spec}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.cuda.set_device(i)
    return torch.device("cuda", i)


def describe_device(device: torch.device | str) -> str:
    """`cpu` or `cuda:0 (NVIDIA H200)`: what manifests and bench rows record."""
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu"
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def amp_context(device: torch.device, enabled: bool):
    """bf16 autocast for the frozen FP parts when `--amp` asks for it (a no-op otherwise)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(enabled))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gpu_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters live (CPU for a module without any)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


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
