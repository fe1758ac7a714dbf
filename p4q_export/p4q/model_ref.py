"""Which model weights a run was trained from: recorded in run.json and checkpoints, checked
before a run is resumed, reused or loaded (a re-pretrained test bed keeps its path)."""

from __future__ import annotations

from pathlib import Path


def weights_file(path: Path) -> Path:
    """The weights of a local model: the file itself, or the weights file open_clip picks in a
    model directory (the shipped test beds hold safetensors)."""
    if not path.is_dir():
        return path
    from open_clip.factory import _find_checkpoint_in_dir

    from ..models.registry import WEIGHTS_FILE

    found = _find_checkpoint_in_dir(path)
    return Path(found) if found else path / WEIGHTS_FILE


def model_reference(loaded) -> dict:
    """The model as given, plus an absolute path and the weights' SHA-256 when it is a local
    file/dir (runs move; the cwd too)."""
    ref = loaded.describe()
    spec = Path(loaded.source)
    if spec.exists():
        ref["path"] = str(spec.resolve())
        if weights_file(spec).is_file():
            from ..manifest import file_sha256

            ref["weights_sha256"] = file_sha256(weights_file(spec))
    return ref


def same_weights_as_recorded(ref: dict) -> bool:
    """False when a run's model (as `model_reference` recorded it) now holds other weights under
    the same path, e.g. a re-pretrained test bed; True when nothing was recorded or it is gone."""
    from ..manifest import file_sha256

    digest, path = ref.get("weights_sha256"), ref.get("path")
    if not digest or not path or not weights_file(Path(path)).is_file():
        return True
    return file_sha256(weights_file(Path(path))) == digest
