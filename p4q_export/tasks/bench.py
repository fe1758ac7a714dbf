"""`bench`: reject bad options before any timing, run the benchmark here or on a remote host over
SSH, and write the report files."""

from __future__ import annotations

from pathlib import Path


def bench_bundle(bundle: Path, *, device: str, host: str | None, batch: str, iterations: int, warmup: int,
                 backends: str | None, threads: int | None, out: Path | None, port: int | None, identity: Path | None,
                 known_hosts: Path | None, connect_timeout: int, remote_command: str, remote_dir: str | None,
                 build_engines: bool, trtexec: str | None, include_copy: bool) -> dict:
    """The bench report, with `report_files` (default folder: BUNDLE/bench)."""
    from ..bench.report import write_report
    from ..bench.run import BenchRequest, parse_backends, parse_batches, run_bench
    from ..outdir import check_writable

    batches = parse_batches(batch)
    if trtexec and not host:  # with --host the path is the remote machine's
        from ..bench.trt_timing import find_trtexec

        find_trtexec(trtexec)  # a wrong path is bad input before any timing
    backend_list = parse_backends(backends)  # reject typos before any ssh or model work
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
                                        backends=backend_list, threads=threads, build_engines=build_engines,
                                        include_copy=include_copy, trtexec=trtexec))
    report["report_files"] = write_report(report, report_dir)
    return report
