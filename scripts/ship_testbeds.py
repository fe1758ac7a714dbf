"""Make the test beds shipped in p4q_export/testbeds/ from pretrained folders.

    p4q-export pretrain --recipe recipes/testbed-pretrain.yaml --out /tmp/pt/testbed
    p4q-export pretrain --recipe recipes/glyphs-pretrain.yaml --out /tmp/pt/glyphs
    python scripts/ship_testbeds.py testbed=/tmp/pt/testbed glyphs=/tmp/pt/glyphs
    python scripts/ship_testbeds.py --check testbed=DIR ...   # does DIR's pretraining equal the shipped one's?

Each bed is stored as safetensors with its token embedding in FP16 (80% of the parameters: a lookup
table) and every other tensor in FP32: 18.4 MB instead of 31 MB, with zero-shot accuracy identical
to the FP32 pretraining on every test split (all-FP16, 14.8 MB, moved one Fashion-MNIST test image of
10,000 on the in-domain bed). With a manifest:
the recipe and its hash, the commands that made it, the pretraining's own manifest (steps, time,
machine, versions, its FP32 file hashes), the zero-shot accuracy of the FP32 weights and of the
shipped ones as the loader sees them (FP16 → FP32 at load), and the shipped files' hashes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from p4q_export.config import PretrainRecipe, load_recipe, recipe_hash
from p4q_export.devices import cpu_info
from p4q_export.manifest import file_sha256, staged_dir, versions, write_json_atomic
from p4q_export.models.registry import CONFIG_FILE, WEIGHTS_FILE
from p4q_export.models.testbed import ALIASES, REPO_ROOT, SHIPPED_ROOT

SHIPPED_WEIGHTS = "open_clip_model.safetensors"  # open_clip's own name: the folder loads as any model folder
HALF = {"token_embedding.weight"}


def zero_shot(model_dir: Path, recipe: PretrainRecipe) -> dict:
    """Top-1 on each evaluation set's full test split, through the CLI as a user would run it."""
    sets = recipe.eval_data.split("+") if recipe.eval_data else recipe.data.split("+")
    out = {}
    for spec in sets:
        cmd = [sys.executable, "-m", "p4q_export.cli", "eval", str(model_dir), "--data", spec, "--json"]
        if recipe.eval_prompts:
            cmd += ["--prompts", recipe.eval_prompts]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        out[spec] = {"top1": result["top1"], "top5": result["top5"], "n": result["n"]}
    return out


def ship(alias: str, source: Path) -> dict:
    recipe_path = ALIASES[alias]
    recipe = load_recipe(recipe_path, None, PretrainRecipe)
    pretrained = json.loads((source / "manifest.json").read_text())
    if pretrained.get("recipe_sha256") != recipe_hash(recipe):
        sys.exit(f"{source} was not pretrained from {recipe_path} as it is now (recipe hash differs)")
    state = torch.load(source / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    half = {k: (v.half() if k in HALF else v).contiguous() for k, v in state.items()}
    out = SHIPPED_ROOT / alias
    with staged_dir(out) as tmp:
        save_file(half, str(tmp / SHIPPED_WEIGHTS))
        shutil.copy(source / CONFIG_FILE, tmp / CONFIG_FILE)
        accuracy = {"fp32": zero_shot(source, recipe), "shipped": zero_shot(tmp, recipe)}
        rel_recipe = recipe_path.relative_to(REPO_ROOT)
        manifest = {
            "kind": "p4q-export/shipped-test-bed",
            "alias": alias,
            "recipe": pretrained["recipe"],
            "recipe_file": str(rel_recipe),
            "recipe_sha256": pretrained["recipe_sha256"],
            "made_by": [f"p4q-export pretrain --recipe {rel_recipe} --out DIR",
                        f"python scripts/ship_testbeds.py {alias}=DIR"],
            "dtype": {"float16": sorted(HALF), "float32": "every other tensor"},
            "pretraining": {k: pretrained.get(k) for k in ("steps", "final_loss", "seconds", "device", "machine",
                                                           "versions", "files")},
            "zero_shot_test_top1": accuracy,
            "shipped_with": versions(),
            "shipped_on": cpu_info(),
            "files": {f: file_sha256(tmp / f) for f in (SHIPPED_WEIGHTS, CONFIG_FILE)},
        }
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest


def check(alias: str, source: Path) -> bool:
    """Whether `source` (a pretraining of the same recipe, e.g. on another machine) holds bit for bit
    the weights the shipped bed was made from."""
    shipped = json.loads((SHIPPED_ROOT / alias / "manifest.json").read_text())
    pretrained = json.loads((source / "manifest.json").read_text())
    want = shipped["pretraining"]["files"][WEIGHTS_FILE]
    here = file_sha256(source / WEIGHTS_FILE)
    if here == want:
        print(f"{alias}: {source} is bit-identical to the pretraining the shipped bed was made from")
        return True
    acc = ", ".join(f"{k} {100 * v['top1']:.2f}% (shipped FP32: {100 * shipped['zero_shot_test_top1']['fp32'][k]['top1']:.2f}%)"
                    for k, v in pretrained["accuracy"].items() if k in shipped["zero_shot_test_top1"]["fp32"])
    print(f"{alias}: {source} differs from the shipped bed's pretraining (weights sha256 {here[:12]} vs {want[:12]}); "
          f"zero-shot here: {acc}")
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beds", nargs="+", metavar="ALIAS=DIR", help=f"ALIAS: {', '.join(ALIASES)}; DIR: its pretraining")
    ap.add_argument("--check", action="store_true", help="compare each DIR with the shipped bed instead of shipping it")
    args = ap.parse_args()
    same = True
    for item in args.beds:
        alias, _, folder = item.partition("=")
        if alias not in ALIASES or not folder:
            sys.exit(f"expected ALIAS=DIR with ALIAS one of {', '.join(ALIASES)}, got {item!r}")
        if args.check:
            same = check(alias, Path(folder)) and same
            continue
        manifest = ship(alias, Path(folder))
        size = (SHIPPED_ROOT / alias / SHIPPED_WEIGHTS).stat().st_size
        acc = manifest["zero_shot_test_top1"]
        line = ", ".join(f"{k} {100 * acc['fp32'][k]['top1']:.2f}% → {100 * acc['shipped'][k]['top1']:.2f}%" for k in acc["fp32"])
        print(f"{alias}: {size / 1e6:.1f} MB; zero-shot FP32 → shipped: {line}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
