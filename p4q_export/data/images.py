"""Opening one image file: RGB, or one line naming the file and what is wrong with it.

The pixel limit guards against decompression bombs: a few kilobytes of PNG can declare
20000×20000 pixels and take 1.1 GiB to decode, per image and per data-loading worker. The
default is Pillow's own (89,478,485 pixels, about 0.25 GiB of RGB); the header is read first, so
an image over the limit is refused before it is decoded."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import UserError

PIXEL_LIMIT_ENV = "P4Q_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's default: 1024 * 1024 * 1024 // 4 // 3
# Pillow's own guard raises at twice its limit without saying the image's size, and warns below
# that: `open_image` checks the header against our limit before decoding instead
Image.MAX_IMAGE_PIXELS = None


def max_image_pixels() -> int:
    """The pixel limit in force (0 = none): `--max-image-pixels`, which sets P4Q_MAX_IMAGE_PIXELS so
    data-loading workers see it too."""
    raw = os.environ.get(PIXEL_LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{PIXEL_LIMIT_ENV} must be a whole number of pixels (0 = no limit), got '{raw}'") from None
    if value < 0:
        raise UserError(f"{PIXEL_LIMIT_ENV} must be 0 (no limit) or more, got {value}")
    return value


def _too_large(p: Path, w: int, h: int, limit: int) -> UserError:
    return UserError(f"image too large: {p} has {w}×{h} = {w * h:,} pixels, about {w * h * 3 / 2**30:.1f} GiB decoded, "
                     f"over the limit of {limit:,} (a guard against decompression bombs); raise it with "
                     "`p4q-export --max-image-pixels N COMMAND ...` (0 = no limit)")


def open_image(path: Path | str) -> Image.Image:
    """The file as an RGB image, or a UserError naming it (missing, not a file, unreadable, too large)."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise UserError(f"not an image file: {p} (a {'directory' if p.is_dir() else 'device or special file'})")
    if not p.is_file():
        raise UserError(f"image not found: {p}")
    limit = max_image_pixels()
    try:
        # a damaged file makes Pillow warn (corrupt EXIF, palette transparency) before it fails: the
        # failure is the one line said about it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                w, h = im.size
                if limit and w * h > limit:
                    raise _too_large(p, w, h, limit)
                im.load()
                return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise UserError(f"not a readable image: {p} ({type(exc).__name__})") from None
