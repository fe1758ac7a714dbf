"""What the Jetson and TensorRT tools print, parsed from real recorded output (tests/data/trtexec,
tests/data/tegrastats): trtexec summaries of TensorRT 8.4, 8.6, 10.x and 10.13 on Thor, and
tegrastats lines of Thor (JetPack 7.1 and 7.2) beside Orin's. Expected numbers read off by hand."""

import os
from pathlib import Path

import pytest

from p4q_export.bench import jetson
from p4q_export.bench.tegrastats import (
    SUM_OF_RAILS,
    input_rail_for,
    parse_line,
    parse_text,
)
from p4q_export.bench.trt_timing import (
    TRTEXEC_PLACES,
    find_trtexec,
    parse_trtexec_summary,
)
from p4q_export.errors import UserError

DATA = Path(__file__).parent / "data"
THOR = "NVIDIA Jetson AGX Thor Developer Kit"


def trtexec(name: str) -> str:
    return (DATA / "trtexec" / name).read_text()


def tegrastats(name: str, module: str | None = None):
    return parse_text((DATA / "tegrastats" / name).read_text(), module=module)


# ----------------------------------------------------------------------------- trtexec

def test_tensorrt_10_summary_every_metric():
    s = parse_trtexec_summary(trtexec("trt10.txt"), batch=8)
    assert s["throughput_qps"] == 130.298
    assert s["gpu_compute"] == {"min_ms": 5.34595, "max_ms": 13.3388, "mean_ms": 7.58404, "median_ms": 7.14139,
                                "p90_ms": 10.2881, "p95_ms": 10.8175, "p99_ms": 12.9485}
    assert s["latency"]["median_ms"] == 7.16092 and s["enqueue"]["p95_ms"] == 11.7217
    assert s["h2d"]["max_ms"] == 0.0698242 and s["d2h"]["median_ms"] == 0.00439453


def test_throughput_is_images_per_second_with_the_batch_and_trtexecs_own_figure_kept():
    """trtexec counts inferences: at --batch=16 (TensorRT 8.4, implicit batch) 41087.7 qps are
    657,403 images/s. Before, the qps figure stood where images/s belong."""
    s = parse_trtexec_summary(trtexec("trt8.4_xavier.txt"), batch=16)
    assert s["throughput_qps"] == 41087.7 and s["batch"] == 16
    assert s["images_per_s"] == pytest.approx(41087.7 * 16)
    assert s["gpu_compute"]["p99_ms"] == 0.393188 and "p90_ms" not in s["gpu_compute"]  # 8.4 prints only 99%
    assert "images_per_s" not in parse_trtexec_summary(trtexec("trt10.txt"))  # no batch given: not claimed


def test_tensorrt_8_6_excerpt_and_a_summary_pasted_without_prefixes():
    s = parse_trtexec_summary(trtexec("trt8.6_agx_orin_excerpt.txt"), batch=1)
    assert s["throughput_qps"] == 208.729 and s["latency"]["p95_ms"] == 4.85034 and s["enqueue"]["median_ms"] == 0.356689
    thor = parse_trtexec_summary(trtexec("trt10.13_thor_no_stamps.txt"), batch=1)
    assert thor["throughput_qps"] == 1.55139 and thor["latency"]["median_ms"] == 640.024 and thor["images_per_s"] == 1.551


def test_fractional_percentiles_are_kept():
    """trtexec --percentile=90,99,99.9 prints percentile(99.9%): the old pattern took integers only
    and dropped it. The line is the real TensorRT 10 Latency line with the 99.9% field trtexec adds."""
    line = trtexec("trt10.txt").splitlines()[2].replace(
        "percentile(99%) = 12.9675 ms", "percentile(99%) = 12.9675 ms, percentile(99.9%) = 13.3001 ms")
    s = parse_trtexec_summary(line)
    assert s["latency"]["p99_ms"] == 12.9675 and s["latency"]["p99.9_ms"] == 13.3001


def test_trtexec_is_found_where_jetpack_and_the_tarball_put_it(tmp_path):
    assert "/usr/src/tensorrt/bin/trtexec" in TRTEXEC_PLACES  # JetPack (tests/data/trtexec/trt10.3_orin_nx_header.txt)
    assert "/usr/src/tensorrt/bin/trtexec" in trtexec("trt10.3_orin_nx_header.txt")
    root = tmp_path / "TensorRT-10.13.3.9"
    (root / "bin").mkdir(parents=True)
    exe = root / "bin" / "trtexec"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    empty = {"PATH": str(tmp_path / "nothing")}
    if not any(Path(p).exists() for p in TRTEXEC_PLACES):
        assert find_trtexec(env=empty) is None
    assert find_trtexec(env={**empty, "TENSORRT_ROOT": str(root)}) == str(exe)
    assert find_trtexec(str(exe)) == str(exe)
    with pytest.raises(UserError, match="--trtexec"):
        find_trtexec(str(tmp_path / "missing"))
    exe.chmod(0o644)
    with pytest.raises(UserError, match="no executable"):
        find_trtexec(str(exe))


