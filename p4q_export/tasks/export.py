"""`export`: a RUN or a MODEL to a bundle. The library (deploy/export_bundle.py) checks and writes
it; the task maps the command's options onto it."""

from __future__ import annotations

from pathlib import Path


def export_to_bundle(source: str, out: Path, *, profile: str | None, data: str | None, calib_images: int, uint8_input: bool,
                     embedding: bool, keep_fp: list[str] | None, precision: str | None, force: bool, device: str,
                     workers: int | None) -> dict:
    from ..deploy.export_bundle import export_bundle

    return export_bundle(source, out, profile=profile, data=data, calib_images=calib_images, uint8_input=uint8_input,
                         with_embedding=embedding, force=force, device=device, workers=workers, keep_fp=keep_fp or None,
                         precision=precision)
