"""tegrastats: parse its one-line samples and sample it in the background while benchmarking.

The line format differs between Jetson generations and JetPack releases, e.g.
  Nano (JetPack 4):        ... GR3D_FREQ 0%@76 ... POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 366/406
  Xavier NX (JetPack 4):   ... VDD_IN 6140/5510 VDD_CPU_GPU_CV 2706/2119 VDD_SOC 1074/1051
  Xavier NX (JetPack 5):   07-09-2024 13:31:31 ... GR3D_FREQ 0%@[114] ... VDD_IN 2763mW/2846mW ...
  Orin Nano (JetPack 6):   ... GR3D_FREQ 63%@[621] ... tj@53.968C ... VDD_IN 12479mW/12479mW ...
  AGX Orin (JetPack 5/6):  ... GR3D_FREQ 0%@[0,0] ... VDD_GPU_SOC 2399mW/2399mW VDD_CPU_CV 400mW/400mW VIN_SYS_5V0 4032mW/4032mW ...
  Thor (JetPack 7):        ... GR3D_FREQ @[314,314,314] ... VDD_GPU -392mW/-392mW ... VIN_SYS_5V0 5635mW/5635mW VIN 19780mW/19780mW
Rails are "NAME current/average[/peak]" with or without the mW unit; a rail can read negative
(Thor's VDD_GPU at idle). Recorded real lines are in tests/data/tegrastats/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

# The module's input rail: VIN on Thor, VDD_IN on Xavier and Orin NX/Nano, POM_5V_IN on Nano and
# TX2. AGX Orin reports none (VIN_SYS_5V0 is one 5 V rail among others), so its rails are summed.
INPUT_RAILS = ("VIN", "VDD_IN", "POM_5V_IN")
# /proc/device-tree/model keyword -> the input rail that module reports (None: sum the rails)
MODULE_INPUT_RAIL = (("thor", "VIN"), ("agx orin", None), ("orin", "VDD_IN"), ("xavier", "VDD_IN"), ("nano", "POM_5V_IN"),
                     ("tx2", "POM_5V_IN"))
SUM_OF_RAILS = "sum of rails"


def input_rail_for(module: str | None) -> str | None:
    """The input rail of a Jetson module by its device-tree model ('NVIDIA Jetson AGX Thor
    Developer Kit' -> 'VIN'); SUM_OF_RAILS for AGX Orin; None where the module is unknown."""
    text = (module or "").lower()
    for key, rail in MODULE_INPUT_RAIL:
        if key in text:
            return rail or SUM_OF_RAILS
    return None

_TIMESTAMP = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CPU_CORE = re.compile(r"(\d+)%@(\d+)")
_GPU = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
# POM_/VDD_/VDDQ_/VIN_/NC names only, so "RAM 2246/3964MB" never matches.
_RAIL = re.compile(r"\b((?:POM|VDDQ?|VIN)_[A-Z0-9_]+|VIN|NC) (-?\d+)(?:mW)?/(-?\d+)(?:mW)?(?:/-?\d+(?:mW)?)?(?![\w/])")


@dataclass
class TegrastatsSample:
    time: float  # monotonic seconds when the line was read (0 for parsed text)
    timestamp: str | None = None  # tegrastats' own wall-clock stamp (JetPack 5+)
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    cpu_percent: list = field(default_factory=list)  # per online core
    cpu_mhz: list = field(default_factory=list)
    gpu_percent: int | None = None
    gpu_mhz: int | None = None
    emc_percent: int | None = None
    temperatures_c: dict = field(default_factory=dict)
    rails_mw: dict = field(default_factory=dict)  # name -> (current, average)
    rail: str | None = None  # the module's input rail (input_rail_for), where the module is known

    @property
    def input_rail(self) -> str | None:
        """The rail input_power_mw reads: the module's own where given and present, else the first
        input rail present, else SUM_OF_RAILS."""
        if self.rail in self.rails_mw:
            return self.rail
        if self.rail != SUM_OF_RAILS:
            for name in INPUT_RAILS:
                if name in self.rails_mw:
                    return name
        return SUM_OF_RAILS if self.rails_mw else None

    @property
    def input_power_mw(self) -> float | None:
        """Module input power: its input rail, else the sum of the rails (AGX Orin)."""
        rail = self.input_rail
        if rail is None:
            return None
        if rail != SUM_OF_RAILS:
            return float(self.rails_mw[rail][0])
        return float(sum(cur for cur, _avg in self.rails_mw.values()))


def parse_line(line: str, now: float = 0.0, module: str | None = None) -> TegrastatsSample | None:
    """One tegrastats line -> sample; None for lines that are not samples (warnings, blanks).
    `module`: the device-tree model, which decides the input rail (input_rail_for)."""
    if "RAM " not in line and not _RAIL.search(line):
        return None
    s = TegrastatsSample(time=now, rail=input_rail_for(module))
    if m := _TIMESTAMP.match(line):
        s.timestamp = m.group(1)
    if m := _RAM.search(line):
        s.ram_used_mb, s.ram_total_mb = int(m.group(1)), int(m.group(2))
    if m := _SWAP.search(line):
        s.swap_used_mb = int(m.group(1))
    if m := _CPU.search(line):
        for core in m.group(1).split(","):  # "off" cores are skipped
            if c := _CPU_CORE.search(core):
                s.cpu_percent.append(int(c.group(1)))
                s.cpu_mhz.append(int(c.group(2)))
    if m := _GPU.search(line):  # Thor prints no load, only the clocks: GR3D_FREQ @[314,314,314]
        s.gpu_percent = int(m.group(1)) if m.group(1) else None
        if m.group(2):
            s.gpu_mhz = max(int(v) for v in m.group(2).split(",") if v)
    if m := _EMC.search(line):
        s.emc_percent = int(m.group(1))
    # Temperatures "name@42.5C"; -256C marks an absent sensor (AGX Orin's CV/GPU zones).
    s.temperatures_c = {n: float(v) for n, v in _TEMP.findall(line) if float(v) > -100}
    s.rails_mw = {n: (int(cur), int(avg)) for n, cur, avg in _RAIL.findall(line) if n != "NC"}
    return s


def parse_text(text: str, module: str | None = None) -> list[TegrastatsSample]:
    return [s for s in (parse_line(line, module=module) for line in text.splitlines()) if s is not None]


def mean_input_power_w(samples: list[TegrastatsSample]) -> float | None:
    powers = [s.input_power_mw for s in samples if s.input_power_mw is not None]
    return sum(powers) / len(powers) / 1000.0 if powers else None


def images_per_joule(images: int, seconds: float, samples: list[TegrastatsSample]) -> float | None:
    """Images per joule of board input energy over a timed window (mean power × time)."""
    watts = mean_input_power_w(samples)
    if not watts or seconds <= 0:
        return None
    return images / (watts * seconds)


class TegrastatsSampler:
    """`tegrastats --interval N` in a subprocess, read on a thread; samples are timestamped with
    time.monotonic() so a benchmark can take the samples inside its own timed window."""

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats", module: str | None = None):
        self.interval_ms = interval_ms
        self.command = command
        self.module = module
        self.samples: list[TegrastatsSample] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @staticmethod
    def available(command: str = "tegrastats") -> bool:
        return shutil.which(command) is not None

    def __enter__(self) -> TegrastatsSampler:  # noqa: PYI034 (typing.Self needs 3.11; JetPack 6 ships 3.10)
        self._proc = subprocess.Popen([self.command, "--interval", str(self.interval_ms)],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_line(line, time.monotonic(), self.module)
            if sample is not None:
                with self._lock:
                    self.samples.append(sample)

    def between(self, start: float, end: float) -> list[TegrastatsSample]:
        with self._lock:
            return [s for s in self.samples if start <= s.time <= end]

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=2)

