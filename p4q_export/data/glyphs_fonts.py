"""The glyph corpus's inputs: the font files of the Debian packages in glyph_packages.txt, which
codepoints each one draws, and the codepoints (classes) of the corpus."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

PACKAGES_FILE = Path(__file__).with_name("glyph_packages.txt")
DPKG_INFO = Path("/var/lib/dpkg/info")
FONT_SUFFIXES = (".ttf", ".otf")
EMOJI_FONT_SIZE = 109  # Noto Color Emoji is a bitmap font drawn at this one size
# Blocks of the corpus: Latin letters and digits, Greek, Cyrillic, symbols, math, arrows, shapes,
# dingbats and emoji (clothing and shoes among them). Scripts the downstream sets never show stay out.
BLOCKS = (
    (0x0021, 0x007E), (0x00A1, 0x00FF), (0x0391, 0x03C9), (0x0410, 0x044F), (0x20A0, 0x20BF),
    (0x2100, 0x218B), (0x2190, 0x23FF), (0x2460, 0x24FF), (0x25A0, 0x27BF), (0x27C0, 0x27FF),
    (0x2900, 0x2BFF), (0x1F300, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF),
)
CATEGORIES = ("L", "N", "S", "P")  # letters, numbers, symbols, punctuation; no marks, spaces, controls


@dataclass(frozen=True)
class FontFile:
    path: str
    package: str
    style: str  # print | handwritten | emoji | symbol

    @property
    def is_emoji(self) -> bool:
        return self.style == "emoji"


def read_packages(path: Path = PACKAGES_FILE) -> dict[str, str]:
    """package -> style, in file order (the Makefile's setup installs the same list)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, style = line.split()
            out[name] = style
    return out


def _package_files(package: str) -> list[str]:
    for candidate in (DPKG_INFO / f"{package}.list", DPKG_INFO / f"{package}:all.list"):
        if candidate.is_file():
            return [x.strip() for x in candidate.read_text().splitlines() if x.strip()]
    return []


def font_files(packages: dict[str, str] | None = None) -> list[FontFile]:
    """Every .ttf/.otf of the listed font packages, sorted by path (the corpus's order)."""
    packages = read_packages() if packages is None else packages
    fonts, missing = [], []
    for pkg, style in packages.items():
        if style == "data":
            continue
        files = [f for f in _package_files(pkg) if f.lower().endswith(FONT_SUFFIXES) and Path(f).is_file()]
        if not files:
            missing.append(pkg)
        fonts += [FontFile(f, pkg, style) for f in files]
    if not fonts:
        raise UserError("no glyph fonts installed (run `make setup`: it installs p4q_export/data/glyph_packages.txt)")
    if missing:
        from ..progress import log

        log(f"glyph corpus: font packages not installed, skipped: {', '.join(missing)}")
    return sorted(fonts, key=lambda f: f.path)


def font_coverage(font: FontFile) -> set[int]:
    """Codepoints the font maps to a glyph with outlines (or a bitmap, for emoji)."""
    import logging

    from fontTools.ttLib import TTFont

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # odd timestamps, padding: harmless warnings
    try:
        with TTFont(font.path, lazy=True, fontNumber=0) as tt:
            cmap = tt.getBestCmap() or {}
            if "glyf" in tt and not font.is_emoji:
                glyf = tt["glyf"]
                # a mapped but empty outline draws nothing
                return {cp for cp, g in cmap.items() if g in glyf and glyf[g].numberOfContours != 0}
            return set(cmap)
    except Exception:  # a font fontTools cannot parse is left out, like a missing one
        return set()


def corpus_codepoints() -> list[int]:
    """The candidate classes: assigned codepoints of BLOCKS in CATEGORIES with a Unicode name."""
    out = []
    for lo, hi in BLOCKS:
        for cp in range(lo, hi + 1):
            ch = chr(cp)
            if unicodedata.category(ch)[0] in CATEGORIES and unicodedata.name(ch, ""):
                out.append(cp)
    return out
