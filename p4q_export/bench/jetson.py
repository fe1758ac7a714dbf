"""Jetson device probe: is this a Jetson, which L4T/JetPack, which nvpmodel mode, which clocks.

Every reader takes a `root` so tests can point it at a recorded file tree."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

RELEASE_FILE = "etc/nv_tegra_release"
MODEL_FILE = "proc/device-tree/model"

_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)(?:.*?BOARD:\s*([^,\s]+))?", re.IGNORECASE)

# L4T release -> JetPack (NVIDIA's release notes); the closest lower entry wins for point releases.
L4T_TO_JETPACK = {
    "32.4.3": "4.4", "32.4.4": "4.4.1", "32.5.0": "4.5", "32.5.1": "4.5.1", "32.6.1": "4.6",
    "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4",
    "35.6.1": "5.1.5", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
    "38.2.0": "7.0",
}


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(errors="replace")
    except OSError:
        return None


def is_jetson(root: Path = Path("/")) -> bool:
    if (root / RELEASE_FILE).is_file():
        return True
    model = _read(root, MODEL_FILE) or ""
    return "jetson" in model.lower() or ("nvidia" in model.lower() and "tegra" in model.lower())


def parse_nv_tegra_release(text: str) -> dict | None:
    """'# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ...' -> {'l4t': '36.4.3', ...}."""
    m = _RELEASE.search(text or "")
    if not m:
        return None
    major, revision, board = m.group(1), m.group(2), m.group(3)
    parts = revision.split(".") + ["0"]
    l4t = f"{major}.{parts[0]}.{parts[1]}"
    return {"l4t": l4t, "jetpack": jetpack_for_l4t(l4t), "board": board}


def jetpack_for_l4t(l4t: str) -> str | None:
    if l4t in L4T_TO_JETPACK:
        return L4T_TO_JETPACK[l4t]
    key = tuple(int(p) for p in l4t.split("."))
    older = [v for k, v in L4T_TO_JETPACK.items() if tuple(int(p) for p in k.split("."))[:2] == key[:2]
             and tuple(int(p) for p in k.split(".")) <= key]
    return older[-1] if older else None


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
    info: dict = {"model": (_read(root, MODEL_FILE) or "").strip("\x00 \n") or None}
    info.update(parse_nv_tegra_release(_read(root, RELEASE_FILE) or "") or {})
    info["nvpmodel"] = parse_nvpmodel_query(_run(["nvpmodel", "-q"]) or "") if root == Path("/") else None
    info["clocks"] = read_clocks(root)
    return info
