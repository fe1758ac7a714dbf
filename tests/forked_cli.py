"""The CLI in a real child process, without paying for its imports each time.

Every `p4q-export` subprocess spends 3-5 s of a 2-core machine importing torch, torchvision,
open_clip and ONNX before it reads its first option; the suite starts about 200 of them. A server
process imports all of that once, and each run is a fork of it that executes the real entry point
(`p4q_export.cli.main`) with its own argv, environment, working directory, stdout and stderr
(files), and returns its real exit status: what the CLI does is unchanged, only the import is shared.

A call whose environment differs from the server's in a variable an import may read (anything
outside CALL_TIME_ENV, e.g. OMP_NUM_THREADS or HF_HUB_OFFLINE) gets a new server started with it.
Tests that need the process itself (signals, torchrun, the README's shell commands) use subprocess
directly; P4Q_TEST_FRESH_PROCESSES=1 runs every CLI call in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# variables the project reads when a command runs, not when a module is imported
CALL_TIME_ENV = {"P4Q_NO_PROGRESS", "P4Q_MAX_IMAGE_PIXELS", "P4Q_MODEL_CONFIGS", "P4Q_HF_TOKENIZER", "P4Q_CACHE", "COLUMNS",
                 "PYTEST_CURRENT_TEST"}

_SERVER = r"""
import atexit, importlib, json, os, pkgutil, sys, traceback
import p4q_export, p4q_export.cli
# every module a command may import later (the optional ones that need TensorRT or a GPU fail here)
for m in pkgutil.walk_packages(p4q_export.__path__, "p4q_export."):
    try:
        importlib.import_module(m.name)
    except Exception:
        pass
import matplotlib.pyplot, onnx, onnxruntime, open_clip, timm, torch, torchvision  # noqa
# no torch op runs here: OpenMP's pool (not fork-safe) starts in each child at its first op.
# The two threads the imports start are fork-safe: OpenBLAS's (pthread_atfork) and ONNX Runtime's
channel_in, channel_out = sys.stdin.buffer, sys.stdout.buffer
while line := channel_in.readline():
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
        sys.argv = ["p4q-export", *req["args"]]
        try:
            p4q_export.cli.main()
            code = 0
        except SystemExit as stop:  # what the interpreter makes of it on the way out
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
            if not isinstance(stop.code, int | None):
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        # Python's exit handlers, then out without C++ static destructors: those of the libraries
        # whose threads stayed in the server join threads this process does not have
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    channel_out.write(json.dumps({"pid": pid}).encode() + b"\n")
    channel_out.flush()
    _, status = os.waitpid(pid, 0)
    channel_out.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    channel_out.flush()
"""


class ForkedCli:
    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def _server(self, env: dict[str, str]) -> subprocess.Popen:
        """The server for `env`: a new one where a variable read at import differs from the
        running server's (only CALL_TIME_ENV may differ between its forks)."""
        if self.proc is not None and self.proc.poll() is None:
            changed = {k for k in set(env) | set(self.env) if env.get(k) != self.env.get(k)}
            if changed <= CALL_TIME_ENV:
                return self.proc
            self.close()
        self.env = dict(env)
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=self.cwd, env=self.env)
        return self.proc

    def _reply(self, proc: subprocess.Popen, timeout: float | None) -> dict:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI fork server exited ({proc.wait()})")
        return json.loads(line)

    def run(self, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        proc = self._server(env)
        with tempfile.TemporaryDirectory(prefix="p4q-cli-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            out.touch()
            err.touch()
            request = {"args": list(args), "env": env, "cwd": str(self.cwd), "stdout": str(out), "stderr": str(err)}
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            pid = self._reply(proc, 120)["pid"]
            try:
                rc = self._reply(proc, timeout)["rc"]
            except TimeoutError:
                os.killpg(pid, signal.SIGKILL)
                self._reply(proc, 60)
                raise subprocess.TimeoutExpired(["p4q-export", *args], timeout, out.read_text(), err.read_text()) from None
            return subprocess.CompletedProcess(["p4q-export", *args], rc, out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

