"""Datasets, samplers and preprocessing on the real offline data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from p4q_export.data import (
    TensorPreprocess,
    calibration_indices,
    few_shot_indices,
    load_dataset,
    parse_spec,
    preprocess_dataset,
    write_calibration_list,
)
from p4q_export.data.datasets import FASHION_MNIST_CLASSES
from p4q_export.errors import UserError


@pytest.fixture(scope="module")
def fashion_train():
    return load_dataset("fashion-mnist", "train")


def test_fashion_mnist_shapes_labels_classnames(fashion_train):
    test = load_dataset("fashion-mnist", "test")
    assert fashion_train.arrays.shape == (60000, 28, 28) and len(test) == 10000
    assert fashion_train.arrays.dtype == np.uint8
    assert fashion_train.classnames == FASHION_MNIST_CLASSES
    # Fashion-MNIST is exactly balanced: 6,000 / 1,000 per class
    assert np.bincount(fashion_train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10


@pytest.mark.parametrize("spec,n_total", [("mnist", 5000), ("digits", 1797)])
def test_digit_datasets_split_disjoint_and_complete(spec, n_total):
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    assert len(train) + len(test) == n_total
    assert not set(train.ids) & set(test.ids)
    assert train.classnames[3] == "three"
    assert set(np.unique(test.labels)) == set(range(10))
    assert 0.18 < len(test) / n_total < 0.22


def test_few_shot_is_deterministic_balanced_and_seed_dependent(fashion_train):
    a = few_shot_indices(fashion_train.labels, 16, seed=1)
    b = few_shot_indices(fashion_train.labels, 16, seed=1)
    c = few_shot_indices(fashion_train.labels, 16, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(fashion_train.labels[a]).tolist() == [16] * 10
    assert len(np.unique(a)) == len(a)


def test_few_shot_never_touches_the_test_split(fashion_train):
    test = load_dataset("fashion-mnist", "test")
    shots = fashion_train.subset(few_shot_indices(fashion_train.labels, 16, seed=3))
    assert not set(shots.ids) & set(test.ids)
    # and no pixel-identical duplicate of a test image sneaks in through the ids
    test_hashes = {test.content_hash(i) for i in range(0, len(test), 7)}
    assert not {shots.content_hash(i) for i in range(len(shots))} & test_hashes


def test_few_shot_rejects_more_shots_than_images():
    with pytest.raises(UserError, match="fewer than --shots"):
        few_shot_indices(np.array([0, 0, 1]), 2, seed=0)


def test_calibration_list_is_reproducible(tmp_path, fashion_train):
    idx = calibration_indices(len(fashion_train), 1280, seed=0)
    assert len(idx) == 1280 and np.array_equal(idx, calibration_indices(len(fashion_train), 1280, seed=0))
    p1 = write_calibration_list(fashion_train, idx, tmp_path / "a", seed=0)
    p2 = write_calibration_list(fashion_train, idx, tmp_path / "b", seed=0)
    assert p1.read_text() == p2.read_text()
    header, *ids = p1.read_text().splitlines()
    assert "sha256=" in header and len(ids) == 1280 and ids[0] == fashion_train.ids[idx[0]]
    other = write_calibration_list(fashion_train, calibration_indices(len(fashion_train), 1280, seed=1), tmp_path / "c", seed=1)
    assert other.read_text().splitlines()[0].split("sha256=")[1] != header.split("sha256=")[1]


def test_preprocess_grayscale_becomes_rgb_and_normalized(fashion_train):
    prep = TensorPreprocess(image_size=32)
    x = preprocess_dataset(fashion_train.subset(range(64)), prep)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0] * prep.std[0] + prep.mean[0], x[:, 1] * prep.std[1] + prep.mean[1]) or torch.allclose(
        x[:, 0] * prep.std[0] + prep.mean[0], x[:, 1] * prep.std[1] + prep.mean[1], atol=1e-6
    )
    black = (0 - prep.mean[0]) / prep.std[0]
    assert x[:, 0].min().item() == pytest.approx(black, abs=1e-3)


def _write_imagefolder(root, ds, per_class=3):
    for c, name in enumerate(ds.classnames[:3]):
        folder = root / name.replace(" ", "_")
        folder.mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(ds.labels == c)[:per_class]):
            Image.fromarray(ds.arrays[i]).save(folder / f"{k}.png")


def test_imagefolder_and_preprocess_match_in_memory_path(tmp_path, fashion_train):
    _write_imagefolder(tmp_path, fashion_train)
    (tmp_path / "classnames.txt").write_text("t-shirt\tT-shirt or top\npullover\ntrouser\n")
    ds = load_dataset(f"imagefolder:{tmp_path}", "test")
    # class order is the sorted folder order (as torchvision's ImageFolder); names from classnames.txt
    assert ds.classnames == ["pullover", "T-shirt or top", "trouser"]
    assert np.bincount(ds.labels).tolist() == [3, 3, 3]
    prep = TensorPreprocess(image_size=32)
    from_files = preprocess_dataset(ds, prep)
    first = np.flatnonzero(fashion_train.labels == 0)[:1]
    from_memory = preprocess_dataset(fashion_train.subset(first), prep)
    first_tshirt_file = int(np.flatnonzero(ds.labels == 1)[0])
    assert ds.ids[first_tshirt_file] == "t-shirt/0.png"
    assert torch.allclose(from_files[first_tshirt_file], from_memory[0], atol=1e-6)


def test_coop_split_file(tmp_path, fashion_train):
    _write_imagefolder(tmp_path / "images", fashion_train)
    rows = [[f"{n.replace(' ', '_')}/{k}.png", c, n] for c, n in enumerate(fashion_train.classnames[:3]) for k in range(3)]
    (tmp_path / "split_zhou_Toy.json").write_text(json.dumps({"train": rows[:6], "val": [], "test": rows[6:]}))
    test = load_dataset(f"coop:{tmp_path}", "test")
    assert len(test) == 3 and test.classnames == ["t-shirt", "trouser", "pullover"]  # from the split file
    assert test.labels.tolist() == [2, 2, 2]
    assert test.pil(0).mode == "RGB"


@pytest.mark.parametrize(
    "spec,message",
    [("cifar-10", "unknown data spec"), ("imagefolder", "needs a directory"), ("imagefolder:/no/such/dir", "not found"), ("mnist:/tmp", "takes no directory")],
)
def test_bad_specs_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        parse_spec(spec)


def test_not_an_image_is_a_user_error(tmp_path):
    from p4q_export.data.datasets import open_image

    bad = tmp_path / "x.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(UserError, match="not a readable image"):
        open_image(bad)
    with pytest.raises(UserError, match="not an image file: /dev/null"):
        open_image("/dev/null")
    with pytest.raises(UserError, match="not an image file"):
        open_image(tmp_path)
    with pytest.raises(UserError, match="image not found"):
        open_image(tmp_path / "missing.png")


def test_imagefolder_never_serves_the_same_images_as_both_splits(tmp_path, fashion_train):
    """A flat folder of class folders is a test split only; train/ needs val/ (or test/) beside it."""
    _write_imagefolder(tmp_path / "flat", fashion_train)
    assert len(load_dataset(f"imagefolder:{tmp_path / 'flat'}", "test")) == 9
    with pytest.raises(UserError, match="no train/ subfolder"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}", "train")
    _write_imagefolder(tmp_path / "split" / "train", fashion_train)
    with pytest.raises(UserError, match="no val/ or test/"):
        load_dataset(f"imagefolder:{tmp_path / 'split'}", "test")
    _write_imagefolder(tmp_path / "split" / "val", fashion_train, per_class=2)
    train = load_dataset(f"imagefolder:{tmp_path / 'split'}", "train")
    test = load_dataset(f"imagefolder:{tmp_path / 'split'}", "test")
    assert (len(train), len(test)) == (9, 6)
    assert not set(train.ids) & set(test.ids)
