"""`eval` streams a file-backed split: 5,000 JPEG files through a 224-px model while the process's
peak RSS stays within 1.5 GB of where it started (the split as one float tensor would be 3 GB), and
its top-1 / top-5 are those counted over every image."""

from __future__ import annotations

import json
import re
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pytest
import torch

N_IMAGES = 5000
N_CLASSES = 10
IMAGE_SIZE = 224
RSS_BOUND = 1.5 * 2**30
TINY_224 = {  # a small CLIP with ViT-B/32's input geometry: the data path is what is measured
    "embed_dim": 64,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _write_jpegs(job):
    from PIL import Image

    arrays, paths = job
    for a, p in zip(arrays, paths):
        Image.fromarray(a).resize((256, 256), Image.BICUBIC).convert("RGB").save(p, quality=90)


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    """Fashion-MNIST test images as 256-px JPEG files, ImageNet-style test/<class>/ folders."""
    from p4q_export.data import load_dataset

    root = tmp_path_factory.mktemp("jpegs")
    ds = load_dataset("fashion-mnist", "test")
    idx = np.arange(N_IMAGES)
    paths = []
    for i in idx:
        folder = root / "test" / f"class_{ds.labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"{i:05d}.jpg")
    for c in range(N_CLASSES):  # the train split is never read by eval; it only has to exist
        (root / "train" / f"class_{c}").mkdir(parents=True, exist_ok=True)
    jobs = [(ds.arrays[idx[s : s + 250]], paths[s : s + 250]) for s in range(0, N_IMAGES, 250)]
    with Pool(2) as pool:
        pool.map(_write_jpegs, jobs)
    return root


@pytest.fixture(scope="module")
def model_224(tmp_path_factory) -> Path:
    import open_clip

    from p4q_export.models.loading import CONFIG_FILE, WEIGHTS_FILE

    root = tmp_path_factory.mktemp("tiny224")
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_224)
    torch.save(model.state_dict(), root / WEIGHTS_FILE)
    (root / CONFIG_FILE).write_text(json.dumps({"model_name": "tiny-224", "model_cfg": TINY_224}))
    return root


def _reference_accuracy(folder: Path, model_dir: Path) -> tuple[float, float]:
    """Top-1 / top-5 of every test image, counted here: features batch by batch (the loader is
    checked against one-by-one decoding below), zero-shot class matrix, ranks by numpy."""
    import torch.nn.functional as F

    from p4q_export.data import dataset_templates, image_batches, load_dataset
    from p4q_export.models import load_model
    from p4q_export.models.zeroshot import zero_shot_classifier

    loaded = load_model(str(model_dir))
    ds = load_dataset(f"imagefolder:{folder}", "test")
    classifier = zero_shot_classifier(loaded.model, loaded.tokenizer, ds.classnames, dataset_templates(ds))
    with torch.no_grad():
        feats = torch.cat([F.normalize(loaded.model.encode_image(b), dim=-1) for b in image_batches(ds, loaded.preprocess, 500, workers=2)])
    logits = (feats @ classifier.T).numpy()
    ranked = np.argsort(-logits, axis=1, kind="stable")
    labels = np.asarray(ds.labels)
    assert len(labels) == N_IMAGES
    return (ranked[:, 0] == labels).sum() / N_IMAGES, (ranked[:, :5] == labels[:, None]).any(1).sum() / N_IMAGES


@pytest.mark.slow
def test_eval_streams_a_file_backed_split_in_bounded_memory(jpeg_folder, model_224):
    from p4q_export.tasks.evaluate import EvalRequest, evaluate

    whole_split_bytes = N_IMAGES * 3 * IMAGE_SIZE**2 * 4
    assert whole_split_bytes > 1.8 * RSS_BOUND  # holding the split would break the bound by far
    start = _status_kib("VmRSS") * 1024
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    result = evaluate(EvalRequest(target=str(model_224), data=f"imagefolder:{jpeg_folder}", device="cpu",
                                  workers=2, batch_size=250))
    peak = _status_kib("VmHWM") * 1024
    assert peak - start < RSS_BOUND, f"peak RSS grew by {(peak - start) / 2**30:.2f} GiB"
    assert result["n"] == N_IMAGES and result["device"] == "cpu"
    assert result["images_per_s"] >= 0.99 * N_IMAGES / result["seconds"]  # images over the encoding part of the wall time
    # the streamed count is the count over every image (a random-weight model: near 10%, exactly this)
    top1, top5 = _reference_accuracy(jpeg_folder, model_224)
    assert (result["top1"], result["top5"]) == (round(top1, 6), round(top5, 6))


def test_streamed_batches_equal_the_in_memory_preprocessing(jpeg_folder, model_224):
    """Workers decode files into the same tensors, in the same order, as the one-process path."""
    from p4q_export.data import image_batches, load_dataset
    from p4q_export.data.preprocess import pil_to_uint8_nchw
    from p4q_export.models import load_model

    prep = load_model(str(model_224)).preprocess
    ds = load_dataset(f"imagefolder:{jpeg_folder}", "test").subset(np.arange(0, N_IMAGES, 97))
    streamed = torch.cat(list(image_batches(ds, prep, 16, workers=2)))
    one_by_one = torch.cat([prep(pil_to_uint8_nchw([ds.pil(i)])[0].unsqueeze(0)) for i in range(len(ds))])
    assert torch.equal(streamed, one_by_one)
    assert streamed.shape == (len(ds), 3, IMAGE_SIZE, IMAGE_SIZE)
