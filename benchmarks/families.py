"""`make bench-families`: the supported-tower matrix at full size, as a user runs it. For each
open_clip model (random weights, seeded): `export --precision int8` on Fashion-MNIST calibration
(wall time and the process's peak memory), `validate --backend ort`, and ORT INT8 vs FP32 latency
at batch 1. Writes families.json and families.md and prints the table (docs/benchmarks.md's).

    python -m benchmarks.families [--models ViT-B-16,RN50] [--out DIR] [--calib-images 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from p4q_export.bench.run import machine_info
from p4q_export.deploy.bundle import load_bundle
from p4q_export.models.testbed import cache_root

MODELS = ["ViT-B-16", "EVA02-B-16", "MobileCLIP-B", "MobileCLIP2-S0", "RN50", "convnext_base"]


def _run(args: list[str], log: Path) -> tuple[int, str, float, float]:
    """(exit code, stdout, seconds, peak RSS in GiB) of one CLI process."""
    env = dict(os.environ, P4Q_NO_PROGRESS="1")
    started = time.perf_counter()
    with open(log, "w") as err, subprocess.Popen([sys.executable, "-m", "p4q_export.cli", "--json", *args], env=env,
                                                 stdout=subprocess.PIPE, stderr=err, text=True) as proc:
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, time.perf_counter() - started, usage.ru_maxrss / 2**20


def measure(model: str, root: Path, calib_images: int, limit: int, iterations: int) -> dict:
    bundle = root / model
    row: dict = {"model": model}
    rc, out, seconds, peak = _run(["export", model, "--data", "fashion-mnist", "--calib-images", str(calib_images),
                                   "--precision", "int8", "--force", "--out", str(bundle)], root / f"{model}.export.log")
    if rc != 0:
        return {**row, "error": f"export exit {rc} (see {root / f'{model}.export.log'})"}
    exported = json.loads(out)
    manifest = load_bundle(bundle, verify=False).manifest
    row.update(family=exported["tower_family"], int8_layers=exported["quantized_layers"],
               int8_mac_fraction=exported["int8_mac_fraction"], gmacs=round(manifest["onnx"]["total_macs"] / 1e9, 2),
               export_s=round(seconds, 1), export_peak_gib=round(peak, 2))
    rc, out, _, _ = _run(["validate", str(bundle), "--backend", "ort", "--data", "fashion-mnist", "--limit", str(limit)],
                         root / f"{model}.validate.log")
    if rc not in (0, 1):
        return {**row, "error": f"validate exit {rc}"}
    report = json.loads(out)
    row.update(cosine_min=report["cosine_min"], top1_agreement=report["top1_agreement"], validated=report["passed"])
    rc, out, _, _ = _run(["bench", str(bundle), "--device", "cpu", "--batch", "1", "--backends", "ort/fp32,ort/int8",
                          "--iterations", str(iterations), "--out", str(root / f"{model}.bench")], root / f"{model}.bench.log")
    if rc == 0:
        p50 = {r["precision"]: r["p50_ms"] for r in json.loads(out)["results"] if r.get("p50_ms")}
        if {"fp32", "int8"} <= set(p50):
            row.update(ort_fp32_ms=round(p50["fp32"], 1), ort_int8_ms=round(p50["int8"], 1),
                       int8_over_fp32=round(p50["int8"] / p50["fp32"], 2))
    return row


COLUMNS = [("model", "model"), ("family", "family"), ("int8_layers", "INT8 layers"), ("int8_mac_fraction", "INT8 MAC share"),
           ("gmacs", "GMACs"), ("export_s", "export s"), ("export_peak_gib", "export peak GiB"), ("cosine_min", "ORT cosine min"),
           ("top1_agreement", "top-1 agreement"), ("validated", "validate"), ("ort_fp32_ms", "ORT FP32 ms"),
           ("ort_int8_ms", "ORT INT8 ms"), ("int8_over_fp32", "INT8/FP32")]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['error']} |" + " |" * (len(COLUMNS) - 2))
            continue
        lines.append("| " + " | ".join(str(r.get(k, "")) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", type=Path, default=cache_root() / "bench-families")
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"{model} ...", file=sys.stderr, flush=True)
        rows.append(measure(model, args.out, args.calib_images, args.limit, args.iterations))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    (args.out / "families.json").write_text(json.dumps({"machine": machine_info("cpu"), "rows": rows}, indent=2) + "\n")
    md = table(rows)
    (args.out / "families.md").write_text(md + "\n")
    print(md)
    if any("error" in r or not r.get("validated") for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
