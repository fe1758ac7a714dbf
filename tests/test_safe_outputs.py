"""No command destroys a user's work: --out is never an input, --force replaces only an artifact of
the same kind, and SIGINT / SIGTERM stop a command with 130 / 143 and nothing half-written. Each
case runs the real CLI in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli


def _fake_run(path: Path) -> dict[str, bytes]:
    """A training run's files (as train writes them); returns their contents to compare after."""
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"kind": "p4q-export/run", "format": 1}))
    (path / "checkpoint.pt").write_bytes(b"weights of a week of training")
    (path / "metrics.json").write_text("{}")
    return _contents(path)


def _contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith("error: "), proc.stderr
    return lines[-1]


def test_export_onto_its_own_run_with_force_keeps_the_run(tmp_path):
    run = tmp_path / "copyrun"
    before = _fake_run(run)
    proc = run_cli("export", str(run), "--out", str(run), "--force")
    assert proc.returncode == 2
    assert "is, contains or lies inside the input" in _one_error_line(proc)
    assert _contents(run) == before


def test_export_inside_its_run_is_refused(tmp_path):
    run = tmp_path / "run"
    before = _fake_run(run)
    proc = run_cli("export", str(run), "--out", str(run / "bundle"))
    assert proc.returncode == 2 and "inside the input" in _one_error_line(proc)
    assert _contents(run) == before and not (run / "bundle").exists()


def test_force_over_a_regular_file_keeps_the_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    proc = run_cli("export", "p4q-testbed", "--data", "fashion-mnist", "--out", str(target), "--force")
    assert proc.returncode == 2 and "is a file, not a folder" in _one_error_line(proc)
    assert target.read_text() == "my notes"


@pytest.mark.parametrize("force", [False, True])
def test_export_refuses_a_folder_of_other_files(tmp_path, force):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"\xff\xd8 not ours")
    proc = run_cli("export", "p4q-testbed", "--data", "fashion-mnist", "--out", str(target), *(["--force"] if force else []))
    assert proc.returncode == 2 and "files p4q-export did not write" in _one_error_line(proc)
    assert _contents(target) == {"holiday.jpg": b"\xff\xd8 not ours"}


def test_train_refuses_a_folder_of_other_files(tmp_path):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.tex").write_text("\\section{Intro}")
    proc = run_cli("train", "--recipe", "recipes/testbed-p4q-w8a8.yaml", "--set", "model=p4q-testbed", "--out", str(target))
    assert proc.returncode == 2 and "files p4q-export did not write" in _one_error_line(proc)
    assert _contents(target) == {"chapter1.tex": b"\\section{Intro}"}


def test_force_replaces_a_bundle_but_not_a_run(tmp_path):
    run = tmp_path / "run"
    before = _fake_run(run)
    proc = run_cli("export", "p4q-testbed", "--data", "fashion-mnist", "--out", str(run), "--force")
    assert proc.returncode == 2 and "holds a p4q-export run" in _one_error_line(proc)
    assert _contents(run) == before


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_export_with_its_exit_code_and_writes_nothing(tmp_path, sig, code):
    out = tmp_path / "bundle"
    env = dict(os.environ, P4Q_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-m", "p4q_export.cli", "export", "p4q-testbed", "--data", "fashion-mnist",
                             "--calib-images", "2000", "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".p4q-calib-") for p in tmp_path.iterdir()):  # at work: its calibration folder
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    time.sleep(3)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"interrupted by {signal.Signals(sig).name}: nothing was kept")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--recipe", "recipes/testbed-p4q-w8a8.yaml", "--seeds", "1,,2"], "--seeds expects items joined by commas"),
    (["train", "--recipe", "recipes/testbed-p4q-w8a8.yaml", "--set", "threads=-1"], "threads and eval_limit must be"),
    (["export", "runs/nope", "--out", "B"], "runs/nope not found"),
])
def test_malformed_values_are_one_line(tmp_path, args, message):
    args = [a if a != "B" else str(tmp_path / "b") for a in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "run")]
    proc = run_cli(*args)
    assert proc.returncode == 2 and message in _one_error_line(proc)
    assert list(tmp_path.iterdir()) == []


