"""Jetson probe on recorded files: L4T/JetPack from /etc/nv_tegra_release, nvpmodel, clocks."""

from pathlib import Path

from p4q_export.bench import jetson

DATA = Path(__file__).parent / "data" / "jetson"


def test_parse_release_jetpack6():
    info = jetson.parse_nv_tegra_release((DATA / "nv_tegra_release_r36.txt").read_text())
    assert info == {"l4t": "36.3.0", "jetpack": "6.0", "board": "generic"}


def test_parse_release_jetpack4_nano():
    info = jetson.parse_nv_tegra_release((DATA / "nv_tegra_release_r32.txt").read_text())
    assert info == {"l4t": "32.7.1", "jetpack": "4.6.1", "board": "t210ref"}


def test_unknown_point_release_maps_to_closest_lower():
    assert jetson.jetpack_for_l4t("36.4.7") == "6.2.1"
    assert jetson.jetpack_for_l4t("99.1.0") is None
    assert jetson.parse_nv_tegra_release("not a release file") is None


def test_nvpmodel_query():
    assert jetson.parse_nvpmodel_query((DATA / "nvpmodel_q_maxn.txt").read_text()) == {"name": "MAXN", "id": 0}
    assert jetson.parse_nvpmodel_query((DATA / "nvpmodel_q_15w.txt").read_text()) == {"name": "15W", "id": 1}
    assert jetson.parse_nvpmodel_query("") is None


def test_probe_on_a_fake_root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text((DATA / "nv_tegra_release_r36.txt").read_text())
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    cpu = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq"
    cpu.mkdir(parents=True)
    (cpu / "scaling_cur_freq").write_text("1510400\n")
    gpu = tmp_path / "sys/class/devfreq/17000000.gpu"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text("624750000\n")
    info = jetson.probe(tmp_path)
    assert info["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert info["l4t"] == "36.3.0" and info["jetpack"] == "6.0"
    assert info["clocks"] == {"cpu_mhz": [1510], "gpu_mhz": 624}


def test_not_a_jetson(tmp_path):
    assert not jetson.is_jetson(tmp_path)
    assert jetson.probe(tmp_path) is None
