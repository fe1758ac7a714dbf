"""Shared CLI plumbing: the --json option, output on stdout, options reused across commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout (logs go to stderr).")]
DataOpt = Annotated[str | None, typer.Option("--data", help="Dataset SPEC: fashion-mnist[:DIR], mnist, digits, imagefolder:DIR, coop:DIR.")]

DeviceOpt = Annotated[str, typer.Option("--device", help="Where the model runs: auto (CUDA when there is a GPU), cpu, cuda or cuda:N.")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", min=0, help="Processes decoding image files (default: one per core, up to 8; 0 = in this process).")]
AmpOpt = Annotated[bool, typer.Option("--amp", help="bf16 autocast for the frozen full-precision forwards (teacher, FP features); the quantized model stays FP32.")]

_global_json = False
_interrupt_note = "nothing was kept (artifacts are renamed into place only when complete)"


def set_interrupt_note(note: str) -> None:
    """What a command keeps if it is interrupted, said on the way out (train: its checkpoint)."""
    global _interrupt_note
    _interrupt_note = note


def interrupt_note() -> str:
    return _interrupt_note


def set_global_json(value: bool) -> None:
    global _global_json
    _global_json = value


def json_mode(as_json: bool) -> bool:
    return as_json or _global_json


def emit(result: dict, as_json: bool, human: Callable[[dict], str] | None = None) -> None:
    """JSON (one object) on stdout when asked; otherwise a human summary on stdout."""
    if json_mode(as_json):
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        text = human(result) if human else json.dumps(result, indent=2, default=str)
        sys.stdout.write(text.rstrip() + "\n")
    sys.stdout.flush()
