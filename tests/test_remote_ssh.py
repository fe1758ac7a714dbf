"""`bench --host` for real: a throwaway OpenSSH server on 127.0.0.1 (own host key, authorized key
and sshd_config in a tmp dir), the remote command being this venv's p4q-export."""

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_port, make_tiny_bundle

from p4q_export.bench.remote import SshTarget, bundle_tar, remote_command
from p4q_export.errors import UserError

SSHD = "/usr/sbin/sshd"
REMOTE_P4Q = str(Path(sys.executable).with_name("p4q-export"))
needs_sshd = pytest.mark.skipif(not (Path(SSHD).exists() and shutil.which("ssh") and shutil.which("ssh-keygen")),
                                reason="OpenSSH server/client not installed (apt install openssh-server openssh-client)")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not (Path(SSHD).exists() and shutil.which("ssh-keygen")):
        pytest.skip("OpenSSH server not installed")
    d = tmp_path_factory.mktemp("sshd")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PidFile {d / 'sshd.pid'}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
LogLevel ERROR
""")
    Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None  # privilege-separation dir
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start: {proc.stderr.read()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield {"port": port, "identity": d / "client_key", "known_hosts": d / "known_hosts", "user": getpass.getuser()}
    proc.terminate()
    proc.wait(timeout=5)


def test_remote_arguments_are_quoted():
    cmd = remote_command(["p4q-export", "bench", "/tmp/b $(touch pwned)/x", "--batch", "1"])
    assert cmd == "p4q-export bench '/tmp/b $(touch pwned)/x' --batch 1"
    with pytest.raises(UserError):
        SshTarget("-oProxyCommand=touch pwned")
    with pytest.raises(UserError):
        SshTarget("user@host; rm -rf /")


def _tar_names(b: Path, files: tuple, start: Path | None = None) -> list[str]:
    import io
    import tarfile

    for rel in files:
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_text("x")
    with tarfile.open(fileobj=io.BytesIO(bundle_tar(start or b))) as tar:
        return sorted(tar.getnames())


def test_bundle_tar_leaves_engines_bench_and_the_reference_behind(tmp_path):
    files = ("deploy/model.int8-fp16.onnx", "deploy/manifest.json", "deploy/engines/x.plan", "bench/bench.json",
             "validation/model.fp16.onnx", "validation/reference.pt", "validation/calibration-x.txt")
    kept = ["b", "b/deploy", "b/deploy/manifest.json", "b/deploy/model.int8-fp16.onnx", "b/validation",
            "b/validation/model.fp16.onnx"]
    assert _tar_names(tmp_path / "b", files) == kept
    assert _tar_names(tmp_path / "b", files, start=tmp_path / "b" / "deploy") == kept  # BUNDLE/deploy: the whole bundle
    # a flat bundle from before the split: its reference.pt is part of the verified set, so it goes too
    flat = ("model.onnx", "reference.pt", "engines/x.plan", "bench/bench.json", "manifest.json")
    assert _tar_names(tmp_path / "old", flat) == ["old", "old/manifest.json", "old/model.onnx", "old/reference.pt"]


@needs_sshd
def test_bench_over_ssh_with_a_hostile_bundle_name(sshd, tmp_path, cli):
    bundle = make_tiny_bundle(tmp_path / "my bundle $(touch INJECTED)")
    remote_root = tmp_path / "remote side $(touch INJECTED2)"
    proc = cli("bench", str(bundle), "--device", "cpu", "--host", f"{sshd['user']}@127.0.0.1", "--port", str(sshd["port"]),
               "--identity", str(sshd["identity"]), "--known-hosts", str(sshd["known_hosts"]),
               "--remote-command", REMOTE_P4Q, "--remote-dir", str(remote_root),
               "--batch", "1,2", "--iterations", "2", "--warmup", "1", "--backends", "ort/int8", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["host"] == f"{sshd['user']}@127.0.0.1" and rep["device"] == "cpu"
    assert [(r["backend"], r["precision"], r["batch"]) for r in rep["results"]] == [("ort", "int8", 1), ("ort", "int8", 2)]
    assert (remote_root / bundle.name / "deploy" / "model.onnx").is_file()  # copied under its literal name
    assert (bundle / "bench" / "bench.json").is_file()  # the report comes back here
    for where in (Path.home(), tmp_path, remote_root, Path.cwd()):
        assert not list(where.glob("INJECTED*")), f"shell injection ran in {where}"


@needs_sshd
def test_missing_remote_p4q_export_is_one_line(sshd, tmp_path, cli):
    bundle = make_tiny_bundle(tmp_path / "b")
    proc = cli("bench", str(bundle), "--host", f"{sshd['user']}@127.0.0.1", "--port", str(sshd["port"]),
               "--identity", str(sshd["identity"]), "--known-hosts", str(sshd["known_hosts"]),
               "--remote-command", "/nonexistent/p4q-export", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--remote-command" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@needs_sshd
def test_refused_connection_is_exit_2_and_one_line(tmp_path, cli):
    bundle = make_tiny_bundle(tmp_path / "b")
    proc = cli("bench", str(bundle), "--host", "nobody@127.0.0.1", "--port", str(free_port()),
               "--known-hosts", str(tmp_path / "kh"), "--connect-timeout", "5", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach nobody@127.0.0.1" in lines[0]


@needs_sshd
def test_remote_cuda_bench_without_tensorrt_there_is_one_line_and_writes_nothing(sshd, tmp_path, cli):
    """--device cuda builds the engines on the remote GPU first: where the remote has no TensorRT
    its install hint comes back as the one line, with exit 2 and no report."""
    bundle = make_tiny_bundle(tmp_path / "b")
    proc = cli("bench", str(bundle), "--device", "cuda", "--host", f"{sshd['user']}@127.0.0.1", "--port", str(sshd["port"]),
               "--identity", str(sshd["identity"]), "--known-hosts", str(sshd["known_hosts"]),
               "--remote-command", REMOTE_P4Q, "--remote-dir", str(tmp_path / "remote"), "--json", timeout=600)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "remote build-engine" in lines[0] and "TensorRT is not installed" in lines[0]
    assert "Traceback" not in proc.stderr and not (bundle / "bench").exists()
