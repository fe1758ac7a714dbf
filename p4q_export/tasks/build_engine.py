"""`build-engine`: TensorRT engines for this GPU from a bundle's graphs, each recorded in the bundle
manifest and validated against the PyTorch reference like `validate --backend trt`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import CheckFailed, UserError


def build_engines(bundle: Path, *, int8: bool, fp16: bool, workspace_gb: float, batch: str | None, min_batch: int,
                  opt_batch: int, max_batch: int, timing_cache: Path | None, tf32: bool, validate: bool, data: str | None,
                  show: Callable[[dict], None]) -> dict:
    """Build the INT8 and/or FP16 engine and validate each; `show` gets the result before an engine
    that fails validation raises CheckFailed, so it is printed either way."""
    from ..runtime.trt_engine import (
        BuildOptions,
        builder_setup,
        parse_batch_profile,
        require_tensorrt,
    )
    from ..runtime.trt_engine import build_engine as build

    if not (int8 or fp16):
        raise UserError("build-engine needs --int8 (the INT8 engine), --fp16 (the FP16 twin), or both")
    if batch:
        min_batch, opt_batch, max_batch = parse_batch_profile(batch)
    kinds = [k for k, on in (("int8", int8), ("fp16", fp16)) if on]
    from ..deploy.bundle import load_bundle

    graphs = load_bundle(bundle).graphs  # a wrong or edited bundle is said before a missing TensorRT
    trt = require_tensorrt()  # the install hint before anything slow
    for kind in kinds:  # refuse what this TensorRT cannot build before building anything
        builder_setup(trt.__version__, kind, graphs)
    options = [BuildOptions(engine=k, workspace_gb=workspace_gb, min_batch=min_batch, opt_batch=opt_batch,
                            max_batch=max_batch, timing_cache=str(timing_cache) if timing_cache else None, tf32=tf32)
               for k in kinds]
    engines = []
    for opts in options:
        entry = build(bundle, opts)
        engines.append({"engine": entry, **({"validation": _validate(bundle, entry, data)} if validate else {})})
    # engine/validation: the first (INT8 where built), as before; engines: every one
    result = {"bundle": str(bundle), **engines[0], "engines": engines}
    show(result)
    failed = [e for e in engines if e.get("validation", {}).get("passed") is False]
    if failed:
        raise CheckFailed(f"engine {failed[0]['engine']['path']} does not match the PyTorch reference: {failed[0]['validation']}")
    return result


def _validate(bundle: Path, entry: dict, data: str | None) -> dict:
    """The export engineer's validation (same as `validate --backend trt`)."""
    from ..runtime.validate import validate_bundle

    return validate_bundle(bundle, backend="trt", data=data, precision=entry["precision"], engine_path=entry["path"])
