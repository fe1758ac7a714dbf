"""`build-engine`: a TensorRT engine for this GPU from a bundle's QDQ graph, recorded in the
bundle manifest, then validated against the PyTorch reference like `validate --backend trt`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ._common import DataOpt, JsonOpt, emit


def build_engine(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `p4q-export export`).")],
    int8: Annotated[bool, typer.Option("--int8", help="Build from the QDQ graph: INT8 where the graph quantizes (strongly typed).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16 for unquantized layers (with --int8), or an FP16 engine of the Q/DQ-stripped graph (alone).")] = False,
    workspace_gb: Annotated[float, typer.Option("--workspace-gb", help="Builder workspace limit in GiB.")] = 4.0,
    batch: Annotated[str | None, typer.Option("--batch", help="Batch profile min,opt,max, e.g. 1,8,32.")] = None,
    min_batch: Annotated[int, typer.Option("--min-batch")] = 1,
    opt_batch: Annotated[int, typer.Option("--opt-batch")] = 8,
    max_batch: Annotated[int, typer.Option("--max-batch")] = 32,
    timing_cache: Annotated[Path | None, typer.Option("--timing-cache", help="Tactic timing cache to load and update (default: beside the engine).")] = None,
    validate: Annotated[bool, typer.Option("--validate/--no-validate", help="Compare the engine with the PyTorch reference after building.")] = True,
    data: DataOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build a TensorRT engine on this GPU: BUNDLE/engines/<gpu>-trt<version>.plan + a manifest entry."""
    from ..runtime.trt_engine import BuildOptions, parse_batch_profile, require_tensorrt
    from ..runtime.trt_engine import build_engine as build

    if not (int8 or fp16):
        raise UserError("build-engine needs --int8 (and optionally --fp16), or --fp16 for an FP16 engine")
    require_tensorrt()  # the install hint before anything slow
    if batch:
        min_batch, opt_batch, max_batch = parse_batch_profile(batch)
    options = BuildOptions(int8=int8, fp16=fp16, workspace_gb=workspace_gb, min_batch=min_batch, opt_batch=opt_batch,
                           max_batch=max_batch, timing_cache=str(timing_cache) if timing_cache else None)
    entry = build(bundle, options)
    result = {"bundle": str(bundle), "engine": entry}
    if validate:
        result["validation"] = _validate(bundle, entry, data)
    emit(result, json_out, lambda r: f"wrote {bundle / entry['path']} ({entry['gpu']}, TensorRT {entry['tensorrt']}, "
         f"{entry['precision']}, {entry['build_seconds']} s)"
         + (f"; validation passed={r['validation'].get('passed')}" if r.get("validation") else ""))
    if validate and result["validation"].get("passed") is False:
        from ..errors import CheckFailed

        raise CheckFailed(f"engine {entry['path']} does not match the PyTorch reference: {result['validation']}")


def _validate(bundle: Path, entry: dict, data: str | None) -> dict:
    """The export engineer's validation (same as `validate --backend trt`)."""
    from ..runtime.validate import validate_bundle

    return validate_bundle(bundle, backend="trt", data=data, precision=entry["precision"])