def test_bench_threads_must_be_positive(tmp_path):
    proc = run_cli("bench", str(tmp_path), "--threads", "-1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--threads" in proc.stderr


def test_ctrl_c_stops_train_with_130_and_says_what_it_keeps(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "p4q_export.cli", "train", "--recipe", "recipes/testbed-p4q-w8a8.yaml",
                             "--set", "model=p4q-testbed", "--set", "calib_images=64", "--set", "epochs=200000", "--shots", "2",
                             "--set", "eval_limit=100", "--out", str(out)], cwd=REPO, env=dict(os.environ, P4Q_NO_PROGRESS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # the epoch loop starts once the features are cached
        seen.append(line)
        if "image features" in line:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (f"interrupted by SIGINT: {out} keeps the checkpoint of the last finished epoch, "
                                               "if any: the same command resumes from there")
    assert (out / "checkpoint.pt").is_file()


def test_pretrain_never_replaces_a_folder_it_did_not_write(tmp_path):
    target = tmp_path / "work"
    target.mkdir()
    (target / "thesis.tex").write_text("years")
    proc = run_cli("pretrain", "--recipe", "recipes/testbed-pretrain.yaml", "--out", str(target))
    assert proc.returncode == 2 and "files p4q-export did not write" in _one_error_line(proc)
    assert _contents(target) == {"thesis.tex": b"years"}


def test_train_force_keeps_another_tools_checkpoint(tmp_path):
    """checkpoint.pt is a common name: only one train wrote (its format tag) makes a folder a run."""
    target = tmp_path / "other"
    target.mkdir()
    (target / "checkpoint.pt").write_bytes(b"another tool's weights")
    (target / "metrics.json").write_text("{}")
    before = _contents(target)
    proc = run_cli("train", "--recipe", "recipes/testbed-p4q-w8a8.yaml", "--set", "model=p4q-testbed", "--out", str(target), "--force")
    assert proc.returncode == 2 and "files p4q-export did not write" in _one_error_line(proc)
    assert _contents(target) == before


def test_a_malformed_model_config_folder_is_one_line(tmp_path):
    (tmp_path / "mine.json").write_text("{ not json")
    proc = run_cli("eval", "mine", "--data", "fashion-mnist", env={"P4Q_MODEL_CONFIGS": str(tmp_path)})
    assert proc.returncode == 2 and "is not a readable JSON model config" in _one_error_line(proc)


@pytest.mark.parametrize("command", ["predict", "validate", "eval", "bench"])
def test_an_edited_manifest_is_refused_with_the_field_that_changed(random_testbed_bundle, tmp_path, command):
    """A class renamed in manifest.json (still valid JSON): every command that uses the bundle
    refuses it before printing anything from it."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(random_testbed_bundle, bundle)
    manifest = json.loads((bundle / "deploy" / "manifest.json").read_text())
    manifest["classnames"][0] = "something else"
    (bundle / "deploy" / "manifest.json").write_text(json.dumps(manifest, indent=2))
    image = REPO / "docs" / "glyphs-contact-sheet.png"
    args = {"predict": ["predict", str(bundle), str(image)],
            "validate": ["validate", str(bundle), "--data", "fashion-mnist", "--limit", "8"],
            "eval": ["eval", str(bundle), "--data", "fashion-mnist", "--limit", "8"],
            "bench": ["bench", str(bundle), "--batch", "1", "--iterations", "1"]}[command]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert _one_error_line(proc) == (f"error: bundle {bundle / 'deploy'}: manifest.json was edited after export (field 'classnames' changed); "
                                     "export it again")
    assert proc.stdout == ""


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only filesystem (root ignores permission bits, so a read-only mount it is)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    yield ro
    subprocess.run(["umount", str(ro)], check=False)


@pytest.mark.parametrize("command", ["export", "train", "pretrain", "bench"])
def test_a_read_only_out_is_one_line_before_any_work(read_only_dir, random_testbed_bundle, command):
    out = str(read_only_dir / "out")
    args = {"export": ["export", "p4q-testbed", "--data", "fashion-mnist", "--out", out],
            "train": ["train", "--recipe", "recipes/testbed-p4q-w8a8.yaml", "--set", "model=p4q-testbed", "--out", out],
            "pretrain": ["pretrain", "--recipe", "recipes/testbed-pretrain.yaml", "--out", out],
            "bench": ["bench", str(random_testbed_bundle), "--batch", "1", "--iterations", "1", "--out", out]}[command]
    what = {"export": "bundle", "train": "run", "pretrain": "model", "bench": "benchmark report"}[command]
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: cannot write the {what} to {out}: {read_only_dir} is not writable"]


def test_an_interrupt_lost_in_a_finalizer_still_stops_the_next_step(monkeypatch):
    """Python prints "Exception ignored" for a raise inside __del__ and carries on: the once-seen
    "Ctrl-C during calibration and training went on". The handler also records the signal, and
    every progress loop raises it again at its next step."""
    from p4q_export import cli, errors, progress

    monkeypatch.setattr(errors, "_pending_signal", None)
    lost = []  # what Python reports as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", lambda u: lost.append(u.exc_type))
    before = signal.getsignal(signal.SIGINT)

    class Finalized:
        def __del__(self):
            cli._on_signal(signal.SIGINT, None)

    seen = []
    try:
        with pytest.raises(errors.Interrupted):
            for i in progress.progress_iter(range(5), desc="calibrating"):
                seen.append(i)
                if i == 1:
                    Finalized()  # collected at once: the handler's raise is lost inside __del__
    finally:
        signal.signal(signal.SIGINT, before)
    assert lost == [errors.Interrupted] and seen == [0, 1]


def test_ctrl_c_inside_the_checkpoint_write_waits_for_the_write(monkeypatch, tmp_path):
    """The CI failure of stop 30: SIGINT landed inside torch.save's writer, whose C++ side turned the
    handler's raise into "RuntimeError: unexpected pos" (exit 1, a traceback). The signal now
    arrives while the writer is mid-file and still surfaces as the interrupt, after a whole file."""
    import torch

    from p4q_export import cli, errors
    from p4q_export.p4q.checkpoint import load_checkpoint, save_checkpoint

    real_save, writes = torch.save, []

    class InterruptedMidFile:
        """The checkpoint's file, receiving Ctrl-C at its third write."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            writes.append(len(data))
            if len(writes) == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    monkeypatch.setattr(torch, "save", lambda state, f: real_save(state, InterruptedMidFile(f)))
    monkeypatch.setattr(errors, "_pending_signal", None)
    before = signal.signal(signal.SIGINT, cli._on_signal)
    path = tmp_path / "checkpoint.pt"
    state = {"format": "p4q-export/checkpoint-1", "weights": torch.arange(50_000, dtype=torch.float32)}
    try:
        with pytest.raises(errors.Interrupted):
            save_checkpoint(path, state)
    finally:
        signal.signal(signal.SIGINT, before)
    assert len(writes) > 3  # the signal came mid-file, and the writer carried on
    assert torch.equal(load_checkpoint(path)["weights"], state["weights"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left


@pytest.mark.parametrize("raised", [RuntimeError("unexpected pos 63872 vs 59668"), OSError(5, "Input/output error")])
def test_an_error_raised_while_a_signal_is_pending_exits_as_the_interrupt(monkeypatch, capsys, raised):
    """Native code may swallow the handler's Interrupted and raise its own error: the CLI still
    exits 130 with the interrupt's line, not 1 with a traceback or 2 with an I/O error."""
    from p4q_export import cli, errors

    def command(**_):
        errors.note_signal(signal.SIGINT)
        raise raised

    monkeypatch.setattr(errors, "_pending_signal", None)
    monkeypatch.setattr(cli, "app", command)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.main()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert stopped.value.code == 130
    assert capsys.readouterr().err.startswith("interrupted by SIGINT: ")
