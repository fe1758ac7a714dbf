"""The glyph corpus (the transfer test bed's pretraining data): rendering is deterministic for a
seed, captions carry the Unicode and CLDR names the downstream prompts use, and one pretraining
step on it learns. Small real corpora (a few codepoints, a few fonts), seconds each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from p4q_export.config import PretrainRecipe
from p4q_export.data import ImageDataset, load_dataset, with_prompts
from p4q_export.data.glyphs import build_corpus
from p4q_export.data.glyphs_captions import (
    GLYPH_PROMPTS,
    cldr_annotations,
    glyph_captions,
    glyph_names,
)
from p4q_export.data.glyphs_fonts import corpus_codepoints, font_files, read_packages
from p4q_export.errors import UserError

FONT_NAMES = ("DejaVuSans.ttf", "Humor-Sans.ttf", "NotoColorEmoji.ttf")
CODEPOINTS = [ord(c) for c in "7aA\u2192\U0001F45F\U0001F456"]  # 7 a A → 👟 👖


@pytest.fixture(scope="module")
def fonts():
    chosen = [f for f in font_files() if f.path.rsplit("/", 1)[-1] in FONT_NAMES]
    if len(chosen) < len(FONT_NAMES):
        pytest.skip("glyph fonts not installed (make setup installs p4q_export/data/glyph_packages.txt)")
    return chosen


def test_package_list_is_the_one_the_makefile_installs():
    packages = read_packages()
    assert "unicode-cldr-core" in packages and "fonts-noto-color-emoji" in packages
    assert {"print", "handwritten", "emoji", "symbol"} <= set(packages.values())
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "glyph_packages.txt" in makefile


def test_same_seed_same_bytes_any_worker_count(fonts):
    a = build_corpus(fonts, CODEPOINTS, per_class=4, seed=0, workers=1)
    b = build_corpus(fonts, CODEPOINTS, per_class=4, seed=0, workers=2)
    c = build_corpus(fonts, CODEPOINTS, per_class=4, seed=1, workers=1)
    assert a.images.dtype == np.uint8 and a.images.shape == (4 * len(CODEPOINTS), 28, 28)
    assert a.images.tobytes() == b.images.tobytes() and np.array_equal(a.labels, b.labels)
    assert a.captions == b.captions and a.codepoints == CODEPOINTS
    assert a.images.tobytes() != c.images.tobytes()  # the seed moves the augmentation
    # white glyph on black: dark border, bright ink, like MNIST / Fashion-MNIST
    assert a.images[:, 0, :].mean() < 10 and a.images.max(axis=(1, 2)).min() >= 64


def test_captions_from_unicode_and_cldr_names():
    seven = glyph_captions(ord("7"))
    assert seven[0] == "digit seven" and "a handwritten glyph of digit seven" in seven
    assert "seven" in glyph_names(ord("7")) and "letter a" in glyph_names(ord("a"))
    if not cldr_annotations():
        pytest.skip("unicode-cldr-core not installed")
    shoe = glyph_names(0x1F45F)
    assert shoe[0] == "athletic shoe" and {"running shoe", "sneaker"} <= set(shoe)
    assert "an emoji of running shoe" in glyph_captions(0x1F45F)


def test_every_downstream_glyph_class_name_is_a_corpus_name():
    """The glyph prompts ask for names the corpus was captioned with: zero-shot can transfer."""
    if not cldr_annotations():
        pytest.skip("unicode-cldr-core not installed")
    names = {n for cp in corpus_codepoints() for n in glyph_names(cp)}
    for dataset, (classnames, _) in GLYPH_PROMPTS.items():
        missing = [c for c in classnames if c not in names]
        assert not missing, f"{dataset}: {missing}"


def test_glyph_prompts_replace_names_and_templates():
    ds = with_prompts(load_dataset("digits", "test"), "glyphs")
    assert ds.classnames[7] == "digit seven" and ds.meta["templates"][0] == "a handwritten glyph of {}"
    assert load_dataset("digits", "test").classnames[7] == "seven"  # the original is untouched
    with pytest.raises(UserError, match="prompts"):
        with_prompts(ds, "poetry")


def test_tiny_pretraining_step_learns(fonts):
    import open_clip

    from p4q_export.data.preprocess import TensorPreprocess
    from p4q_export.models.pretrain import pool_of, train_steps
    from p4q_export.models.registry import register_project_configs

    corpus = build_corpus(fonts, CODEPOINTS, per_class=4, seed=0, workers=1)
    ds = ImageDataset(name="glyphs", split="train", labels=corpus.labels, classnames=[c[0] for c in corpus.captions],
                      ids=[str(i) for i in range(len(corpus.labels))], arrays=corpus.images,
                      meta={"captions": corpus.captions})
    register_project_configs()
    recipe = PretrainRecipe(data="glyphs", batch_size=8, lr=1e-3, warmup_fraction=0.0, flip=False)

    def run():
        torch.manual_seed(0)
        model = open_clip.create_model("p4q-testbed", pretrained=None)
        tokenizer = open_clip.get_tokenizer("p4q-testbed")
        pool = pool_of([("glyphs", ds)], TensorPreprocess.from_model(model))
        before = model.visual.conv1.weight.detach().clone()
        losses = train_steps(model, tokenizer, pool, recipe, 6, "cpu", np.random.default_rng(0))
        return losses, (model.visual.conv1.weight - before).abs().max().item()

    losses, moved = run()
    assert len(losses) == 6 and all(np.isfinite(losses)) and moved > 0
    assert losses == run()[0]  # same seed, same steps
    assert np.mean(losses[-2:]) < np.mean(losses[:2])  # it learns on its own batches


def test_later_pretrain_keys_keep_the_cache_key():
    """eval_data / eval_prompts at their defaults leave the recipe hash (the cached bed's folder
    name) as it was before they existed."""
    import dataclasses
    import hashlib
    import json

    from p4q_export.config import recipe_hash

    r = PretrainRecipe()
    old = {k: v for k, v in dataclasses.asdict(r).items() if k not in ("eval_data", "eval_prompts")}
    assert recipe_hash(r) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    assert recipe_hash(PretrainRecipe(eval_data="mnist")) != recipe_hash(r)


def test_val_split_leaves_out_every_seeds_shots():
    from p4q_export.config import TrainRecipe
    from p4q_export.data import few_shot_indices
    from p4q_export.p4q.prepare import eval_dataset

    recipe = TrainRecipe(data="digits", shots=4, seeds=[1, 2], eval_split="val")
    val = eval_dataset(recipe)
    train = load_dataset("digits", "train")
    shots = {train.ids[i] for s in (1, 2) for i in few_shot_indices(train.labels, 4, s)}
    assert not shots & set(val.ids) and len(val) == len(train) - len(shots)
    assert not set(val.ids) & set(load_dataset("digits", "test").ids)  # never the test split


def test_glyphs_spec_takes_no_directory():
    with pytest.raises(UserError, match="takes no directory"):
        load_dataset("glyphs:/tmp", "train")
