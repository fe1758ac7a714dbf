"""Print the demo's accuracy ladders and latency table from the JSON the CLI wrote, and draw the
ladders (OUT/ladder.png)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ladder_plot import plot_ladders

IN_DOMAIN = (("W8A8 (image tower)", "p4q-w8a8", "W8A8"), ("W4A4 (+ text tower)", "p4q-w4a4", "W4A4 +text"),
             ("W3A3 (+ text tower)", "p4q-w3a3", "W3A3 +text"))


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def pct(v) -> str:
    return "   n/a" if v is None else f"{100 * v:6.2f}"


def _cells(fp, coop, ptq, p4q) -> dict:
    return {k: 100 * v for k, v in zip(("FP zero-shot", "FP CoOp", "PTQ zero-shot", "P4Q"), (fp, coop, ptq, p4q)) if v is not None}


def main(out: Path) -> None:
    coop = load(out / "coop" / "metrics.json").get("accuracy", {})
    rows, in_domain = [], []
    for label, run, short in IN_DOMAIN:
        acc = load(out / run / "metrics.json").get("accuracy", {})
        if not acc:
            continue
        ptq, p4q, fp = acc.get("ptq_zeroshot"), acc.get("trained"), acc.get("fp_zeroshot")
        in_domain.append((short, _cells(fp, coop.get("trained"), ptq, p4q)))
        # a drop under 0.3 points is within seed noise: its ratio would mean nothing
        recovered = "(no drop)" if None in (ptq, p4q, fp) or fp - ptq < 0.003 else f"{100 * (p4q - ptq) / (fp - ptq):5.0f}%"
        rows.append(f"| {label:<20} | {pct(fp)} | {pct(coop.get('trained'))} | {pct(ptq)} | {pct(p4q)} | {recovered:>9} |")
    print("\nAccuracy ladder (Fashion-MNIST test split, 10,000 images, top-1 %; 16 shots, seed 1)\n")
    print("| setting              | FP 0-shot | FP CoOp | PTQ 0-shot |   P4Q | recovered |")
    print("|----------------------|-----------|---------|------------|-------|-----------|")
    for r in rows:
        print(r)

    glyphs = load(out / "glyphs" / "ladder.json")
    transfer = []
    for data, row in glyphs.get("rows", {}).items():
        for setting in ("W8A8", "W4A4 +text"):
            trained = row.get(f"P4Q {setting}") or {}
            transfer.append((f"{data}\n{setting}", _cells(row.get("FP zero-shot"), (row.get("FP CoOp") or {}).get("mean"),
                                                           row.get(f"P4Q {setting} PTQ zero-shot"), trained.get("mean"))))
    if glyphs.get("rows"):
        print("\nTransfer ladder (CLIP pretrained on rendered glyphs only; test splits, top-1 %; 16 shots, "
              f"seeds {glyphs.get('seeds')})\n")
        print("| data          | FP 0-shot | FP CoOp | W8A8 PTQ | P4Q W8A8 | W4A4 PTQ | P4Q W4A4 +text |")
        print("|---------------|-----------|---------|----------|----------|----------|----------------|")
        for data, row in glyphs["rows"].items():
            trained = {k: pct(row[k]["mean"]) if k in row else "   n/a" for k in ("FP CoOp", "P4Q W8A8", "P4Q W4A4 +text")}
            print(f"| {data:<13} | {pct(row.get('FP zero-shot'))}    | {trained['FP CoOp']}  | "
                  f"{pct(row.get('P4Q W8A8 PTQ zero-shot'))}   | {trained['P4Q W8A8']}   | "
                  f"{pct(row.get('P4Q W4A4 +text PTQ zero-shot'))}   | {trained['P4Q W4A4 +text']}         |")

    if in_domain or transfer:
        print(f"\nwrote {plot_ladders(in_domain, transfer, out / 'ladder.png')}")

    v = load(out / "validate.json")
    if v:
        logits = v.get("outputs", {}).get("logits", {})
        graph = f" {v['precision']} graph" if v.get("precision") else ""
        print(f"\nValidation ({v.get('backend')}{graph} vs PyTorch reference, n={v.get('n')}): {v.get('compared', 'logits')} cosine min "
              f"{v.get('cosine_min'):.5f}, mean {v.get('cosine_mean'):.6f}"
              + (f" (logits: min {logits['cosine_min']:.5f})" if "cosine_min" in logits else "")
              + f", top-1 agreement {v.get('top1_agreement'):.4f} ({v.get('ties', 0)} ties left out), passed={v.get('passed')}")

    bench = load(out / "bench.json")
    if bench.get("results"):
        print(f"\nLatency on this CPU ({bench.get('device')}), bundle {out / 'bundle-w8a8'}\n")
        print("| backend   | precision | batch | p50 ms | p90 ms | p99 ms | images/s |")
        print("|-----------|-----------|-------|--------|--------|--------|----------|")
        for r in bench["results"]:
            print(f"| {r['backend']:<9} | {r['precision']:<9} | {r['batch']:>5} | {r['p50_ms']:6.2f} | {r['p90_ms']:6.2f} | "
                  f"{r['p99_ms']:6.2f} | {r['throughput_ips']:8.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo"))
