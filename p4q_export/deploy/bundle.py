"""Bundles. Two folders, so that a device gets only what it runs:

    BUNDLE/deploy/      the deploy graph, classnames.txt, manifest.json (hashes of both folders),
                        engines/ once built: what `predict` and `bench` need, and all a device gets
    BUNDLE/validation/  reference.pt, the other graphs (model.onnx beside an int8-fp16 deploy graph,
                        the FP16 twin), the calibration image lists: what only `validate` needs

Every command takes BUNDLE or BUNDLE/deploy (or a copy of deploy/ alone). Bundles from before the
split (p4q-bundle/1) are one flat folder and still load. Written into a temp dir beside the target
and renamed into place, so a failed export leaves nothing; hashes are verified before anything in a
bundle is loaded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..manifest import file_sha256, read_json, replace_dir, write_json_atomic
from ..outdir import check_out

MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.pt"
CLASSNAMES_FILE = "classnames.txt"
VALIDATION_FILE = "validation.json"
DEPLOY_DIR = "deploy"
VALIDATION_DIR = "validation"
FORMAT = "p4q-bundle/2"
FLAT_FORMAT = "p4q-bundle/1"  # one folder, before deploy/ and validation/: still loads


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


def folder_bytes(files: dict) -> int:
    return sum(int(e["bytes"]) for e in files.values())


def manifest_dir(path: Path | str) -> Path:
    """The folder that holds the manifest: BUNDLE/deploy for a bundle's root, else `path` itself."""
    path = Path(path)
    if not (path / MANIFEST).is_file() and (path / DEPLOY_DIR / MANIFEST).is_file():
        return path / DEPLOY_DIR
    return path


def is_bundle(path: Path | str) -> bool:
    """A folder `load_bundle` takes (a pretrained model dir has a manifest.json too: its format differs)."""
    mpath = manifest_dir(path) / MANIFEST
    try:
        return mpath.is_file() and str(json.loads(mpath.read_text()).get("format", "")).startswith("p4q-bundle")
    except (OSError, ValueError, AttributeError):
        return False


def write_bundle(out: Path, write_files: Callable[[Path, Path], dict], force: bool = False) -> dict:
    """`write_files(deploy_dir, validation_dir)` writes the payload and returns the manifest
    (without `files`). Adds both folders' hashes and sizes, writes deploy/manifest.json, then
    renames the staging dir onto `out`."""
    out = Path(out)
    check_out(out, "bundle", force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        deploy, validation = staging / DEPLOY_DIR, staging / VALIDATION_DIR
        deploy.mkdir()
        validation.mkdir()
        manifest = write_files(deploy, validation)
        manifest["files"] = hash_files(deploy)
        manifest["validation"] = {"dir": f"../{VALIDATION_DIR}", "files": hash_files(validation)}
        manifest["sizes"] = {"deploy_bytes": folder_bytes(manifest["files"]),
                             "validation_bytes": folder_bytes(manifest["validation"]["files"])}
        write_json_atomic(deploy / MANIFEST, seal(manifest))
        # mkdtemp/mkstemp create owner-only entries; a bundle is meant to be shared and copied.
        for d in (staging, deploy, validation):
            os.chmod(d, 0o755)
        os.chmod(deploy / MANIFEST, 0o644)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


@dataclass
class Bundle:
    path: Path  # the folder with manifest.json: BUNDLE/deploy (or a bundle from before the split)
    manifest: dict
    validation_dir: Path | None = field(default=None)  # None: a deploy folder copied alone

    @property
    def validation_files(self) -> dict:
        return (self.manifest.get("validation") or {}).get("files", {})

    def file(self, rel: str) -> Path:
        """A file of either folder, or a UserError that says where it lives when this copy lacks it."""
        if rel in self.manifest.get("files", {}):
            return self.path / rel
        if rel not in self.validation_files:
            raise UserError(f"bundle {self.path} lists no file {rel}; re-export it with `p4q-export export`")
        if self.validation_dir is None or not (self.validation_dir / rel).is_file():
            raise UserError(f"{rel} is in the bundle's {VALIDATION_DIR}/ folder, which this copy of {self.path} does not have: "
                            f"run this where the whole bundle is (or copy {VALIDATION_DIR}/ beside {self.path.name}/)")
        return self.validation_dir / rel

    @property
    def onnx_path(self) -> Path:
        """The int8 graph (model.onnx): every quantized bundle has one."""
        return self.file(self.graphs.get("int8", {}).get("file", ONNX_FILE))

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
        return self.file(entry["file"])

    def graph_is_quantized(self, precision: str) -> bool:
        return bool(self.graphs.get(precision, {}).get("quantized", precision.startswith("int8")))

    @property
    def reference_path(self) -> Path:
        return self.file((self.manifest.get("reference") or {}).get("file", REFERENCE_FILE))

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


def _check_listed(folder: Path, listed: dict, present_only: bool = False) -> None:
    for rel, entry in listed.items():
        f = folder / rel
        if not f.is_file():
            if present_only:
                continue
            raise UserError(f"bundle {folder} is incomplete: {rel} is missing")
        if f.stat().st_size != entry.get("bytes", f.stat().st_size) or file_sha256(f) != entry["sha256"]:
            raise UserError(f"bundle {folder}: {rel} was changed after export (SHA-256 mismatch with {MANIFEST})")


def verify_files(path: Path, manifest: dict, validation_dir: Path | None = None) -> None:
    """Every deploy file must be there and match; a validation file that is there must match (one
    that is not is refused when a command needs it: Bundle.file)."""
    listed = manifest.get("files")
    deploy_graph = (manifest.get("graphs") or {}).get(manifest.get("precision", "int8"), {}).get("file", ONNX_FILE)
    if not isinstance(listed, dict) or deploy_graph not in listed:
        raise UserError(f"{path / MANIFEST} lists no deploy graph (not a p4q-export bundle?)")
    _check_listed(path, listed)
    if validation_dir is not None:
        _check_listed(validation_dir, (manifest.get("validation") or {}).get("files", {}), present_only=True)


def load_bundle(path: Path | str, verify: bool = True) -> Bundle:
    """BUNDLE, BUNDLE/deploy, a deploy folder copied alone, or a flat bundle from before the split."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"bundle not found: {path}")
    path = manifest_dir(path)
    mpath = path / MANIFEST
    manifest = read_json(mpath, f"{path} is not a bundle (no {MANIFEST})")
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, FLAT_FORMAT):
        raise UserError(f"{mpath} is not a {FORMAT} manifest")
    vdir = None
    if manifest.get("validation"):
        vdir = (path / manifest["validation"].get("dir", f"../{VALIDATION_DIR}")).resolve()
        vdir = vdir if vdir.is_dir() else None
    if verify:
        verify_manifest(path, manifest)
        verify_files(path, manifest, vdir)
    return Bundle(path=path, manifest=manifest, validation_dir=vdir)
