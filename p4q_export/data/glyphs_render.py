"""Rendering the glyph corpus: each image a white glyph on black, 28×28 (Fashion-MNIST's and MNIST's
polarity and size), with a random stroke, rotation (±12°), scale, shift and blur.

Determinism: every image draws its randomness from its own generator, seeded by (corpus seed,
codepoint, image index), so the arrays are the same byte for byte for any number of worker
processes and any order they finish in."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .glyphs_fonts import EMOJI_FONT_SIZE, FontFile

SIZE = 28
DRAW_SIZE = 56  # glyphs are drawn this tall, then scaled down (antialiased like a scan)
STYLE_ORDER = ("handwritten", "print", "symbol", "emoji")


@functools.lru_cache(maxsize=64)
def _font(path: str, emoji: bool) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, EMOJI_FONT_SIZE if emoji else DRAW_SIZE)


def _draw(cp: int, font: FontFile, stroke: int) -> np.ndarray | None:
    """The glyph alone as a float image in [0, 1] cropped to its ink, or None when it draws nothing."""
    f = _font(font.path, font.is_emoji)
    ch = chr(cp)
    try:
        left, top, right, bottom = f.getbbox(ch, stroke_width=stroke)
    except (OSError, ValueError):
        return None
    w, h = right - left + 4, bottom - top + 4
    if w <= 4 or h <= 4 or w > 1024 or h > 1024:
        return None
    if font.is_emoji:
        canvas = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((2 - left, 2 - top), ch, font=f, embedded_color=True)
        rgba = np.asarray(canvas, dtype=np.float32) / 255.0
        lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        # dark parts bright, as in Fashion-MNIST (its product photos were inverted); light parts stay visible
        img = rgba[..., 3] * (0.3 + 0.7 * (1.0 - lum))
    else:
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).text((2 - left, 2 - top), ch, font=f, fill=255, stroke_width=stroke, stroke_fill=255)
        img = np.asarray(canvas, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(img > 0.1)
    if len(ys) < 4:
        return None
    return img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def render_glyph(cp: int, font: FontFile, rng: np.random.Generator) -> np.ndarray | None:
    """One 28×28 uint8 image of codepoint `cp` in `font`, augmented with `rng`; None if blank."""
    stroke = 0 if font.is_emoji else int(rng.choice([0, 0, 1, 2]))
    angle = float(rng.uniform(-12, 12))
    box = float(rng.uniform(16, 23))  # the longer side, in pixels (MNIST's digits fit 20×20)
    shift = rng.uniform(-2, 2, size=2)
    blur = float(rng.uniform(0, 0.8))
    glyph = _draw(cp, font, stroke)
    if glyph is None:
        return None
    h, w = glyph.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = Image.fromarray(np.uint8(np.clip(glyph * 255, 0, 255))).resize(size, Image.Resampling.LANCZOS)
    im = im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=0)
    out = Image.new("L", (SIZE, SIZE), 0)
    arr = np.asarray(im, dtype=np.float32)
    # centre of mass at the centre (as MNIST), then the random shift
    total = arr.sum()
    if total <= 0:
        return None
    cy = (arr.sum(axis=1) * np.arange(arr.shape[0])).sum() / total
    cx = (arr.sum(axis=0) * np.arange(arr.shape[1])).sum() / total
    out.paste(im, (round(SIZE / 2 - cx + shift[0]), round(SIZE / 2 - cy + shift[1])))
    if blur > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    a = np.asarray(out, dtype=np.uint8)
    return a if int(a.max()) >= 64 and int((a > 64).sum()) >= 4 else None


def font_order(cp: int, fonts: list[FontFile], seed: int) -> list[FontFile]:
    """The fonts of one class in rendering order: shuffled within each style, then taken in turn
    from each style, so handwriting is not drowned by the many print fonts that cover Latin."""
    rng = np.random.default_rng([seed, cp, 1])
    groups = [[f for f in fonts if f.style == s] for s in STYLE_ORDER]
    groups = [[g[i] for i in rng.permutation(len(g))] for g in groups if g]
    order = []
    for i in range(max((len(g) for g in groups), default=0)):
        order += [g[i] for g in groups if i < len(g)]
    return order


def render_class(cp: int, fonts: list[FontFile], per_class: int, seed: int) -> np.ndarray:
    """Up to `per_class` images of one codepoint (fewer when its fonts draw nothing), uint8 N×28×28."""
    order = font_order(cp, fonts, seed)
    images: list[np.ndarray] = []
    attempt = 0
    while order and len(images) < per_class and attempt < 2 * per_class:
        font = order[attempt % len(order)]
        img = render_glyph(cp, font, np.random.default_rng([seed, cp, 2, attempt]))
        attempt += 1
        if img is None:
            if attempt >= len(order) and not images:  # every font drew nothing: give up on the class
                break
            continue
        images.append(img)
    return np.stack(images) if images else np.zeros((0, SIZE, SIZE), np.uint8)


def _render_job(job: tuple[int, list[FontFile], int, int]) -> np.ndarray:
    return render_class(*job)


def render_classes(jobs: list[tuple[int, list[FontFile]]], per_class: int, seed: int,
                   workers: int | None = None) -> list[np.ndarray]:
    """Render every (codepoint, fonts) job, in job order, on `workers` processes."""
    from ..progress import progress_iter

    workers = (os.cpu_count() or 1) if workers is None else max(1, workers)
    tasks = [(cp, fonts, per_class, seed) for cp, fonts in jobs]
    if workers == 1:
        return [render_class(*t) for t in progress_iter(tasks, desc="render glyphs")]
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(progress_iter(pool.imap(_render_job, tasks, chunksize=16), total=len(tasks), desc="render glyphs"))
