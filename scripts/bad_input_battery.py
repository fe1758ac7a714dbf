"""The bad-input battery: ~100 wrong inputs across every command, run as a user runs them (the real
console script, a subprocess each, real files). The promise for each: exit 2, exactly one line on
stderr (`error: ...`), nothing on stdout, nothing written and nothing lost.

    make battery                      # or: .venv/bin/python scripts/bad_input_battery.py [--jobs 2]

It builds its own inputs first (a bundle and a training run of the test bed's architecture with
random weights, image folders, damaged files), then prints one row per case and the share that kept
the promise. Exit 1 if any case did not."""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "p4q_export.cli"]
# progress stays on, as for a user: a refusal must come before any progress line
ENV = {k: v for k, v in os.environ.items() if k != "P4Q_NO_PROGRESS"} | {"NO_COLOR": "1"}
TINY_TRAIN = ["--set", "model=p4q-testbed", "--set", "data=digits", "--set", "calib_images=8", "--set", "epochs=1",
              "--set", "shots=1", "--device", "cpu", "--workers", "0"]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], check=False, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=900)


def bomb_png(path: Path, side: int = 20000) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def image_folder(root: Path, arrays, labels, classes: dict[str, int], splits=("train", "val"), per_class: int = 3) -> Path:
    for split in splits:
        for name, code in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(np.flatnonzero(labels == code)[:per_class]):
                Image.fromarray(arrays[i]).save(root / split / name / f"{k}.png")
    return root


def build_inputs(w: Path) -> dict[str, Path]:
    """Everything the cases point at, made once; the battery checks none of it changes."""
    sys.path.insert(0, str(REPO))
    from p4q_export.data import load_dataset

    fashion = load_dataset("fashion-mnist", "test")
    classes = {"bag": 8, "sneaker": 7, "trouser": 1}
    p: dict[str, Path] = {}
    p["bundle"] = w / "bundle"
    proc = cli("export", "p4q-testbed", "--data", "fashion-mnist", "--calib-images", "16", "--out", str(p["bundle"]))
    assert proc.returncode == 0, proc.stderr
    p["run"] = w / "run"
    proc = cli("train", *TINY_TRAIN, "--out", str(p["run"]))
    assert proc.returncode == 0, proc.stderr
    p["edited"] = w / "edited-bundle"
    shutil.copytree(p["bundle"], p["edited"])
    m = json.loads((p["edited"] / "deploy" / "manifest.json").read_text())
    m["classnames"][0] = "renamed"
    (p["edited"] / "deploy" / "manifest.json").write_text(json.dumps(m))
    p["tampered"] = w / "tampered-bundle"
    shutil.copytree(p["bundle"], p["tampered"])
    with open(p["tampered"] / "validation" / "model.onnx", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")
    p["folder"] = image_folder(w / "folder", fashion.arrays, fashion.labels, classes)
    p["textpng"] = image_folder(w / "textpng", fashion.arrays, fashion.labels, classes)
    (p["textpng"] / "val" / "bag" / "notes.png").write_text("not a picture")
    # the bundle's own classes in its order (classnames.txt names c0..c9), one text file named .png among them
    p["fashiontext"] = image_folder(w / "fashiontext", fashion.arrays, fashion.labels,
                                    {f"c{i}": i for i in range(len(fashion.classnames))}, per_class=1)
    (p["fashiontext"] / "classnames.txt").write_text("".join(f"c{i}\t{n}\n" for i, n in enumerate(fashion.classnames)))
    (p["fashiontext"] / "val" / "c8" / "notes.png").write_text("not a picture")
    p["trainbad"] = image_folder(w / "trainbad", fashion.arrays, fashion.labels, classes)
    (p["trainbad"] / "train" / "bag" / "notes.png").write_text("not a picture")
    p["bombfolder"] = image_folder(w / "bombfolder", fashion.arrays, fashion.labels, classes)
    bomb_png(p["bombfolder"] / "val" / "sneaker" / "huge.png")
    p["badnames"] = image_folder(w / "badnames", fashion.arrays, fashion.labels, classes)
    (p["badnames"] / "classnames.txt").write_text("bag\tHandbag\nsandal\tSandal\n")
    p["splitmismatch"] = image_folder(w / "splitmismatch", fashion.arrays, fashion.labels, classes, splits=("train",))
    image_folder(p["splitmismatch"], fashion.arrays, fashion.labels, {"bag": 8, "trouser": 1}, splits=("val",))
    p["noclasses"] = w / "noclasses"
    (p["noclasses"] / "val").mkdir(parents=True)
    p["noimages"] = w / "noimages"
    (p["noimages"] / "val" / "bag").mkdir(parents=True)
    (p["noimages"] / "val" / "bag" / "readme.txt").write_text("no images here")
    p["onlytrain"] = image_folder(w / "onlytrain", fashion.arrays, fashion.labels, classes, splits=("train",))
    p["coop_nosplit"] = w / "coop-nosplit"
    p["coop_nosplit"].mkdir()
    p["coop_badjson"] = w / "coop-badjson"
    p["coop_badjson"].mkdir()
    (p["coop_badjson"] / "split_zhou_x.json").write_text("{not json")
    p["png"] = w / "shoe.png"
    Image.fromarray(fashion.arrays[0]).save(p["png"])
    p["textpng_file"] = w / "notes.png"
    p["textpng_file"].write_text("not a picture")
    p["bomb"] = w / "huge.png"
    bomb_png(p["bomb"])
    p["truncated_png"] = w / "truncated.png"
    p["truncated_png"].write_bytes(p["png"].read_bytes()[:60])
    p["notes"] = w / "notes.txt"
    p["notes"].write_text("my notes")
    p["others"] = w / "others"
    p["others"].mkdir()
    (p["others"] / "thesis.tex").write_text("years of work")
    p["empty_recipe"] = w / "empty.yaml"
    p["empty_recipe"].write_text("# to do\n")
    p["list_recipe"] = w / "list.yaml"
    p["list_recipe"].write_text("- epochs: 1\n")
    p["bad_yaml"] = w / "bad.yaml"
    p["bad_yaml"].write_text("epochs: [1,\n")
    p["truncated_ckpt"] = w / "truncated.pt"
    p["truncated_ckpt"].write_bytes(b"PK\x03\x04 not really a zip")
    p["text_ckpt"] = w / "weights.pt"
    p["text_ckpt"].write_text("weights")
    p["noweights"] = w / "noweights"
    p["noweights"].mkdir()
    (p["noweights"] / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 64}}))
    return p


