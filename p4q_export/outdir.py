"""Where a command may write: the rule every `--out` follows, so that no command can destroy a
user's work.

- `--out` must be a folder path, not a regular file;
- it must not be, contain or lie inside any input (a run exported onto itself is lost);
- an existing non-empty folder is refused; with `--force` it is replaced only when it holds a
  p4q-export artifact of the same kind (a bundle for `export`, a run for `train`), never a folder
  of other files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UserError


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _ours(checkpoint: Path) -> bool:
    """A checkpoint.pt that train wrote (its format tag), not another tool's file of that name."""
    from .p4q.checkpoint import load_checkpoint

    try:
        load_checkpoint(checkpoint)
    except UserError:
        return False
    return True


def _is_run(path: Path) -> bool:
    from .p4q.outputs import RUN_KIND

    if _json(path / "run.json").get("kind") == RUN_KIND:
        return True
    # a run interrupted before its first seed finished: its checkpoint, or only its calibration list
    if (path / "checkpoint.pt").is_file() and _ours(path / "checkpoint.pt"):
        return True
    if any((path / "calibration").glob("*-n*-seed*.txt")):
        return True
    return any(_is_run(p) for p in path.glob("seed-*") if p.is_dir())


def artifact_kind(path: Path) -> str | None:
    """'bundle', 'run' or 'model' for a folder p4q-export wrote, None for anything else."""
    path = Path(path)
    if not path.is_dir():
        return None
    from .deploy.bundle import is_bundle

    if is_bundle(path):  # BUNDLE (its manifest in deploy/) or a flat bundle from before the split
        return "bundle"
    if _json(path / "manifest.json").get("kind") == "p4q-export/pretrained-model":
        return "model"
    return "run" if _is_run(path) else None


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_out(out: Path, kind: str, force: bool = False, inputs: tuple = (), resumable: bool = False) -> None:
    """Refuse an --out the rule above forbids (UserError: one line, exit 2, nothing touched).
    `resumable`: a folder already holding an artifact of this kind is accepted without --force
    (train resumes from its checkpoint)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: give a folder path for the {kind}")
    resolved = out.resolve()
    for src in inputs:
        if src and Path(src).exists() and _overlaps(resolved, Path(src).resolve()):
            raise UserError(f"--out {out} is, contains or lies inside the input {src}: write the {kind} to another folder")
    if not out.is_dir() or not any(out.iterdir()):
        check_writable(out, kind)
        return
    found = artifact_kind(out)
    if found == kind and (force or resumable):
        check_writable(out, kind)
        return
    held = f"a p4q-export {found}" if found else "files p4q-export did not write"
    if found != kind:
        raise UserError(f"--out {out} is not empty and holds {held}: choose a new or empty folder "
                        f"(--force replaces only a p4q-export {kind})")
    raise UserError(f"--out {out} already holds a {kind} (pass --force to replace it)")


def check_writable(out: Path, kind: str) -> None:
    """The artifact is staged beside OUT and renamed into place: OUT's nearest existing parent
    (and OUT itself when it exists) must be writable."""
    parent = next((p for p in out.absolute().parents if p.exists()), Path("/"))
    for place in ([out] if out.exists() else []) + [parent]:
        if not os.access(place, os.W_OK | os.X_OK):
            raise UserError(f"cannot write the {kind} to {out}: {place} is not writable")
