"""`build-engine`: a TensorRT engine for this GPU from a bundle's QDQ graph, recorded in the
bundle manifest, then validated against the PyTorch reference like `validate --backend trt`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import DataOpt, JsonOpt, emit


def build_engine(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `p4q-export export`).")],
    int8: Annotated[bool, typer.Option("--int8", help="The INT8 engine, from the bundle's int8-fp16 graph (strongly typed: "
                                       "the graph's types decide every layer) on TensorRT 10 and 11.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="The FP16 engine, from the bundle's FP16 twin (no Q/DQ), to compare INT8 "
                                       "with on this GPU. With --int8, both engines.")] = False,
    workspace_gb: Annotated[float, typer.Option("--workspace-gb", help="Builder workspace limit in GiB.")] = 4.0,
    batch: Annotated[str | None, typer.Option("--batch", help="Batch profile min,opt,max, e.g. 1,8,32.")] = None,
    min_batch: Annotated[int, typer.Option("--min-batch")] = 1,
    opt_batch: Annotated[int, typer.Option("--opt-batch")] = 8,
    max_batch: Annotated[int, typer.Option("--max-batch")] = 32,
    timing_cache: Annotated[Path | None, typer.Option("--timing-cache", help="Tactic timing cache to load and update (default: beside the engine).")] = None,
    tf32: Annotated[bool, typer.Option("--tf32/--no-tf32", help="TF32 for the layers that run in FP32, as TensorRT's and trtexec's "
                                       "default builds (recorded in the engine entry).")] = True,
    validate: Annotated[bool, typer.Option("--validate/--no-validate", help="Compare the engine with the PyTorch reference after building.")] = True,
    data: DataOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build TensorRT engines on this GPU: BUNDLE/deploy/engines/<gpu>-trt<version>[-fp16].plan + manifest entries.

    TensorRT 10 and 11 build the bundle's graphs strongly typed; the builder flags are used only
    where a TensorRT version still needs them (8.6, or TensorRT 10 with a bundle exported before
    --precision). Each entry records the graph and TensorRT version that made it."""
    from ..tasks.build_engine import build_engines

    build_engines(bundle, int8=int8, fp16=fp16, workspace_gb=workspace_gb, batch=batch, min_batch=min_batch, opt_batch=opt_batch,
                  max_batch=max_batch, timing_cache=timing_cache, tf32=tf32, validate=validate, data=data,
                  show=lambda r: emit(r, json_out, _human))


def _human(r: dict) -> str:
    return "; ".join(
        f"wrote {Path(r['bundle']) / e['engine']['path']} ({e['engine']['gpu']}, TensorRT {e['engine']['tensorrt']}, {e['engine']['precision']} "
        f"from {e['engine']['graph']}, {e['engine']['build_seconds']} s)"
        + (f", validation passed={e['validation'].get('passed')}" if e.get("validation") else "") for e in r["engines"])
