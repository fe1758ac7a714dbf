"""The glyph corpus as a dataset (`glyphs`): Unicode codepoints rendered from the fonts Debian
ships, one class per codepoint, captioned from Unicode and CLDR names. No image of a downstream
set (MNIST, Fashion-MNIST) is in it.

Built once per (seed, images per class, fonts, code version) and cached under
$P4Q_CACHE/glyphs-<hash>/ (written to a temporary folder, then renamed into place)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..manifest import staged_dir
from .glyphs_captions import CLDR_ANNOTATIONS, glyph_captions
from .glyphs_fonts import FontFile, corpus_codepoints, font_coverage, font_files

CORPUS_VERSION = 1  # bump when rendering or captions change: the cache key changes with it
DEFAULT_SEED = 0
DEFAULT_PER_CLASS = 24
TEST_EVERY = 12  # image j of a class is in the test split when j % TEST_EVERY == TEST_EVERY - 1
IMAGES_FILE, META_FILE = "images.npz", "corpus.json"


@dataclass
class GlyphCorpus:
    images: np.ndarray  # N×28×28 uint8
    labels: np.ndarray  # N, class index
    codepoints: list[int]  # per class
    captions: list[list[str]]  # per class
    meta: dict

    def split_indices(self, split: str) -> np.ndarray:
        rank = np.zeros(len(self.labels), dtype=np.int64)  # image's index within its class
        starts = np.r_[0, np.flatnonzero(np.diff(self.labels)) + 1]
        for a, b in zip(starts, np.r_[starts[1:], len(self.labels)]):
            rank[a:b] = np.arange(b - a)
        test = rank % TEST_EVERY == TEST_EVERY - 1
        return np.flatnonzero(test if split == "test" else ~test)


def cache_root() -> Path:
    return Path(os.environ.get("P4Q_CACHE", Path.home() / ".cache" / "p4q-export"))


def corpus_key(fonts: list[FontFile], codepoints: list[int], per_class: int, seed: int) -> str:
    blob = {
        "version": CORPUS_VERSION, "seed": seed, "per_class": per_class, "codepoints": codepoints,
        "fonts": [(f.path, f.package, f.style, Path(f.path).stat().st_size) for f in fonts],
        "cldr": CLDR_ANNOTATIONS.stat().st_size if CLDR_ANNOTATIONS.is_file() else 0,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def build_corpus(fonts: list[FontFile], codepoints: list[int], per_class: int, seed: int,
                 workers: int | None = None) -> GlyphCorpus:
    """Render and caption the corpus in memory (no cache): classes are the codepoints some font draws."""
    from .glyphs_render import render_classes

    wanted = set(codepoints)
    coverage = [font_coverage(f) & wanted for f in fonts]
    jobs = [(cp, [f for f, c in zip(fonts, coverage) if cp in c]) for cp in codepoints]
    jobs = [j for j in jobs if j[1]]
    rendered = render_classes(jobs, per_class, seed, workers)
    kept = [(cp, imgs) for (cp, _), imgs in zip(jobs, rendered) if len(imgs)]
    if not kept:
        raise UserError("the glyph fonts drew no codepoint of the corpus")
    images = np.concatenate([imgs for _, imgs in kept])
    labels = np.concatenate([np.full(len(imgs), i, dtype=np.int64) for i, (_, imgs) in enumerate(kept)])
    cps = [cp for cp, _ in kept]
    meta = {"version": CORPUS_VERSION, "seed": seed, "per_class": per_class, "n_images": len(labels),
            "n_classes": len(cps), "n_fonts": len(fonts), "packages": sorted({f.package for f in fonts})}
    return GlyphCorpus(images, labels, cps, [glyph_captions(cp) for cp in cps], meta)


def _save(corpus: GlyphCorpus, out: Path) -> None:
    with staged_dir(out) as tmp:
        np.savez(tmp / IMAGES_FILE, images=corpus.images, labels=corpus.labels)
        meta = dict(corpus.meta, codepoints=corpus.codepoints, captions=corpus.captions)
        (tmp / META_FILE).write_text(json.dumps(meta))


def _load(path: Path) -> GlyphCorpus:
    meta = json.loads((path / META_FILE).read_text())
    with np.load(path / IMAGES_FILE) as z:
        images, labels = z["images"], z["labels"]
    return GlyphCorpus(images, labels, meta.pop("codepoints"), meta.pop("captions"), meta)


def load_corpus(seed: int = DEFAULT_SEED, per_class: int = DEFAULT_PER_CLASS, workers: int | None = None) -> GlyphCorpus:
    """The cached corpus, rendering it first (about 2 minutes on 2 cores) when this key has none."""
    from ..progress import log

    fonts, cps = font_files(), corpus_codepoints()
    path = cache_root() / f"glyphs-{corpus_key(fonts, cps, per_class, seed)[:12]}"
    if (path / META_FILE).is_file() and (path / IMAGES_FILE).is_file():
        try:
            return _load(path)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            log(f"glyph corpus cache {path} is damaged: rendering it again")
    log(f"rendering the glyph corpus ({len(cps)} codepoints, {len(fonts)} fonts) into {path}")
    corpus = build_corpus(fonts, cps, per_class, seed, workers)
    _save(corpus, path)
    log(f"glyph corpus: {corpus.meta['n_images']} images, {corpus.meta['n_classes']} classes")
    return corpus
