"""The tegrastats parser on real recorded lines from Nano, Xavier NX and Orin (formats differ)."""

from pathlib import Path

import pytest

from p4q_export.bench.tegrastats import (
    images_per_joule,
    mean_input_power_w,
    parse_line,
    parse_text,
)

DATA = Path(__file__).parent / "data" / "tegrastats"


def sample(name: str, index: int = 0):
    return parse_text((DATA / name).read_text())[index]


def test_nano_jetpack4_pom_rails_without_units():
    s = sample("nano_jp461.txt")
    assert (s.ram_used_mb, s.ram_total_mb) == (1923, 3964)
    assert s.cpu_percent == [5, 4, 3, 6] and s.cpu_mhz == [1224] * 4
    assert (s.gpu_percent, s.gpu_mhz) == (0, 76)
    assert s.rails_mw["POM_5V_IN"] == (1750, 1628)
    assert s.input_rail == "POM_5V_IN" and s.input_power_mw == 1750
    assert s.temperatures_c["GPU"] == 40.0
    assert s.timestamp is None


def test_xavier_nx_jetpack4_vdd_in_without_units():
    s = sample("xavier_nx_jp411.txt")
    assert s.rails_mw == {"VDD_IN": (6140, 5510), "VDD_CPU_GPU_CV": (2706, 2119), "VDD_SOC": (1074, 1051)}
    assert s.input_power_mw == 6140
    assert len(s.cpu_percent) == 6 and s.cpu_percent[-1] == 96


def test_xavier_nx_jetpack5_mw_units_and_bracketed_gpu_clock():
    s = sample("xavier_nx_jp512.txt")
    assert s.timestamp == "07-09-2024 13:31:31"
    assert s.gpu_mhz == 114
    assert s.input_power_mw == 2763 and s.rails_mw["VDD_SOC"] == (650, 711)


def test_orin_nano_jetpack6():
    busy, idle = parse_text((DATA / "orin_nano_jp6.txt").read_text())
    assert (busy.gpu_percent, busy.gpu_mhz, busy.emc_percent) == (63, 621, 43)
    assert busy.temperatures_c["tj"] == pytest.approx(53.968)
    assert busy.input_power_mw == 12479
    assert idle.gpu_percent == 0 and idle.gpu_mhz is None  # "GR3D_FREQ 0%" without a clock
    assert idle.input_power_mw == 4824


@pytest.mark.parametrize("name,total", [("agx_orin_jp5.txt", 2399 + 400 + 4032 + 301), ("agx_orin_jp6.txt", 2412 + 1607 + 4707)])
def test_agx_orin_has_no_input_rail_so_rails_are_summed(name, total):
    s = sample(name)
    assert "VDD_IN" not in s.rails_mw and "NC" not in s.rails_mw
    assert s.input_rail == "sum of rails" and s.input_power_mw == total
    assert all(t > -100 for t in s.temperatures_c.values())  # -256C = absent sensor, dropped
    assert len(s.cpu_percent) == 12


def test_agx_orin_two_gpc_clock_list():
    assert sample("agx_orin_jp6.txt").gpu_mhz == 0


def test_non_sample_lines_are_ignored():
    assert parse_line("") is None
    assert parse_line("NVPM WARN: fan mode is not set!") is None


def test_images_per_joule_from_mean_input_power():
    samples = parse_text((DATA / "orin_nano_jp6.txt").read_text())
    watts = (12.479 + 4.824) / 2
    assert mean_input_power_w(samples) == pytest.approx(watts)
    assert images_per_joule(1000, 2.0, samples) == pytest.approx(1000 / (watts * 2.0))
    assert images_per_joule(10, 1.0, []) is None
