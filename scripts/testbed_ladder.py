"""The in-domain accuracy ladder of a test bed: FP zero-shot, FP CoOp, PTQ zero-shot and P4Q for
W8A8 (`trt`), W4A4 and W3A3 (+ text tower), 16 shots of Fashion-MNIST, seeds 1-3 (mean ± std), with
the share of the PTQ drop P4Q recovers and each seed's number; written as JSON and a markdown table.

    python scripts/testbed_ladder.py [--model testbed-conv] [--seeds 1,2,3] [--out out/ladder-conv] [--set threads=1]

`--model` is any MODEL the recipes accept (`testbed`: the ViT bed, `testbed-conv`: the
convolutional bed). A benchmark, not a test: each three-seed run takes minutes on 2 CPU cores;
finished runs are reused (the `train` command's own check), so a re-run only prints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = (("W8A8, image tower (`trt`)", "testbed-p4q-w8a8"), ("W4A4 + text tower", "testbed-p4q-w4a4"),
        ("W3A3 + text tower", "testbed-p4q-w3a3"))


def train(recipe: str, model: str, seeds: str, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "p4q_export.cli", "train", "--recipe", str(ROOT / "recipes" / f"{recipe}.yaml"),
           "--set", f"model={model}", "--seeds", seeds, "--out", str(out), "--json"]
    for kv in extra:
        cmd += ["--set", kv]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def mean_std(m: dict) -> tuple[float, float]:
    acc = m["accuracy"]
    return 100 * acc["trained"], 100 * acc.get("trained_std", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="testbed-conv")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="a recipe override for every run")
    args = ap.parse_args()
    out = args.out or ROOT / "out" / f"ladder-{args.model}"
    coop = train("testbed-coop", args.model, args.seeds, out / "coop", args.extra)
    coop_m, coop_s = mean_std(coop)
    lines = ["| setting | FP zero-shot | FP CoOp | PTQ zero-shot | P4Q | of the PTQ drop recovered |", "|---|---|---|---|---|---|"]
    table = {"model": args.model, "seeds": args.seeds, "coop": coop, "rows": {}}
    for label, recipe in ROWS:
        m = train(recipe, args.model, args.seeds, out / recipe, args.extra)
        table["rows"][recipe] = m
        fp, ptq = 100 * m["accuracy"]["fp_zeroshot"], 100 * m["accuracy"]["ptq_zeroshot"]
        p4q, std = mean_std(m)
        drop = fp - ptq
        recovered = f"{100 * (p4q - ptq) / drop:.0f}%" if drop > 0.3 else "(no drop)"
        lines.append(f"| {label} | {fp:.2f} | {coop_m:.2f} ± {coop_s:.2f} | {ptq:.2f} | {p4q:.2f} ± {std:.2f} | {recovered} |")
        per_seed = " / ".join(f"{100 * v:.2f}" for v in (m.get("trained_per_seed") or {}).values())
        print(f"{lines[-1]}  per seed: {per_seed}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ladder.json").write_text(json.dumps(table, indent=2, default=str) + "\n")
    (out / "ladder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
