"""`bench`: latency and throughput of a bundle on this machine or on a remote one over SSH."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..bench.plan import backends_help, threads_help
from ..progress import log
from ._common import JsonOpt, emit, json_mode


def bench(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `p4q-export export`).")],
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, jetson, or auto (cuda where PyTorch sees a GPU).")] = "cpu",
    host: Annotated[str | None, typer.Option("--host", help="Run on USER@HOST over SSH (the bundle is copied there).")] = None,
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, e.g. 1,8,32.")] = "1,8,32",
    iterations: Annotated[int, typer.Option("--iterations", help="Timed iterations per batch size.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed warm-up iterations per batch size.")] = 3,
    backends: Annotated[str | None, typer.Option("--backends", help=backends_help())] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help=threads_help())] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Report directory (default BUNDLE/bench).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="SSH port.")] = None,
    identity: Annotated[Path | None, typer.Option("--identity", help="SSH private key file.")] = None,
    known_hosts: Annotated[Path | None, typer.Option("--known-hosts", help="known_hosts file (new host keys are accepted and recorded there).")] = None,
    connect_timeout: Annotated[int, typer.Option("--connect-timeout", help="SSH connect timeout in seconds.")] = 10,
    remote_command: Annotated[str, typer.Option("--remote-command", help="p4q-export executable on the remote host.")] = "p4q-export",
    remote_dir: Annotated[str | None, typer.Option("--remote-dir", help="Where bundles go on the remote host (relative = under its $HOME).")] = None,
    build_engines: Annotated[bool, typer.Option("--build-engines/--no-build-engines", help="Build missing TensorRT engines here first (GPU devices).")] = True,
    trtexec: Annotated[str | None, typer.Option("--trtexec", help="trtexec to cross-check the TensorRT rows with (default: PATH, "
                                                 "$TENSORRT_ROOT/bin, JetPack's /usr/src/tensorrt/bin).")] = None,
    include_copy: Annotated[bool, typer.Option("--include-copy", help="GPU torch rows: time the host→device input and device→host output copies too (default: the forward pass on device-resident inputs).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Benchmark every backend/precision available: p50/p90/p99 latency and throughput per batch."""
    from ..bench.report import markdown_table
    from ..tasks.bench import bench_bundle

    report = bench_bundle(bundle, device=device, host=host, batch=batch, iterations=iterations, warmup=warmup, backends=backends,
                          threads=threads, out=out, port=port, identity=identity, known_hosts=known_hosts,
                          connect_timeout=connect_timeout, remote_command=remote_command, remote_dir=remote_dir,
                          build_engines=build_engines, trtexec=trtexec, include_copy=include_copy)
    if json_mode(json_out):  # stdout holds the JSON: the table goes to the log
        log(markdown_table(report))
    emit(report, json_out, markdown_table)
    log("wrote " + ", ".join(report["report_files"].values()))
