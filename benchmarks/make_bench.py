"""`make bench`: ViT-B-32 (random weights) and the test-bed bundle on this CPU; prints the ratio
table INT8 vs FP32 vs eager, checks the CPU acceptance bars at batch 1 and validates the fast INT8
path against the PyTorch reference in the same run; then the P4Q training loop with cached
frozen-tower features against the uncached loop.

    python -m benchmarks.make_bench [--iterations N] [--batch 1,8] [--only vit|testbed|train]

Bundles are exported once into $P4Q_CACHE/bench-bundles/ and reused.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from p4q_export.bench.report import markdown_table, speedups, write_report
from p4q_export.bench.run import BenchRequest, parse_batches, run_bench
from p4q_export.deploy.bundle import FORMAT, load_bundle
from p4q_export.errors import UserError
from p4q_export.models.testbed import cache_root
from p4q_export.progress import pct

BACKENDS = ["torch/fp32", "ort/fp32", "ort/int8", "ort-exact/int8"]
BARS = {"× vs ORT FP32": 1.5, "× vs eager": 2.5}  # ORT INT8 (fast) at batch 1, from the issue


def _export(source: str, out: Path) -> Path:
    if _current_bundle(out):
        return out
    print(f"exporting {source} -> {out} (first run only)", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "p4q_export.cli", "export", source, "--data", "fashion-mnist", "--profile", "ort-x86",
           "--calib-images", "256", "--embedding", "--force", "--out", str(out)]  # timing only: a smaller calibration
    proc = subprocess.run(cmd, env=dict(os.environ, P4Q_NO_PROGRESS="1"), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"export of {source} failed (exit {proc.returncode})")
    return out


def bundles(only: str | None) -> dict[str, Path]:
    root = cache_root() / "bench-bundles"
    chosen = {}
    if only in (None, "vit"):
        chosen["ViT-B-32 (random weights)"] = _export("ViT-B-32", root / "vit-b-32-ort-x86")
    if only in (None, "testbed"):
        from p4q_export.models.testbed import ensure_testbed

        chosen["test-bed CLIP"] = _export(str(ensure_testbed()), root / "testbed-ort-x86")
    return chosen


def _current_bundle(bundle: Path) -> bool:
    """A bundle exported by this version: deploy/validation folders, INT8 weights, the embedding output."""
    try:
        manifest = load_bundle(bundle, verify=False).manifest
    except UserError:
        return False
    return manifest.get("format") == FORMAT and any(o.get("name") == "embedding" for o in manifest.get("outputs", []))


def validation_line(bundle: Path, limit: int) -> str:
    """The fast INT8 path against the PyTorch reference, as `validate --backend ort-fast` does."""
    from p4q_export.runtime.validate import validate_bundle

    r = validate_bundle(bundle, backend="ort", limit=limit)
    line = (f"validation, ORT INT8 (fast) vs torch on {r['n']} images: {r['compared']} cosine min {r['cosine_min']:.6f} "
            f"(bar {r['thresholds']['cosine_min']}), top-1 agreement {pct(r['top1_agreement'])} "
            f"(bar {r['thresholds']['top1_agreement_min']}; {r['ties']} ties left out) {'PASS' if r['passed'] else 'FAIL'}")
    return line


def acceptance(report: dict) -> list[str]:
    lines = []
    for row in speedups(report):
        if (row["backend"], row["precision"], row["batch"]) == ("ort", "int8", 1):
            for label, bar in BARS.items():
                got = row.get(label)
                verdict = "n/a" if got is None else ("PASS" if got >= bar else "FAIL")
                lines.append(f"ORT INT8 batch 1 {label}: {got if got is not None else '–'} (bar {bar}×) {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--only", choices=["vit", "testbed", "train"])
    ap.add_argument("--validate-images", type=int, default=500, help="test images for the validation after each bench")
    args = ap.parse_args(argv)
    failed = False
    for name, bundle in (bundles(args.only) if args.only != "train" else {}).items():
        report = run_bench(BenchRequest(bundle=bundle, device="cpu", batches=parse_batches(args.batch),
                                        iterations=args.iterations, warmup=args.warmup, backends=BACKENDS))
        files = write_report(report, bundle / "bench")
        print(f"\n## {name}\n")
        print(markdown_table(report))
        lines = acceptance(report) if name.startswith("ViT") else []  # the bars are ViT-B-32's
        lines.append(validation_line(bundle, args.validate_images))  # both bundles are ort-x86: fast INT8 is for them
        for line in lines:
            print(line)
            failed |= line.endswith("FAIL")
        print(f"report: {files['markdown']}  plot: {files.get('plot')}")
    if args.only in (None, "train"):
        failed |= not training_cache_speedup()
    return 1 if failed else 0


def training_cache_speedup(bar: float = 10.0) -> bool:
    """Per-epoch time of P4Q training (test bed, W8A8 recipe) with and without the feature cache."""
    from benchmarks.cache_speedup import benchmark_cache_speedup

    r = benchmark_cache_speedup(epochs=3)
    print("\n## P4Q training loop: cached frozen-tower features vs recomputing them\n")
    print("| loop | s / epoch |\n|---|---|")
    print(f"| uncached | {r['uncached_seconds_per_epoch']:.3f} |\n| cached | {r['cached_seconds_per_epoch']:.3f} |")
    ok = r["speedup"] >= bar and r["max_abs_loss_diff"] <= 1e-5
    print(f"speed-up {r['speedup']:.1f}x per epoch (bar {bar}x; {r['speedup_including_cache_build']:.1f}x including the "
          f"{r['cache_seconds']:.1f} s cache build), max |loss diff| over {r['steps']} steps {r['max_abs_loss_diff']:.2e} "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
