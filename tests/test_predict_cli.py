"""`predict BUNDLE IMAGE...` on PNG/JPEG files (bundle: the test-bed architecture, random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def bundle(random_testbed_bundle):
    return random_testbed_bundle


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from p4q_export.data import load_dataset

    ds = load_dataset("fashion-mnist", "test")
    d = tmp_path_factory.mktemp("images")
    png, jpg = d / "a.png", d / "b.jpg"
    Image.fromarray(ds.arrays[0]).save(png)
    Image.fromarray(np.stack([ds.arrays[1]] * 3, -1)).resize((64, 48)).save(jpg, quality=95)  # RGB, non-square
    return [png, jpg]


def test_predict_json(bundle, images, cli):
    proc = cli("--json", "predict", str(bundle), *map(str, images), "--top-k", "3", check=True)
    out = json.loads(proc.stdout)
    assert [p["file"] for p in out["predictions"]] == [str(f) for f in images]
    classnames = (bundle / "deploy" / "classnames.txt").read_text().split("\n")
    for p in out["predictions"]:
        assert len(p["labels"]) == len(p["scores"]) == 3
        assert set(p["labels"]) <= set(classnames)
        assert p["scores"] == sorted(p["scores"], reverse=True) and 0 < sum(p["scores"]) <= 1.0 + 1e-6


def test_predict_backends_agree(bundle, images):
    from p4q_export.runtime.predict import predict_files

    a = predict_files(bundle, images, top_k=1, backend="ort-exact")
    b = predict_files(bundle, images, top_k=1, backend="torch")
    assert [p["labels"] for p in a["predictions"]] == [p["labels"] for p in b["predictions"]]


def test_not_an_image_is_a_user_error(bundle, images, tmp_path, cli):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    proc = cli("--json", "predict", str(bundle), str(images[0]), str(bad))
    assert proc.returncode == 2
    assert proc.stdout == "" and "not a readable image" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    missing = cli("predict", str(bundle), str(tmp_path / "nope.jpg"))
    assert missing.returncode == 2 and "not found" in missing.stderr
