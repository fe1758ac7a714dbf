"""The transfer test bed's ladder: FP zero-shot, FP CoOp, P4Q W8A8 and P4Q W4A4 (+text) on each
downstream set, 16 shots, seeds 1-3 (mean ± std), written as JSON and a markdown table.

    python scripts/glyphs_ladder.py [--data mnist,fashion-mnist] [--seeds 1,2,3] [--out out/glyphs-ladder]
                                    [--set key=value ...]   # e.g. --set eval_split=val for a sweep

A benchmark, not a test: on 2 CPU cores each (set, recipe) takes a minute or two; finished runs are
reused (the `train` command's own check), so a re-run only prints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RECIPES = (("FP CoOp", "glyphs-coop"), ("P4Q W8A8", "glyphs-p4q-w8a8"), ("P4Q W4A4 +text", "glyphs-p4q-w4a4"))
ROOT = Path(__file__).resolve().parents[1]


def run(recipe: str, data: str, seeds: str, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "p4q_export.cli", "train", "--recipe", str(ROOT / "recipes" / f"{recipe}.yaml"),
           "--set", f"data={data}", "--seeds", seeds, "--out", str(out), "--json"]
    for kv in extra:
        cmd += ["--set", kv]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mnist,fashion-mnist")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--out", default="out/glyphs-ladder")
    ap.add_argument("--set", dest="extra", action="append", default=[])
    ap.add_argument("--recipes", default=",".join(r for _, r in RECIPES))
    args = ap.parse_args()
    out = Path(args.out)
    wanted = args.recipes.split(",")
    table: dict = {"seeds": args.seeds, "extra": args.extra, "rows": {}}
    for data in args.data.split(","):
        row = table["rows"].setdefault(data, {})
        for label, recipe in RECIPES:
            if recipe not in wanted:
                continue
            m = run(recipe, data, args.seeds, out / data / recipe, args.extra)
            acc = m["accuracy"]
            row["FP zero-shot"] = acc.get("fp_zeroshot")
            if acc.get("ptq_zeroshot") is not None:
                row[f"{label} PTQ zero-shot"] = acc["ptq_zeroshot"]
            # one seed: the run reports no spread
            row[label] = {"mean": acc["trained"], "std": acc.get("trained_std", 0.0),
                          "per_seed": m.get("trained_per_seed", {str(m["seeds"][0]): acc["trained"]}),
                          "seconds": m["seconds"], "n_eval": m["n_eval"], "eval_split": m["eval_split"]}
            print(f"{data:14s} {label:16s} {m.get('trained_mean_std', pct(acc['trained']))}% (FP 0-shot {pct(acc.get('fp_zeroshot'))}, "
                  f"PTQ 0-shot {pct(acc.get('ptq_zeroshot'))}) {m['seconds']:.0f}s", file=sys.stderr, flush=True)
            out.mkdir(parents=True, exist_ok=True)
            (out / "ladder.json").write_text(json.dumps(table, indent=2))
    lines = ["| data | FP zero-shot | " + " | ".join(label for label, r in RECIPES if r in wanted) + " |",
             "|---|---|" + "---|" * len(wanted)]
    for data, row in table["rows"].items():
        cells = [f"{100 * row[label]['mean']:.1f} ± {100 * row[label]['std']:.1f}" for label, r in RECIPES if r in wanted]
        lines.append(f"| {data} | {pct(row.get('FP zero-shot'))} | " + " | ".join(cells) + " |")
    (out / "ladder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
