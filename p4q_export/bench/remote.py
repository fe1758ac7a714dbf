"""Bench on another machine over SSH: copy the bundle, build the engine there when the device has
a GPU (engines are not portable), run `p4q-export --json bench` there, bring the JSON back.

No local shell is involved (argument lists only), and the one string the remote shell sees is
built with shlex.quote from every argument, so bundle names with spaces or `$(...)` stay data.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import tarfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from ..errors import UserError

SSH_UNREACHABLE = 255  # ssh's own exit status for connection/auth failures
COMMAND_NOT_FOUND = 127
REMOTE_ROOT = ".cache/p4q-export/remote-bundles"  # relative: ssh runs remote commands in $HOME
NOT_COPIED = ("engines", "bench")  # engines are per device; bench output is per run
# validate runs where the bundle was made: the bench needs the graphs, not the PyTorch reference
VALIDATION_ONLY = ("reference.pt", "calibration-*")
_DESTINATION = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._:\[\]-]+$")


@dataclass
class SshTarget:
    destination: str  # USER@HOST
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    connect_timeout: int = 10

    def __post_init__(self):
        # A destination starting with "-" would be read by ssh as an option.
        if not _DESTINATION.match(self.destination or "") or self.destination.startswith("-"):
            raise UserError(f"--host must look like USER@HOST, got {self.destination!r}")

    def ssh_args(self) -> list[str]:
        args = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "LogLevel=ERROR"]
        if self.known_hosts:
            args += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            args += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.port:
            args += ["-p", str(int(self.port))]
        return args + ["--", self.destination]


def remote_command(argv: list[str]) -> str:
    """The single string ssh hands to the remote shell, every argument quoted."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_ssh(target: SshTarget, argv: list[str], stdin: bytes | None = None, timeout: float | None = None,
            what: str = "command") -> subprocess.CompletedProcess:
    """Run argv on the target; connection failures and a missing program become one-line UserErrors."""
    try:
        proc = subprocess.run(target.ssh_args() + [remote_command(argv)], input=stdin, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise UserError("ssh is not installed on this machine (apt install openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{target.destination}: remote {what} did not finish within {timeout:.0f} s") from None
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode == SSH_UNREACHABLE:
        raise UserError(f"cannot reach {target.destination} over ssh: {_one_line(stderr) or 'connection failed'}")
    if proc.returncode == COMMAND_NOT_FOUND:
        raise UserError(f"{target.destination} has no {argv[0]!r}: install p4q-export there "
                        f"(pip install p4q-export) or pass --remote-command PATH")
    return proc


def check_remote(target: SshTarget, remote_cmd: str) -> None:
    """Reachable, and the remote p4q-export runs (its --help exits 0)."""
    proc = run_ssh(target, [remote_cmd, "--help"], timeout=target.connect_timeout + 60, what="check")
    if proc.returncode != 0:
        raise UserError(f"{target.destination}: {remote_cmd!r} does not run ({_one_line(proc.stderr.decode(errors='replace'))}); "
                        "install p4q-export there or pass --remote-command PATH")


def bundle_root(bundle_dir: Path) -> Path:
    """BUNDLE for BUNDLE/deploy: the bench copies the graphs of both folders."""
    from ..deploy.bundle import DEPLOY_DIR, MANIFEST, VALIDATION_DIR

    bundle_dir = Path(bundle_dir)
    if bundle_dir.name == DEPLOY_DIR and (bundle_dir / MANIFEST).is_file() and (bundle_dir.parent / VALIDATION_DIR).is_dir():
        return bundle_dir.parent
    return bundle_dir


def bundle_tar(bundle_dir: Path) -> bytes:
    """The bundle as an uncompressed tar (INT8 ONNX compresses poorly), without engines/, bench/ and
    what only validate reads (reference.pt, the calibration lists)."""
    from ..deploy.bundle import DEPLOY_DIR, VALIDATION_DIR

    buf = io.BytesIO()
    bundle_dir = bundle_root(bundle_dir)
    name = bundle_dir.name

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts[1:]
        if parts[:1] == (VALIDATION_DIR,) and len(parts) == 2 and any(fnmatch(parts[1], p) for p in VALIDATION_ONLY):
            return None
        parts = parts[1:] if parts[:1] == (DEPLOY_DIR,) else parts
        return None if parts and parts[0] in NOT_COPIED else info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(bundle_dir), arcname=name, filter=keep)
    return buf.getvalue()


