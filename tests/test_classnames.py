"""One class-name resolver for every command: classnames.txt, then ImageNet names for WordNet-id
folders, then folder names. The end-to-end test shows train, eval, export and validate agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from p4q_export.data import load_dataset
from p4q_export.data.classnames import (
    SOURCE_FILE,
    SOURCE_FOLDERS,
    SOURCE_IMAGENET,
    resolve_classnames,
)

REAL = ["n01440764", "n01443537", "n01484850"]  # the first three ImageNet-1k wnids
REAL_NAMES = ["tench", "goldfish", "great white shark"]


def test_real_wnids_get_imagenet_names():
    r = resolve_classnames(REAL)
    assert r.names == REAL_NAMES and r.source == SOURCE_IMAGENET


def test_any_subset_of_wnids_resolves():
    # not the first ones, not contiguous: names come by id, not by position
    r = resolve_classnames(["n02123045", "n04592741", "n15075141"])
    assert r.names == ["tabby cat", "airplane wing", "toilet paper"] and r.source == SOURCE_IMAGENET


def test_classnames_txt_wins(tmp_path):
    (tmp_path / "classnames.txt").write_text("n01440764\tTinca tinca\nn01443537 gold fish\nn01484850\n")
    r = resolve_classnames(REAL, tmp_path)
    assert r.names == ["Tinca tinca", "gold fish", "n01484850"] and r.source == SOURCE_FILE


def test_classnames_txt_must_name_exactly_the_class_folders(tmp_path):
    from p4q_export.errors import UserError

    (tmp_path / "classnames.txt").write_text("n01443537\tgold fish\n")
    with pytest.raises(UserError, match=r"leaves out 2 class folder\(s\) \(n01440764, n01484850\)"):
        resolve_classnames(REAL, tmp_path)
    (tmp_path / "classnames.txt").write_text("".join(f"{k}\n" for k in REAL) + "n09999999 ghost\n")
    with pytest.raises(UserError, match=r"names 1 folder\(s\) that do not exist \(n09999999\)"):
        resolve_classnames(REAL, tmp_path)
    (tmp_path / "classnames.txt").write_text("")
    with pytest.raises(UserError, match="leaves out 3"):
        resolve_classnames(REAL, tmp_path)


def test_mix_of_wnid_and_other_folders_uses_folder_names():
    r = resolve_classnames(["n01440764", "sea_bass"])
    assert r.names == ["n01440764", "sea bass"] and r.source == SOURCE_FOLDERS


def test_unknown_wnid_shaped_ids_use_folder_names():
    r = resolve_classnames(["n01440764", "n99999999"])
    assert r.names == ["n01440764", "n99999999"] and r.source == SOURCE_FOLDERS
    assert resolve_classnames(["n0144076", "N01440764"]).source == SOURCE_FOLDERS  # not wnid-shaped


def _jpeg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert("RGB").save(path, quality=90)


def test_1000_wnid_folders_equal_open_clip_imagenet_names(tmp_path):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from timm.data import ImageNetInfo

    from p4q_export.config import TrainRecipe
    from p4q_export.p4q.recipe import recipe_classnames

    pixel = np.full((4, 4), 128, dtype=np.uint8)
    for wnid in ImageNetInfo().label_names():
        _jpeg(tmp_path / "val" / wnid / "0.jpg", pixel)
    ds = load_dataset(f"imagefolder:{tmp_path}", "test")
    assert ds.classnames == list(IMAGENET_CLASSNAMES)
    assert ds.meta["classnames_source"] == SOURCE_IMAGENET
    # the recipe key the trainer still accepts now agrees with the dataset
    recipe = TrainRecipe(data=f"imagefolder:{tmp_path}", classnames="imagenet")
    assert recipe_classnames(recipe, ds) == ds.classnames


def test_loaders_record_the_source_and_keep_imagenet_templates(tmp_path):
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from p4q_export.data import templates_for

    pixel = np.full((4, 4), 200, dtype=np.uint8)
    for wnid in REAL:
        _jpeg(tmp_path / "wnids" / "val" / wnid / "0.jpg", pixel)
        _jpeg(tmp_path / "coop" / "images" / f"{wnid}.jpg", pixel)
    for name in ("cat", "hot_dog"):
        _jpeg(tmp_path / "plain" / name / "0.jpg", pixel)
    ds = load_dataset(f"imagefolder:{tmp_path / 'wnids'}", "test")
    assert ds.classnames == REAL_NAMES and ds.subset([0]).meta["classnames_source"] == SOURCE_IMAGENET
    assert len(templates_for(ds.name)) == len(OPENAI_IMAGENET_TEMPLATES)
    plain = load_dataset(f"imagefolder:{tmp_path / 'plain'}", "test")
    assert plain.classnames == ["cat", "hot dog"] and plain.meta["classnames_source"] == SOURCE_FOLDERS
    # CoOp split files carry names; WordNet ids there become ImageNet names too
    rows = [[f"images/{w}.jpg", i, w] for i, w in enumerate(REAL)]
    (tmp_path / "coop" / "split_zhou_x.json").write_text(json.dumps({"train": rows, "val": [], "test": rows}))
    coop = load_dataset(f"coop:{tmp_path / 'coop'}", "test")
    assert coop.classnames == REAL_NAMES and coop.meta["classnames_source"] == SOURCE_IMAGENET


# --- end to end: every command resolves the same ImageNet names for a WordNet-id folder ----------

FASHION_CLASSES = (1, 7, 8)  # trouser, sneaker, bag: real images the test bed has seen the like of


@pytest.fixture(scope="module")
def wnid_folder(tmp_path_factory) -> Path:
    """An ImageNet-format folder (train/ + val/, WordNet-id class folders) of real JPEGs."""
    fashion = load_dataset("fashion-mnist", "test")
    root = tmp_path_factory.mktemp("imagenet-like")
    for wnid, c in zip(REAL, FASHION_CLASSES):
        idx = np.flatnonzero(fashion.labels == c)
        for k, i in enumerate(idx[:3]):
            _jpeg(root / "train" / wnid / f"{k}.JPEG", fashion.arrays[i])
        for k, i in enumerate(idx[3:7]):
            _jpeg(root / "val" / wnid / f"{k}.JPEG", fashion.arrays[i])
    return root


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _bundle_names(bundle: Path) -> list[str]:
    manifest = json.loads((bundle / "deploy" / "manifest.json").read_text())
    assert (bundle / "deploy" / "classnames.txt").read_text().splitlines() == manifest["classnames"]
    return manifest["classnames"]


@pytest.mark.slow
@pytest.mark.full
def test_train_eval_export_validate_agree_on_imagenet_names(cli, testbed_model, wnid_folder, tmp_path):
    import torch

    data = f"imagefolder:{wnid_folder}"
    run, bundle, zs_bundle = tmp_path / "run", tmp_path / "bundle", tmp_path / "zs-bundle"
    env = {"OMP_NUM_THREADS": "2"}
    # tiny P4Q run: 2 shots of 3 classes, 1 epoch, the 6 training images calibrate
    train = _json(cli("train", "--recipe", "recipes/testbed-p4q-w8a8.yaml", "--out", str(run), "--shots", "2",
                      "--set", f"model={testbed_model}", "--set", f"data={data}", "--set", "epochs=1",
                      "--set", "calib_images=6", "--set", "threads=2", "--json", env=env))
    assert train["n_eval"] == 12
    run_manifest = json.loads((run / "run.json").read_text())
    assert run_manifest["classnames"] == REAL_NAMES and run_manifest["classnames_source"] == SOURCE_IMAGENET
    assert torch.load(run / "checkpoint.pt", weights_only=True)["classnames"] == REAL_NAMES
    _json(cli("export", str(run), "--out", str(bundle), "--json", env=env))
    assert _bundle_names(bundle) == REAL_NAMES
    # validate refuses a dataset whose class names differ from the bundle's: passing is the check
    assert _json(cli("validate", str(bundle), "--data", data, "--json", env=env))["passed"]
    assert _json(cli("eval", str(run), "--data", data, "--json", env=env))["n"] == 12
    # a bare MODEL: the zero-shot head is built from the same resolved names
    assert _json(cli("eval", str(testbed_model), "--data", data, "--json", env=env))["n"] == 12
    _json(cli("export", str(testbed_model), "--data", data, "--calib-images", "6", "--out", str(zs_bundle),
              "--json", env=env))
    assert _bundle_names(zs_bundle) == REAL_NAMES
