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
    from ..bench.report import markdown_table, write_report
    from ..bench.run import BenchRequest, parse_backends, parse_batches, run_bench
    from ..outdir import check_writable

    batches = parse_batches(batch)
    if trtexec and not host:  # with --host the path is the remote machine's
        from ..bench.trt_timing import find_trtexec

        find_trtexec(trtexec)  # a wrong path is bad input before any timing
    parse_backends(backends)  # reject typos before any ssh or model work
    report_dir = Path(out or Path(bundle) / "bench")
    check_writable(report_dir, "benchmark report")  # before the benchmark runs, not after
    if host:
        from ..bench.remote import SshTarget, remote_bench

        target = SshTarget(host, port=port, identity=str(identity) if identity else None,
                           known_hosts=str(known_hosts) if known_hosts else None, connect_timeout=connect_timeout)
        report = remote_bench(target, bundle, device, batches, iterations, warmup, remote_cmd=remote_command, backends=backends,
                              trtexec=trtexec, **({"remote_root": remote_dir} if remote_dir else {}))
    else:
        report = run_bench(BenchRequest(bundle=bundle, device=device, batches=batches, iterations=iterations, warmup=warmup,
                                        backends=parse_backends(backends), threads=threads, build_engines=build_engines,
                                        include_copy=include_copy, trtexec=trtexec))
    report["report_files"] = write_report(report, report_dir)
    if json_mode(json_out):  # stdout holds the JSON: the table goes to the log
        log(markdown_table(report))
    emit(report, json_out, markdown_table)
    log("wrote " + ", ".join(report["report_files"].values()))
