"""`predict`: top-k labels for PNG/JPEG files with a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..runtime.backends import DEFAULT, choices_help
from ._common import DeviceOpt, JsonOpt, emit


def predict(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="An exported bundle directory.")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Image files (PNG, JPEG, ...).")],
    top_k: Annotated[int, typer.Option("--top-k", help="Labels per image.")] = 5,
    backend: Annotated[str, typer.Option("--backend", help=choices_help(notes={DEFAULT: "default"}) + ".")] = DEFAULT,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Top-k labels and softmax scores for each image."""
    from ..tasks.predict import predict_images

    r = predict_images(bundle, images, top_k=top_k, backend=backend, device=device)
    emit(r, json_out, lambda d: "\n".join(
        f"{p['file']}: " + ", ".join(f"{l} {s:.3f}" for l, s in zip(p["labels"], p["scores"])) for p in d["predictions"]))
