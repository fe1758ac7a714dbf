"""Jetson device probe: is this a Jetson, which L4T/JetPack, which nvpmodel mode, which clocks.

Every reader takes a `root` so tests can point it at a recorded file tree."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..runtime.cuda_env import L4T_RELEASE, device_tree_model
from ..runtime.trt_install import jetpack_for_l4t, parse_nv_tegra_release  # noqa: F401 (the probe's API)


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(errors="replace")
    except OSError:
        return None


def is_jetson(root: Path = Path("/")) -> bool:
    if (root / L4T_RELEASE).is_file():
        return True
    model = device_tree_model(root) or ""
    return "jetson" in model.lower() or ("nvidia" in model.lower() and "tegra" in model.lower())


def parse_nvpmodel_query(text: str) -> dict | None:
    """`nvpmodel -q` prints 'NV Power Mode: MAXN' and the mode id on the next line
    (sometimes after 'NVPM WARN' lines)."""
    m = re.search(r"NV Power Mode:\s*(.+)", text or "")
    if not m:
        return None
    rest = text[m.end():].split()
    mode_id = int(rest[0]) if rest and rest[0].isdigit() else None
    return {"name": m.group(1).strip(), "id": mode_id}


def _khz_to_mhz(text: str | None) -> int | None:
    try:
        return int(int(text.strip()) / 1000)
    except (AttributeError, ValueError):
        return None


def read_clocks(root: Path = Path("/")) -> dict:
    """Current CPU clocks (cpufreq, kHz) and GPU/EMC clocks (devfreq, Hz) in MHz where readable."""
    clocks: dict = {"cpu_mhz": []}
    for cpu in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        mhz = _khz_to_mhz(_read(root, str(cpu.relative_to(root))))
        if mhz is not None:
            clocks["cpu_mhz"].append(mhz)
    # GPU devfreq lives under a SoC-specific name (17000000.gpu on Orin, 57000000.gpu on Nano, ...).
    for cur in sorted((root / "sys/class/devfreq").glob("*/cur_freq")):
        name = cur.parent.name
        if "gpu" in name or "gv11b" in name or "gp10b" in name or "ga10b" in name:
            hz = _read(root, str(cur.relative_to(root)))
            if hz and hz.strip().isdigit():
                clocks["gpu_mhz"] = int(hz.strip()) // 1_000_000
    emc = _read(root, "sys/kernel/debug/bpmp/debug/clk/emc/rate")
    if emc and emc.strip().isdigit():
        clocks["emc_mhz"] = int(emc.strip()) // 1_000_000
    return clocks


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


def probe(root: Path = Path("/")) -> dict | None:
    """Everything we record about a Jetson, or None off-Jetson."""
    if not is_jetson(root):
        return None
    info: dict = {"model": device_tree_model(root)}
    info.update(parse_nv_tegra_release(_read(root, L4T_RELEASE) or "") or {})
    info["nvpmodel"] = parse_nvpmodel_query(_run(["nvpmodel", "-q"]) or "") if root == Path("/") else None
    info["clocks"] = read_clocks(root)
    return info
