"""Hashes, versions, JSON reads and atomic writes shared by runs, bundles and pretrained models."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from .errors import UserError, signals_held

# TensorRT comes as tensorrt, tensorrt-cu12 or tensorrt-cu13 from pip (JetPack's apt package has no
# distribution: engine entries and GPU bench runs record runtime.cuda_env.tensorrt_install too)
TRACKED_PACKAGES = ("p4q-export", "torch", "torchvision", "open_clip_torch", "onnx", "onnxruntime", "polygraphy", "numpy",
                    "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "cuda-python", "cuda-bindings")


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_intact(folder: Path | str, files: dict) -> bool:
    """Whether `folder` holds every file of a `{name: sha256}` manifest entry, unchanged (an empty
    entry proves nothing: False)."""
    folder = Path(folder)
    return bool(files) and all((folder / f).is_file() and file_sha256(folder / f) == h for f, h in files.items())


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in TRACKED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def read_json(path: Path | str, missing: str):
    """The JSON in `path`: a UserError saying `missing` where there is no such file, or why it does
    not parse (bundle manifests, engine bookkeeping and model directories read their JSON here)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(missing)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None


def write_json_atomic(path: Path | str, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def replace_dir(staging: Path, out: Path) -> None:
    """Rename `staging` onto `out`; an existing `out` is moved aside first and deleted only once the
    new one is in place. SIGINT/SIGTERM are held back between the two renames, so an interrupt
    never leaves `out` missing."""
    trash = None
    with signals_held():
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
        try:
            os.replace(staging, out)
        except BaseException:
            if trash is not None:
                os.replace(trash / "old", out)
            raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out: Path | str):
    """A temporary directory beside `out`, renamed onto it (replacing it) when the block succeeds;
    removed when it fails, so `out` is either the old content or the whole new one."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