def test_bench_refuses_a_wrong_trtexec_path_before_timing(cli, random_testbed_bundle, tmp_path):
    proc = cli("bench", str(random_testbed_bundle), "--trtexec", str(tmp_path / "nope"), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 2 and "--trtexec" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "rep").exists()


# ----------------------------------------------------------------------------- tegrastats on Thor

def test_thor_input_power_is_vin_not_the_sum_of_the_other_rails():
    s = tegrastats("thor_jp71_vin.txt", module=THOR)[0]
    assert s.input_rail == "VIN" and s.input_power_mw == 19780
    others = 1962 + 5887 + 5635  # VDD_GPU, VDD_CPU_SOC_MSS, VIN_SYS_5V0: what the old fallback summed
    assert s.rails_mw["VIN_SYS_5V0"] == (5635, 5635) and 1 - others / 19780 == pytest.approx(0.318, abs=1e-3)
    assert tegrastats("thor_jp71_vin.txt")[0].input_power_mw == 19780  # the module unknown: VIN still wins


def test_thor_gpu_clock_without_a_load_figure():
    s = tegrastats("thor_jp71_vin.txt", module=THOR)[0]
    assert s.gpu_mhz == 314 and s.gpu_percent is None  # GR3D_FREQ @[314,314,314]: Thor prints no load
    assert s.emc_percent == 0 and len(s.cpu_percent) == 14
    assert s.temperatures_c["gpu"] == 38.875


def test_thor_three_value_rails_and_no_input_rail_printed():
    peak = tegrastats("thor_jp72_peak.txt", module=THOR)[0]
    assert peak.rails_mw["VIN"] == (87426, 43713) and peak.input_power_mw == 87426
    assert peak.gpu_mhz is None and peak.ram_used_mb == 36529
    no_vin = tegrastats("thor_jp71_no_vin.txt", module=THOR)
    assert len(no_vin) == 3 and no_vin[1].input_rail == SUM_OF_RAILS
    assert no_vin[1].input_power_mw == 0 + 4923 + 4327 and no_vin[1].gpu_mhz == 0
    assert tegrastats("thor_nonroot.txt", module=THOR)[0].input_power_mw == 16802


def test_a_negative_rail_is_read_not_dropped():
    text = (DATA / "tegrastats" / "thor_negative_rail_excerpt.txt").read_text()
    line = " ".join(ln.lstrip("#").strip() for ln in text.splitlines())  # the excerpt wraps one line over three
    s = parse_line(line, module=THOR)
    assert s.rails_mw["VDD_GPU"] == (-392, -392) and s.rails_mw["VDD_CPU_SOC_MSS"] == (3924, 3835)
    assert s.input_rail == "VIN" and s.input_power_mw == 15004


@pytest.mark.parametrize("model,rail", [
    (THOR, "VIN"),
    ("NVIDIA Jetson AGX Orin Developer Kit", SUM_OF_RAILS),
    ("NVIDIA Orin Nano Developer Kit", "VDD_IN"),
    ("NVIDIA Jetson Xavier NX Developer Kit", "VDD_IN"),
    ("NVIDIA Jetson Nano Developer Kit", "POM_5V_IN"),
    (None, None),
])
def test_the_input_rail_is_chosen_per_module(model, rail):
    assert input_rail_for(model) == rail


def test_agx_orin_keeps_its_sum_even_with_vin_sys_5v0_present():
    s = tegrastats("agx_orin_jp6.txt", module="NVIDIA Jetson AGX Orin Developer Kit")[0]
    assert s.input_rail == SUM_OF_RAILS and s.input_power_mw == 2412 + 1607 + 4707
    orin8 = tegrastats("orin_8gb_jp6.txt", module="NVIDIA Orin Nano Developer Kit")[0]
    assert orin8.input_rail == "VDD_IN" and orin8.input_power_mw == 17946 and (orin8.gpu_percent, orin8.gpu_mhz) == (84, 713)


# ----------------------------------------------------------------------------- L4T releases

@pytest.mark.parametrize("l4t,jetpack", [("38.2.0", "7.0"), ("38.2.2", "7.0"), ("38.4.0", "7.1"),
                                         ("39.2.0", "7.2"), ("36.4.4", "6.2.1"), ("35.6.0", "5.1.4")])
def test_jetpack_7_releases_are_known(l4t, jetpack):
    assert jetson.jetpack_for_l4t(l4t) == jetpack


def test_probe_records_thor(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R38 (release), REVISION: 4.0, GCID: 43443517, BOARD: generic, EABI: aarch64\n")
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text(THOR + "\x00")
    info = jetson.probe(tmp_path)
    assert info["model"] == THOR and info["l4t"] == "38.4.0" and info["jetpack"] == "7.1"
    assert os.path.basename(str(tmp_path)) not in info["model"]


# ----------------------------------------------------------------------------- remote builds

def test_the_remote_bench_builds_each_engine_once():
    """Before, `build-engine --int8 --fp16` and then `build-engine --fp16` built (and validated) the
    FP16 engine twice."""
    from p4q_export.bench.remote import engine_builds

    runs = engine_builds("p4q-export", "dir")
    kinds = [argv[-1] for argv in runs]
    assert kinds == ["--int8", "--fp16"] and all(argv[2] == "build-engine" and len(argv) == 5 for argv in runs)
