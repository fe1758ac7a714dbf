"""What a person reads: progress on stderr while a long step runs (also when stderr is a log file),
the path of every file written, each table once, accuracies in one format."""

from __future__ import annotations

import json
import shutil
import time

from conftest import run_cli


def test_progress_without_a_terminal_prints_timed_lines(monkeypatch, capsys):
    from p4q_export import progress

    monkeypatch.delenv("P4Q_NO_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    assert list(progress.progress_iter(range(3), desc="encoding")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == [line for line in lines[:3] if line.startswith("encoding: ")]
    assert lines[0].startswith("encoding: 1/3 after") and "left" in lines[0]
    assert lines[-1].startswith("encoding: 3/3 done in")
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 60.0)
    assert list(progress.progress_iter(range(3), desc="quick")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # a loop shorter than the interval says nothing
    monkeypatch.setenv("P4Q_NO_PROGRESS", "1")
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    list(progress.progress_iter(range(3), desc="silenced"))
    assert capsys.readouterr().err == ""


def test_a_slow_step_says_so_and_a_quick_one_stays_silent(monkeypatch, capsys):
    from p4q_export.progress import slow_step

    monkeypatch.delenv("P4Q_NO_PROGRESS", raising=False)
    with slow_step("loading model X", after_s=0.05):
        time.sleep(0.3)
    assert capsys.readouterr().err.splitlines() == ["loading model X ...", "loading model X: done in 0s"]
    with slow_step("loading model Y", after_s=5.0):
        pass
    time.sleep(0.1)
    assert capsys.readouterr().err == ""


def test_bench_prints_its_table_once_and_says_where_it_wrote(random_testbed_bundle, tmp_path):
    report = tmp_path / "report"
    args = ["bench", str(random_testbed_bundle), "--device", "cpu", "--batch", "1", "--iterations", "2", "--warmup", "1",
            "--backends", "ort/fp32", "--out", str(report)]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("| backend |") == 1 and "| backend |" not in proc.stderr
    assert f"wrote {report / 'bench.json'}, {report / 'bench.md'}, {report / 'bench.png'}" in proc.stderr
    as_json = run_cli("--json", *args[:-1], str(tmp_path / "report2"))
    assert json.loads(as_json.stdout)["report_files"]["json"] == str(tmp_path / "report2" / "bench.json")
    assert as_json.stderr.count("| backend |") == 1  # beside JSON on stdout, the table goes to the log


def test_validate_says_where_the_report_went_and_prints_percentages(random_testbed_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(random_testbed_bundle, bundle)
    proc = run_cli("validate", str(bundle), "--data", "fashion-mnist", "--limit", "20", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {bundle / 'deploy' / 'validation.json'}" in proc.stderr.splitlines()
    report = json.loads((bundle / "deploy" / "validation.json").read_text())
    assert f"top-1 agreement {100 * report['top1_agreement']:.2f}%" in proc.stdout
    assert f"vs torch {100 * report['accuracy']['torch']['top1']:.2f}%" in proc.stdout
