"""Bundles: a directory with model.onnx, reference.pt, classnames.txt and manifest.json (SHA-256 of
every file). Written into a temp dir beside the target and renamed into place, so a failed export
leaves nothing; hashes are verified before anything in a bundle is loaded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..manifest import file_sha256, read_json, replace_dir, write_json_atomic
from ..outdir import check_out

MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.pt"
CLASSNAMES_FILE = "classnames.txt"
VALIDATION_FILE = "validation.json"
FORMAT = "p4q-bundle/1"


def validation_file(precision: str, deploy_precision: str) -> str:
    """validation.json for the deploy graph, validation.<precision>.json for the others."""
    return VALIDATION_FILE if precision == deploy_precision else f"validation.{precision}.json"


def _unhashed(rel: str) -> bool:
    """Files the bundle may gain after export without being part of the hashed set."""
    return rel == MANIFEST or (rel.startswith("validation") and rel.endswith(".json") and "/" not in rel)


def hash_files(root: Path) -> dict:
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not _unhashed(rel):
            files[rel] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
    return files


def write_bundle(out: Path, write_files: Callable[[Path], dict], force: bool = False) -> dict:
    """`write_files(staging_dir)` writes the payload and returns the manifest (without `files`).
    Adds file hashes, writes manifest.json, then renames the staging dir onto `out`."""
    out = Path(out)
    check_out(out, "bundle", force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = write_files(staging)
        manifest["files"] = hash_files(staging)
        write_json_atomic(staging / MANIFEST, seal(manifest))
        # mkdtemp/mkstemp create owner-only entries; a bundle is meant to be shared and copied.
        os.chmod(staging, 0o755)
        os.chmod(staging / MANIFEST, 0o644)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


@dataclass
class Bundle:
    path: Path
    manifest: dict

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def precision(self) -> str:
        """The deploy graph's precision (bundles from before `export --precision`: int8)."""
        return self.manifest.get("precision", "int8")

    @property
    def graphs(self) -> dict:
        """precision → {file, opset, quantized, compute, ...}; old bundles hold model.onnx only."""
        return self.manifest.get("graphs") or {"int8": {"file": ONNX_FILE, "quantized": True, "compute": "fp32"}}

    def graph_path(self, precision: str) -> Path:
        """The file of the `precision` graph, or a UserError that says how to get one."""
        entry = self.graphs.get(precision)
        if entry is None:
            carries = "int8-fp16" if precision in ("int8-fp16", "fp16") else precision  # int8-fp16 bundles hold the twin too
            raise UserError(f"bundle {self.path} has no {precision} graph (it holds {', '.join(self.graphs)}): "
                            f"re-export it with `p4q-export export ... --precision {carries}`")
        return self.path / entry["file"]

    def graph_is_quantized(self, precision: str) -> bool:
        return bool(self.graphs.get(precision, {}).get("quantized", precision.startswith("int8")))

    @property
    def reference_path(self) -> Path:
        return self.path / REFERENCE_FILE

    @property
    def classnames(self) -> list[str]:
        return list(self.manifest["classnames"])

    @property
    def preprocessing(self) -> dict:
        return self.manifest["preprocessing"]

    @property
    def image_size(self) -> int:
        return int(self.preprocessing["image_size"])

    @property
    def uint8_input(self) -> bool:
        return bool(self.preprocessing.get("folded_into_graph", False))

    @property
    def input_name(self) -> str:
        return self.manifest["inputs"][0]["name"]

    @property
    def output_name(self) -> str:
        return self.manifest["outputs"][0]["name"]

    @property
    def engine_io(self) -> dict:
        """What a TensorRT engine's manifest entry records for its runner to feed the graph."""
        return {"input_name": self.input_name, "output_name": self.output_name, "image_size": self.image_size,
                "input_dtype": "uint8" if self.uint8_input else "float32"}

    @property
    def profile(self) -> str:
        return self.manifest["profile"]["name"]

    @property
    def thresholds(self) -> dict:
        return dict(self.manifest.get("validation_thresholds", {}))

    def tensor_preprocess(self):
        """The data-side preprocessing (resize/crop always; normalize unless folded into the graph)."""
        from ..data.preprocess import TensorPreprocess

        p = self.preprocessing
        return TensorPreprocess(image_size=int(p["image_size"]), mean=tuple(p["mean"]), std=tuple(p["std"]), interpolation=p.get("interpolation", "bicubic"))


INTEGRITY = "integrity"


def _field_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(manifest: dict) -> dict:
    """The manifest with `integrity`: the SHA-256 of each of its fields (canonical JSON), so an edit
    is caught, and named, before any command trusts it. Call it on every write."""
    manifest.pop(INTEGRITY, None)
    manifest[INTEGRITY] = {key: _field_hash(value) for key, value in manifest.items()}
    return manifest


def verify_manifest(path: Path, manifest: dict) -> None:
    """Refuse a manifest edited after export (bundles from before the seal carry none: accepted)."""
    sealed = manifest.get(INTEGRITY)
    if sealed is None:
        return
    fields = {k: v for k, v in manifest.items() if k != INTEGRITY}
    if not isinstance(sealed, dict):
        raise UserError(f"bundle {path}: {MANIFEST} was edited after export (its integrity block is damaged); export it again")
    changed = sorted(k for k in set(sealed) | set(fields) if k not in fields or sealed.get(k) != _field_hash(fields[k]))
    if changed:
        raise UserError(f"bundle {path}: {MANIFEST} was edited after export (field {', '.join(repr(k) for k in changed)} "
                        "changed); export it again")


def verify_files(path: Path, manifest: dict) -> None:
    listed = manifest.get("files")
    if not isinstance(listed, dict) or ONNX_FILE not in listed:
        raise UserError(f"{path / MANIFEST} lists no files (not a p4q-export bundle?)")
    for rel, entry in listed.items():
        f = path / rel
        if not f.is_file():
            raise UserError(f"bundle {path} is incomplete: {rel} is missing")
        if f.stat().st_size != entry.get("bytes", f.stat().st_size) or file_sha256(f) != entry["sha256"]:
            raise UserError(f"bundle {path}: {rel} was changed after export (SHA-256 mismatch with manifest.json)")


def load_bundle(path: Path | str, verify: bool = True) -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"bundle not found: {path}")
    mpath = path / MANIFEST
    manifest = read_json(mpath, f"{path} is not a bundle (no {MANIFEST})")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{mpath} is not a {FORMAT} manifest")
    if verify:
        verify_manifest(path, manifest)
        verify_files(path, manifest)
    return Bundle(path=path, manifest=manifest)

