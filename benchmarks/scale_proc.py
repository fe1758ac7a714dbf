"""Run one CLI stage as a real subprocess and measure its host memory.

A sampler thread reads /proc every `interval` seconds while the stage runs:
- the main process's VmHWM, the kernel's own high-water mark of its RSS (only growth in the last
  interval before exit can be missed). Not wait4's ru_maxrss: that also counts the RSS of the
  forked copy of *this* process before exec, so it reports at least the parent's size;
- its descendants (DataLoader workers): the peak of their summed PSS, i.e. with the pages they
  share with the main process split between the sharers (their summed RSS, also kept, counts every
  shared page once per worker, and forked workers share most of the parent's memory);
- the peak of the whole tree's summed PSS: the host memory the stage actually used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _ppid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendants(root: int) -> list[int]:
    """Every live process below `root` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(entry)
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kb(path: str, key: str) -> int:
    """A `Key:   123 kB` line of a /proc file, in KiB (0 when the process is gone)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Polls a process tree's memory until stopped; keeps the peaks (KiB)."""

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.main_hwm_kb = self.children_rss_kb = self.children_pss_kb = self.tree_pss_kb = self.max_children = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        kids = descendants(self.pid)
        self.main_hwm_kb = max(self.main_hwm_kb, _kb(f"/proc/{self.pid}/status", "VmHWM:"))
        self.children_rss_kb = max(self.children_rss_kb, sum(_kb(f"/proc/{k}/status", "VmRSS:") for k in kids))
        kids_pss = sum(_kb(f"/proc/{k}/smaps_rollup", "Pss:") for k in kids)
        self.children_pss_kb = max(self.children_pss_kb, kids_pss)
        self.tree_pss_kb = max(self.tree_pss_kb, kids_pss + _kb(f"/proc/{self.pid}/smaps_rollup", "Pss:"))
        self.max_children = max(self.max_children, len(kids))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _mb(kib: int) -> float | None:
    return round(kib / 1024, 1) if kib else None


def parse_json_stdout(text: str) -> dict | None:
    """The one JSON object a `--json` command prints (its last non-empty line)."""
    lines = [line for line in text.splitlines() if line.strip()]
    for candidate in (lines[-1] if lines else "", text):
        try:
            value = json.loads(candidate)
            return value if isinstance(value, dict) else None
        except ValueError:
            continue
    return None


def run_stage(argv: list[str], log_path: Path, env: dict | None = None, echo: bool = True,
              interval: float = 0.5) -> dict:
    """Run `argv`, teeing its stderr to `log_path` (and ours when `echo`), and return
    {"argv", "returncode", "wall_s", "result" (its JSON or None), "peak_rss_mb" (main process),
    "children_peak_pss_mb", "children_peak_rss_mb", "tree_peak_pss_mb", "max_children", "log"} (MB = MiB)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out, open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()

        def tee() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                log.write(line)
                log.flush()
                if echo:
                    sys.stderr.write(line)
                    sys.stderr.flush()

        reader = threading.Thread(target=tee, daemon=True)
        reader.start()
        proc.wait()
        wall = time.perf_counter() - t0
        sampler.stop()
        reader.join(timeout=30)  # a grandchild that outlives the stage may hold stderr open
        proc.stderr.close()  # type: ignore[union-attr]
        out.seek(0)
        stdout = out.read()
    return {
        "argv": argv,
        "returncode": proc.returncode,
        "wall_s": round(wall, 2),
        "result": parse_json_stdout(stdout),
        "peak_rss_mb": _mb(sampler.main_hwm_kb),
        "children_peak_pss_mb": _mb(sampler.children_pss_kb),
        "children_peak_rss_mb": _mb(sampler.children_rss_kb),
        "tree_peak_pss_mb": _mb(sampler.tree_pss_kb),
        "max_children": sampler.max_children,
        "log": str(log_path),
    }
