"""How well each per-layer measure of `inspect` predicts the top-1 a layer wins back on the test split.

    p4q-export inspect testbed --data fashion-mnist --quant paper --bits 4/4 --quantize-text --out heldout.json
    p4q-export inspect testbed --data fashion-mnist --quant paper --bits 4/4 --quantize-text --select-on test --limit 0 --out test.json
    python scripts/sensitivity_measures.py heldout.json test.json

Prints the Spearman rank correlation, over the layers, of each held-out measure (KL cut, top-1
gain, SQNR) with the keep-FP top-1 gain measured on the whole test split, and how many of each
measure's top 5 layers are among the test split's top 5.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scipy.stats import spearmanr


def main(heldout_path: str, test_path: str) -> None:
    heldout = {r["name"]: r for r in json.loads(Path(heldout_path).read_text())["layers"]}
    test = {r["name"]: r["gain_keep_fp"] for r in json.loads(Path(test_path).read_text())["layers"] if r.get("gain_keep_fp") is not None}
    names = [n for n in test if heldout.get(n, {}).get("gain_keep_fp") is not None]
    truth = [test[n] for n in names]
    top_truth = set(sorted(names, key=lambda n: -test[n])[:5])
    measures = {"KL cut (held out)": lambda r: r["kl_reduction"], "top-1 gain (held out)": lambda r: r["gain_keep_fp"],
                "-SQNR": lambda r: -r["sqnr_db"]}
    print(f"{len(names)} layers; test-split keep-FP gains {min(truth) * 100:+.2f}..{max(truth) * 100:+.2f} pt")
    for label, f in measures.items():
        values = [f(heldout[n]) for n in names]
        rho = spearmanr(values, truth).statistic
        top = set(sorted(names, key=lambda n: -f(heldout[n]))[:5])
        print(f"{label:<24} Spearman {rho:+.2f}   top-5 overlap {len(top & top_truth)}/5")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
