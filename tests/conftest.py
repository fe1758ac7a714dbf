"""Shared fixtures. The test-bed models are shipped with the project (p4q_export/testbeds/); only
the determinism test pretrains (a few steps)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from forked_cli import ForkedCli

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("P4Q_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def testbed_model() -> Path:
    """Directory of the shipped test-bed CLIP (open_clip config + weights + manifest)."""
    from p4q_export.models.testbed import ensure_testbed

    return ensure_testbed()


@pytest.fixture(scope="session")
def random_testbed_bundle(tmp_path_factory) -> Path:
    """A bundle of the test bed's architecture with random weights (seeded): seconds to export, no
    pretraining; for tests of the runtime around a bundle, not of accuracy."""
    out = tmp_path_factory.mktemp("random-testbed") / "bundle"
    run_cli("--json", "export", "p4q-testbed", "--data", "fashion-mnist", "--out", str(out), "--calib-images", "64", check=True)
    return out


_FORKED = ForkedCli(REPO)


def run_cli(*args: str, check: bool = False, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real console entry point in a child process (stdout = JSON, stderr = logs): a fork
    of a server that has imported the CLI already (forked_cli.py), or with
    P4Q_TEST_FRESH_PROCESSES=1 a fresh interpreter."""
    full_env = {**os.environ, "P4Q_NO_PROGRESS": "1", **(env or {})}
    if os.environ.get("P4Q_TEST_FRESH_PROCESSES", "") in ("", "0"):
        proc = _FORKED.run(list(args), full_env, timeout)
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "p4q_export.cli", *args],
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=REPO,
        )
    if check and proc.returncode != 0:
        raise AssertionError(f"p4q-export {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def cli():
    return run_cli


def pytest_sessionfinish(session, exitstatus):
    _FORKED.close()