def cases(p: dict[str, Path], s: Path) -> list[tuple[str, list[str]]]:
    """(name, argv); `s` is a scratch folder for OUT paths that must stay empty."""
    b, r = str(p["bundle"]), str(p["run"])
    m = "p4q-testbed"
    img = lambda k: f"imagefolder:{p[k]}"
    return [
        # global
        ("unknown command", ["nosuch"]),
        ("pixel limit negative", ["--max-image-pixels", "-1", "predict", b, str(p["png"])]),
        ("pixel limit not a number", ["--max-image-pixels", "lots", "predict", b, str(p["png"])]),
        # pretrain
        ("pretrain missing recipe", ["pretrain", "--recipe", str(s / "nope.yaml"), "--out", str(s / "m")]),
        ("pretrain invalid YAML", ["pretrain", "--recipe", str(p["bad_yaml"]), "--out", str(s / "m")]),
        ("pretrain recipe is a list", ["pretrain", "--recipe", str(p["list_recipe"]), "--out", str(s / "m")]),
        ("pretrain empty recipe", ["pretrain", "--recipe", str(p["empty_recipe"]), "--out", str(s / "m")]),
        ("pretrain unknown key", ["pretrain", "--recipe", "recipes/testbed-pretrain.yaml", "--set", "epochz=1", "--out", str(s / "m")]),
        ("pretrain wrong type", ["pretrain", "--recipe", "recipes/testbed-pretrain.yaml", "--set", "epochs=many", "--out", str(s / "m")]),
        ("pretrain --out a file", ["pretrain", "--recipe", "recipes/testbed-pretrain.yaml", "--out", str(p["notes"])]),
        ("pretrain --out others' folder", ["pretrain", "--recipe", "recipes/testbed-pretrain.yaml", "--out", str(p["others"])]),
        ("pretrain --out a run", ["pretrain", "--recipe", "recipes/testbed-pretrain.yaml", "--out", r]),
        # eval: models
        ("eval missing path", ["eval", str(s / "nope"), "--data", "digits"]),
        ("eval unknown model", ["eval", "ViT-Q-99", "--data", "digits"]),
        ("eval model without --data", ["eval", m]),
        ("eval ARCH:missing.pt", ["eval", f"{m}:{s / 'nope.pt'}", "--data", "digits"]),
        ("eval ARCH:truncated.pt", ["eval", f"{m}:{p['truncated_ckpt']}", "--data", "digits"]),
        ("eval ARCH:text file", ["eval", f"{m}:{p['text_ckpt']}", "--data", "digits"]),
        ("eval model folder without weights", ["eval", str(p["noweights"]), "--data", "digits"]),
        ("eval a file as MODEL", ["eval", str(p["notes"]), "--data", "digits"]),
        ("eval --quant unknown", ["eval", m, "--data", "digits", "--quant", "fp4"]),
        ("eval --bits 9/9", ["eval", m, "--data", "digits", "--quant", "trt", "--bits", "9/9"]),
        ("eval --bits abc", ["eval", m, "--data", "digits", "--quant", "trt", "--bits", "abc"]),
        ("eval --bits without --quant", ["eval", m, "--data", "digits", "--bits", "8/8"]),
        ("eval --keep-fp without --quant", ["eval", m, "--data", "digits", "--keep-fp", "visual.*"]),
        ("eval bad observer", ["eval", m, "--data", "digits", "--quant", "trt", "--act-observer", "median"]),
        ("eval --backend ort on a model", ["eval", m, "--data", "digits", "--backend", "ort"]),
        ("eval --prompts unknown", ["eval", m, "--data", "digits", "--prompts", "poems"]),
        ("eval --limit negative", ["eval", m, "--data", "digits", "--limit", "-1"]),
        ("eval --batch-size 0", ["eval", m, "--data", "digits", "--batch-size", "0"]),
        ("eval --workers -1", ["eval", m, "--data", "digits", "--workers", "-1"]),
        ("eval --device tpu", ["eval", m, "--data", "digits", "--device", "tpu"]),
        ("eval --calib-images 0", ["eval", m, "--data", "digits", "--quant", "trt", "--calib-images", "0"]),
        # eval: data
        ("eval unknown data spec", ["eval", m, "--data", "cifar-77"]),
        ("eval data dir missing", ["eval", m, "--data", f"imagefolder:{s / 'nope'}"]),
        ("eval imagefolder without DIR", ["eval", m, "--data", "imagefolder"]),
        ("eval digits with a DIR", ["eval", m, "--data", f"digits:{p['folder']}"]),
        ("eval no class folders", ["eval", m, "--data", img("noclasses")]),
        ("eval no images", ["eval", m, "--data", img("noimages")]),
        ("eval text as PNG (main process)", ["eval", m, "--data", img("textpng"), "--workers", "0"]),
        ("eval text as PNG (workers)", ["eval", m, "--data", img("textpng"), "--workers", "2"]),
        ("eval decompression bomb (workers)", ["eval", m, "--data", img("bombfolder"), "--workers", "2"]),
        ("eval classnames.txt mismatch", ["eval", m, "--data", img("badnames")]),
        ("eval train/val class mismatch", ["eval", m, "--data", img("splitmismatch")]),
        ("eval train/ only", ["eval", m, "--data", img("onlytrain")]),
        ("eval coop without split file", ["eval", m, "--data", f"coop:{p['coop_nosplit']}"]),
        ("eval coop bad JSON", ["eval", m, "--data", f"coop:{p['coop_badjson']}"]),
        # eval: runs and bundles
        ("eval run --keep-fp", ["eval", r, "--keep-fp", "visual.*"]),
        ("eval run --amp", ["eval", r, "--amp"]),
        ("eval bundle --amp", ["eval", b, "--data", "fashion-mnist", "--amp"]),
        ("eval edited manifest", ["eval", str(p["edited"]), "--data", "fashion-mnist", "--limit", "10"]),
        ("eval tampered graph", ["eval", str(p["tampered"]), "--data", "fashion-mnist", "--limit", "10"]),
        # train
        ("train --seeds 1,,2", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--seeds", "1,,2"]),
        ("train --seeds a,b", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--seeds", "a,b"]),
        ("train --seeds 1,1", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--seeds", "1,1"]),
        ("train --set without =", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--set", "epochs"]),
        ("train unknown key", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--set", "epochz=1"]),
        ("train bits 9/9", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--set", "bits=9/9"]),
        ("train too many shots", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--set", "shots=1000"]),
        ("train --method foo", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--method", "foo"]),
        ("train empty recipe", ["train", "--recipe", str(p["empty_recipe"]), "--out", str(s / "t")]),
        ("train missing model", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--set", f"model={s / 'nope'}"]),
        ("train bad data", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--set", "data=cifar-77"]),
        ("train classnames mismatch", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--set", f"data={img('badnames')}"]),
        ("train damaged image in train/", ["train", *TINY_TRAIN, "--out", str(s / "t"), "--set", f"data={img('trainbad')}",
                                            "--set", "shots=2"]),
        ("train --out a file", ["train", *TINY_TRAIN, "--out", str(p["notes"])]),
        ("train --out others' folder", ["train", *TINY_TRAIN, "--out", str(p["others"])]),
        ("train --out others' folder --force", ["train", *TINY_TRAIN, "--out", str(p["others"]), "--force"]),
        ("train --out a bundle --force", ["train", *TINY_TRAIN, "--out", b, "--force"]),
        ("train run of another recipe", ["train", *TINY_TRAIN, "--out", r, "--set", "shots=2"]),
        ("train --device cuda without GPU", ["train", *TINY_TRAIN[:-4], "--out", str(s / "t"), "--device", "cuda"]),
        # export
        ("export missing source", ["export", str(s / "nope"), "--out", str(s / "e")]),
        ("export onto its run", ["export", r, "--out", r, "--force"]),
        ("export inside its run", ["export", r, "--out", f"{r}/bundle"]),
        ("export --out a file", ["export", r, "--out", str(p["notes"]), "--force"]),
        ("export --out others' folder --force", ["export", r, "--out", str(p["others"]), "--force"]),
        ("export --out existing bundle", ["export", r, "--out", b]),
        ("export bare model without --data", ["export", m, "--out", str(s / "e")]),
        ("export --profile foo", ["export", r, "--out", str(s / "e"), "--profile", "foo"]),
        ("export --precision foo", ["export", r, "--out", str(s / "e"), "--precision", "int3"]),
        ("export --calib-images 0", ["export", m, "--data", "digits", "--out", str(s / "e"), "--calib-images", "0"]),
        # inspect
        ("inspect missing target", ["inspect", str(s / "nope"), "--data", "digits", "--quant", "trt"]),
        ("inspect --quant foo", ["inspect", m, "--data", "digits", "--quant", "foo"]),
        ("inspect bad data", ["inspect", m, "--data", "cifar-77"]),
        ("inspect --out a folder", ["inspect", m, "--data", "digits", "--quant", "trt", "--out", str(p["others"])]),
        ("inspect --out a file's folder", ["inspect", m, "--data", "digits", "--quant", "trt", "--out", f"{p['notes']}/r.json"]),
        # validate
        ("validate not a bundle", ["validate", str(p["others"]), "--data", "fashion-mnist"]),
        ("validate a run", ["validate", r, "--data", "fashion-mnist"]),
        ("validate --backend foo", ["validate", b, "--backend", "foo"]),
        ("validate --ort-mode foo", ["validate", b, "--ort-mode", "foo"]),
        ("validate --cosine-min 2", ["validate", b, "--cosine-min", "2"]),
        ("validate --precision foo", ["validate", b, "--precision", "int3"]),
        ("validate bad data", ["validate", b, "--data", "cifar-77"]),
        ("validate edited manifest", ["validate", str(p["edited"]), "--data", "fashion-mnist"]),
        ("validate tampered graph", ["validate", str(p["tampered"]), "--data", "fashion-mnist"]),
        ("validate text as PNG", ["validate", b, "--data", img("fashiontext"), "--workers", "2"]),
        ("validate other classes", ["validate", b, "--data", img("folder")]),
        # build-engine
        ("build-engine not a bundle", ["build-engine", str(p["others"]), "--int8"]),
        ("build-engine edited manifest", ["build-engine", str(p["edited"]), "--int8"]),
        # bench
        ("bench not a bundle", ["bench", str(p["others"])]),
        ("bench --batch 0", ["bench", b, "--batch", "0"]),
        ("bench --batch 1,,8", ["bench", b, "--batch", "1,,8"]),
        ("bench --batch 8,8", ["bench", b, "--batch", "8,8"]),
        ("bench --backends foo", ["bench", b, "--backends", "onnx/int8"]),
        ("bench --threads -1", ["bench", b, "--threads", "-1"]),
        ("bench --device foo", ["bench", b, "--device", "tpu"]),
        ("bench --out a file", ["bench", b, "--out", str(p["notes"]), "--batch", "1", "--iterations", "1"]),
        ("bench edited manifest", ["bench", str(p["edited"]), "--batch", "1", "--iterations", "1"]),
        # predict
        ("predict no images", ["predict", b]),
        ("predict missing image", ["predict", b, str(s / "nope.jpg")]),
        ("predict text as PNG", ["predict", b, str(p["textpng_file"])]),
        ("predict truncated PNG", ["predict", b, str(p["truncated_png"])]),
        ("predict a folder", ["predict", b, str(p["others"])]),
        ("predict /dev/null", ["predict", b, "/dev/null"]),
        ("predict decompression bomb", ["predict", b, str(p["bomb"])]),
        ("predict under a low pixel limit", ["--max-image-pixels", "100", "predict", b, str(p["png"])]),
        ("predict --top-k 0", ["predict", b, str(p["png"]), "--top-k", "0"]),
        ("predict --backend foo", ["predict", b, str(p["png"]), "--backend", "foo"]),
        ("predict edited manifest", ["predict", str(p["edited"]), str(p["png"])]),
        ("predict tampered graph", ["predict", str(p["tampered"]), str(p["png"])]),
        ("predict a run", ["predict", r, str(p["png"])]),
    ]


def tree(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def check(name: str, argv: list[str], scratch: Path) -> dict:
    t0 = time.monotonic()
    proc = cli(*argv)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    problems = []
    if proc.returncode != 2:
        problems.append(f"exit {proc.returncode}")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"{len(lines)} stderr lines")
    if proc.stdout.strip():
        problems.append("stdout not empty")
    if any(scratch.iterdir()):
        problems.append(f"wrote {sorted(p.name for p in scratch.iterdir())}")
    return {"case": name, "ok": not problems, "problems": problems, "seconds": round(time.monotonic() - t0, 1),
            "line": lines[-1][:160] if lines else "", "stderr": proc.stderr[-1500:] if problems else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="p4q-battery-") as tmp:
        w = Path(tmp)
        started = time.monotonic()
        inputs = build_inputs(w / "inputs")
        before = tree(w / "inputs")
        all_cases = cases(inputs, w / "scratch")
        print(f"{len(all_cases)} cases (inputs built in {time.monotonic() - started:.0f}s)", flush=True)
        results = []

        def one(i_case):
            i, (name, argv) = i_case
            scratch = w / "scratch"
            own = w / f"scratch-{i}"
            own.mkdir()
            argv = [a.replace(str(scratch), str(own)) for a in argv]
            return check(name, argv, own)

        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for res in pool.map(one, enumerate(all_cases)):
                results.append(res)
                mark = "ok  " if res["ok"] else "FAIL"
                print(f"{mark} {res['case']:<40} {res['seconds']:>5}s  {res['line'] if res['ok'] else '; '.join(res['problems'])}",
                      flush=True)
                if not res["ok"]:
                    print("     " + res["stderr"].replace("\n", "\n     "), flush=True)
        after = tree(w / "inputs")
        lost = {k for k in before.keys() | after.keys() if after.get(k) != before.get(k)}
        ok = sum(r["ok"] for r in results)
        print(f"\n{ok}/{len(results)} kept the promise ({100 * ok / len(results):.0f}%): exit 2, one line, nothing on stdout, "
              f"nothing written; inputs changed, added or lost: {sorted(lost) or 'none'}; {time.monotonic() - started:.0f}s")
        if args.json:
            args.json.write_text(json.dumps({"results": results, "inputs_changed": sorted(lost)}, indent=1))
        return 0 if ok == len(results) and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
