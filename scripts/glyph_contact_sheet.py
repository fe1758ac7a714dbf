"""Contact sheet of the glyph corpus for docs/testbeds.md: rows of classes (digits, letters, Greek,
Cyrillic, math, arrows, symbols, clothing emoji), each with its first caption and 12 renders.

    python scripts/glyph_contact_sheet.py [--out docs/glyphs-contact-sheet.png]
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from p4q_export.data.glyphs import load_corpus

ROWS = ["7", "3", "a", "G", "α", "Ж", "∑", "→", "★", "♫", "👕", "👖", "👗", "👟", "👜", "👢"]
PER_ROW, SCALE, LABEL_W = 12, 2, 170


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/glyphs-contact-sheet.png")
    args = ap.parse_args()
    corpus = load_corpus()
    index = {cp: i for i, cp in enumerate(corpus.codepoints)}
    cell = 28 * SCALE
    sheet = Image.new("L", (LABEL_W + PER_ROW * cell, len(ROWS) * cell), 0)
    draw = ImageDraw.Draw(sheet)
    for r, ch in enumerate(ROWS):
        k = index[ord(ch)]
        imgs = corpus.images[corpus.labels == k][:PER_ROW]
        for j, img in enumerate(imgs):
            tile = Image.fromarray(np.asarray(img)).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (LABEL_W + j * cell, r * cell))
        draw.text((6, r * cell + cell // 2 - 6), corpus.captions[k][0], fill=200)
    sheet.save(args.out)
    print(f"wrote {args.out}: {corpus.meta['n_images']} images, {corpus.meta['n_classes']} classes")


if __name__ == "__main__":
    main()
