"""`validate`: which backend `--backend` and `--ort-mode` name, its comparison with the PyTorch
reference, and a failed check when it does not match."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import CheckFailed, UserError
from ..progress import pct
from ..registry import or_list
from ..runtime.backends import backend_specs, compared_specs

ORT = "ort"  # --backend ort: ONNX Runtime in --ort-mode; ort-MODE names the mode


def ort_modes() -> dict[str, str]:
    """--ort-mode → the backend it picks (each backend's `ort_mode`)."""
    return {s.ort_mode: s.name for s in backend_specs() if s.ort_mode}


def _choices() -> dict[str, str]:
    """--backend (other than plain `ort`) → the backend it runs."""
    choices = {s.name: s.name for s in compared_specs()}
    choices.update({f"{ORT}-{mode}": name for mode, name in ort_modes().items()})
    return choices


def _resolve_backend(backend: str, ort_mode: str) -> str:
    modes = ort_modes()
    if ort_mode not in modes:
        raise UserError(f"--ort-mode must be {or_list(sorted(modes))}, got '{ort_mode}'")
    if backend == ORT:
        return modes[ort_mode]
    choices = _choices()
    if backend not in choices:
        raise UserError(f"unknown --backend '{backend}' (expected {or_list(sorted({ORT, *choices}))})")
    return choices[backend]


def validate_backend(bundle: Path, *, backend: str, ort_mode: str, data: str | None, limit: int | None, cosine_min: float | None,
                     top1_agreement_min: float | None, tie_cosine: float | None, precision: str | None, device: str,
                     workers: int | None, show: Callable[[dict], None]) -> dict:
    """The validation report (also written to the bundle); `show` gets it before a failed check is
    raised, so it is printed either way."""
    from ..runtime.validate import validate_bundle

    backend = _resolve_backend(backend, ort_mode)
    r = validate_bundle(bundle, backend, data, limit, cosine_min, top1_agreement_min, tie_cosine, device=device, workers=workers,
                        precision=precision)
    show(r)
    if not r["passed"]:
        t = r["thresholds"]
        raise CheckFailed(f"{r['backend']} does not match the reference: {r['compared']} cosine_min {r['cosine_min']:.6f} (need {t['cosine_min']}), "
                          f"top-1 agreement {pct(r['top1_agreement'])} (need {pct(t['top1_agreement_min'])})")
    return r