def copy_bundle(target: SshTarget, bundle_dir: Path, remote_root: str = REMOTE_ROOT) -> str:
    """Replace REMOTE_ROOT/<bundle name> on the target with this bundle; returns its remote path.
    tar over ssh: one connection, no scp path parsing, the same quoting as every other command."""
    bundle_dir = bundle_root(Path(bundle_dir).resolve())
    if bundle_dir.name in ("", ".", ".."):
        raise UserError(f"cannot copy bundle {bundle_dir}")
    remote_dir = f"{remote_root.rstrip('/')}/{bundle_dir.name}"
    script = 'set -e; rm -rf -- "$1"; mkdir -p -- "$2"; tar -xf - -C "$2"'
    proc = run_ssh(target, ["sh", "-c", script, "p4q-copy", remote_dir, remote_root], stdin=bundle_tar(bundle_dir),
                   timeout=3600, what="copy")
    if proc.returncode != 0:
        raise UserError(f"copying the bundle to {target.destination} failed: {_one_line(proc.stderr.decode(errors='replace'))}")
    return remote_dir


def _json_from(proc: subprocess.CompletedProcess, target: SshTarget, what: str) -> dict:
    out = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not out:
        raise UserError(f"remote {what} on {target.destination} failed (exit {proc.returncode}): "
                        f"{_one_line(proc.stderr.decode(errors='replace')) or 'no output'}")
    try:
        return json.loads(out[-1])
    except json.JSONDecodeError:
        raise UserError(f"remote {what} on {target.destination} printed no JSON: {out[-1][:200]}") from None


def engine_builds(remote_cmd: str, remote_dir: str) -> list[list[str]]:
    """The build-engine runs on a GPU device: the INT8 engine, then the FP16 one, each once."""
    return [[remote_cmd, "--json", "build-engine", remote_dir, kind] for kind in ("--int8", "--fp16")]


def remote_bench(target: SshTarget, bundle_dir: Path, device: str, batches: list[int], iterations: int, warmup: int,
                 remote_cmd: str = "p4q-export", backends: str | None = None, remote_root: str = REMOTE_ROOT,
                 trtexec: str | None = None) -> dict:
    """The whole remote run; returns the remote bench JSON with `host` added."""
    check_remote(target, remote_cmd)
    remote_dir = copy_bundle(target, bundle_dir, remote_root)
    engines, skipped = [], []
    if device in ("cuda", "jetson"):
        # Build on the device itself (an engine is tied to its GPU and TensorRT version), each engine
        # once. An engine this TensorRT cannot build (TensorRT 11 and a bundle without an FP16 graph)
        # leaves its rows out with the reason instead of failing the bench.
        for argv in engine_builds(remote_cmd, remote_dir):
            proc = run_ssh(target, argv, timeout=3600, what="build-engine")
            if proc.returncode == 2 and "--fp16" in argv:
                skipped.append({"backend": "trt", "precision": "fp16", "reason": _one_line(proc.stderr.decode(errors="replace"))})
                continue
            engines.append(_json_from(proc, target, "build-engine"))
    argv = [remote_cmd, "--json", "bench", remote_dir, "--device", device, "--batch", ",".join(map(str, batches)),
            "--iterations", str(iterations), "--warmup", str(warmup)]
    if backends:
        argv += ["--backends", backends]
    if trtexec:
        argv += ["--trtexec", trtexec]
    if device in ("cuda", "jetson"):
        argv += ["--no-build-engines"]
    report = _json_from(run_ssh(target, argv, timeout=7200, what="bench"), target, "bench")
    report["host"] = target.destination
    report["remote_bundle"] = remote_dir
    if engines:
        report["engines_built"] = engines
    if skipped:
        # the remote bench skipped trt/fp16 for want of its engine: the build's reason replaces that
        report["skipped"] = skipped + [s for s in report.get("skipped", []) if (s.get("backend"), s.get("precision")) != ("trt", "fp16")]
    return report
