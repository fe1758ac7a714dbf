"""Progress bars on stderr (rich), silent when stderr is not a terminal-friendly place."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def _enabled() -> bool:
    return os.environ.get("P4Q_NO_PROGRESS", "") == "" and sys.stderr.isatty()


def progress_iter(items: Iterable[T], desc: str = "", total: int | None = None) -> Iterable[T]:
    if not _enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(desc, total=total)
        for item in items:
            yield item
            bar.advance(task)


def log(msg: str) -> None:
    """Human-readable status on stderr (stdout is reserved for --json)."""
    print(msg, file=sys.stderr, flush=True)
