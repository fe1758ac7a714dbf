"""Captions of the glyph corpus (Unicode names, CLDR short names and keywords, style words) and the
prompts a glyph-pretrained CLIP is asked with downstream (`prompts: glyphs`)."""

from __future__ import annotations

import functools
import re
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

CLDR_ANNOTATIONS = Path("/usr/share/unicode/cldr/common/annotations/en.xml")  # Debian unicode-cldr-core
# Caption templates by the kind of glyph; "{}" is one of the class's names. The downstream prompts
# below use the same words, so zero-shot asks the text tower in the language it was trained on.
LETTER_TEMPLATES = ("{}", "a glyph of {}", "a handwritten glyph of {}", "a printed glyph of {}",
                    "the character {}", "a drawing of {}", "a handwritten {}")
SYMBOL_TEMPLATES = ("{}", "a glyph of {}", "a symbol of {}", "a drawing of {}", "an icon of {}",
                    "the sign {}")
EMOJI_TEMPLATES = ("{}", "an emoji of {}", "a drawing of {}", "an icon of {}", "a picture of {}",
                   "a glyph of {}")
MAX_CAPTIONS = 16
_SCRIPT_WORDS = re.compile(r"^(latin|greek|cyrillic) ")


def _clean(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").lower().split())


@functools.lru_cache(maxsize=1)
def cldr_annotations(path: Path = CLDR_ANNOTATIONS) -> dict[int, tuple[str, list[str]]]:
    """codepoint -> (short name, keywords) from CLDR's English annotations; {} when not installed."""
    if not path.is_file():
        return {}
    out: dict[int, tuple[str, list[str]]] = {}
    for node in ET.parse(path).getroot().iter("annotation"):
        cp = node.get("cp", "")
        if len(cp) != 1 or not node.text:
            continue
        name, words = out.get(ord(cp), ("", []))
        if node.get("type") == "tts":
            name = _clean(node.text)
        else:
            words = [_clean(w) for w in node.text.split("|") if w.strip()]
        out[ord(cp)] = (name, words)
    return out


def glyph_names(cp: int) -> list[str]:
    """Names of one codepoint, most specific first: the Unicode name, its short forms, CLDR's."""
    uname = _clean(unicodedata.name(chr(cp), ""))
    names = [uname]
    short = _SCRIPT_WORDS.sub("", uname)  # "latin capital letter a" -> "capital letter a"
    names.append(short)
    if " letter " in f" {short} ":
        names.append(short.replace("small letter ", "small ").replace("capital letter ", "capital "))
        names.append("letter " + short.rsplit(" ", 1)[-1])
    if uname.startswith("digit "):
        word = uname[len("digit "):]
        names += [f"number {word}", word]
    cldr_name, keywords = cldr_annotations().get(cp, ("", []))
    names += [cldr_name] + keywords
    seen: dict[str, None] = {}
    for n in names:
        if n and n not in seen:
            seen[n] = None
    return list(seen)


def _kind(cp: int) -> str:
    cat = unicodedata.category(chr(cp))
    if cp >= 0x1F300:
        return "emoji"
    return "letter" if cat[0] in "LN" else "symbol"


def glyph_captions(cp: int) -> list[str]:
    """Caption variants of one class: every template of its kind with its first name, then the
    other names in the plain and the first templates (deterministic order, at most MAX_CAPTIONS)."""
    templates = {"letter": LETTER_TEMPLATES, "symbol": SYMBOL_TEMPLATES, "emoji": EMOJI_TEMPLATES}[_kind(cp)]
    names = glyph_names(cp)
    caps = [t.format(names[0]) for t in templates]
    for n in names[1:]:
        caps += [templates[1].format(n), templates[2].format(n), n]
    seen: dict[str, None] = {}
    for c in caps:
        seen.setdefault(c, None)
    return list(seen)[:MAX_CAPTIONS]


# --- downstream prompts for a glyph-pretrained CLIP -------------------------------------------------
GLYPH_DIGIT_NAMES = ["digit zero", "digit one", "digit two", "digit three", "digit four",
                     "digit five", "digit six", "digit seven", "digit eight", "digit nine"]
GLYPH_DIGIT_TEMPLATES = ("a handwritten glyph of {}", "a glyph of {}", "a handwritten {}", "{}",
                         "a drawing of {}", "the character {}")
# Fashion-MNIST's classes in the words of the emoji's CLDR names and keywords
GLYPH_FASHION_NAMES = ["t-shirt", "trousers", "woman's clothes", "dress", "coat",
                       "woman's sandal", "shirt", "running shoe", "handbag", "woman's boot"]
GLYPH_FASHION_TEMPLATES = ("an emoji of {}", "a drawing of {}", "an icon of {}", "a picture of {}",
                           "{}", "a glyph of {}")
GLYPH_PROMPTS = {
    "mnist": (GLYPH_DIGIT_NAMES, GLYPH_DIGIT_TEMPLATES),
    "digits": (GLYPH_DIGIT_NAMES, GLYPH_DIGIT_TEMPLATES),
    "fashion-mnist": (GLYPH_FASHION_NAMES, GLYPH_FASHION_TEMPLATES),
}
