"""One class-name resolver for every command that loads a folder dataset (train, eval, export,
validate), so a run, its bundle and the data it is validated on always agree on the names.

Order: the dataset's `classnames.txt` (one line per class folder, no more, no fewer), then open_clip's ImageNet names when every class key is a
WordNet id of ImageNet-1k (any subset of the 1000), else the key with underscores as spaces."""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

CLASSNAMES_FILE = "classnames.txt"
SOURCE_FILE = "classnames.txt"
SOURCE_IMAGENET = "imagenet-wnid"
SOURCE_FOLDERS = "folders"
_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class ResolvedClassnames:
    names: list[str]
    source: str  # SOURCE_FILE, SOURCE_IMAGENET or the caller's fallback


def read_classnames_txt(path: Path, keys: list[str] = ()) -> dict[str, str]:
    """`folder` or `folder<TAB|space>readable name` per line; a line that is a whole folder name
    (`hot dog`) names that folder. UTF-8 (a BOM is fine)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    known = set(keys)
    mapping: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if "\t" in line:
            folder, _, name = line.partition("\t")
        elif line in known:
            folder, name = line, ""
        else:
            folder, _, name = line.partition(" ")
        folder = folder.strip()
        if folder in mapping:
            raise UserError(f"{path} names class folder '{folder}' twice")
        mapping[folder] = (name or folder).strip()
    return mapping


def few(items: list[str]) -> str:
    """The first five of a list for a one-line message."""
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def is_wnid(key: str) -> bool:
    return _WNID.fullmatch(key) is not None


@functools.lru_cache(maxsize=1)
def imagenet_wnid_names() -> dict[str, str]:
    """WordNet id → open_clip's ImageNet class name. IMAGENET_CLASSNAMES is index-aligned with
    the sorted 1000 ImageNet-1k wnids; timm maintains that wnid list (and open_clip depends on
    timm), so we do not ship our own. Empty when either is unavailable."""
    try:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
        from timm.data import ImageNetInfo
    except ImportError as exc:
        logging.getLogger(__name__).warning("ImageNet class names unavailable (%s); using folder names", exc)
        return {}
    wnids = list(ImageNetInfo("imagenet-1k").label_names())
    if len(wnids) != len(IMAGENET_CLASSNAMES) or wnids != sorted(wnids):
        # a changed list would silently mislabel every class: refuse it rather than guess
        logging.getLogger(__name__).warning("timm's ImageNet-1k wnid list does not match open_clip's names")
        return {}
    return dict(zip(wnids, IMAGENET_CLASSNAMES))


def resolve_classnames(keys: list[str], root: Path | str | None = None,
                       fallback_source: str = SOURCE_FOLDERS) -> ResolvedClassnames:
    """Readable names for class `keys` (folder names, in label order). `root` is where a
    `classnames.txt` may sit: it must name exactly those folders, since a line for a folder that
    does not exist, or a folder left out, is a list that was written for other data."""
    names_file = Path(root) / CLASSNAMES_FILE if root is not None else None
    if names_file is not None and names_file.is_file():
        mapping = read_classnames_txt(names_file, keys)
        _check_matches(mapping, keys, names_file)
        return ResolvedClassnames([mapping[k] for k in keys], SOURCE_FILE)
    imagenet = imagenet_wnid_names() if keys and all(is_wnid(k) for k in keys) else {}
    if imagenet and all(k in imagenet for k in keys):
        return ResolvedClassnames([imagenet[k] for k in keys], SOURCE_IMAGENET)
    # a mix, or wnid-shaped ids outside ImageNet-1k: the folder names
    return ResolvedClassnames([k.replace("_", " ") for k in keys], fallback_source)


def _check_matches(mapping: dict[str, str], keys: list[str], names_file: Path) -> None:
    unknown = [k for k in mapping if k not in set(keys)]
    missing = [k for k in keys if k not in mapping]
    problems = ([f"names {len(unknown)} folder(s) that do not exist ({few(unknown)})"] if unknown else []) + \
               ([f"leaves out {len(missing)} class folder(s) ({few(missing)})"] if missing else [])
    if problems:
        raise UserError(f"{names_file} does not match the class folders: it {' and '.join(problems)}; "
                        "give one line per class folder (`folder` alone keeps the folder's name)")
