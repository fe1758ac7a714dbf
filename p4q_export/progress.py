"""Progress on stderr: rich bars on a terminal, plain timed lines in a log; and the number format of
every human summary."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from .errors import raise_if_interrupted

T = TypeVar("T")


PLAIN_EVERY_S = 10.0  # without a terminal: a progress line this often, and none for shorter loops


def progress_iter(items: Iterable[T], desc: str = "", total: int | None = None) -> Iterable[T]:
    """`items`, with a bar on a terminal's stderr, or a plain line every PLAIN_EVERY_S seconds when
    stderr is a log file or a pipe (CI, nohup, a scheduler), so a long step never looks hung.
    P4Q_NO_PROGRESS=1 silences both."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if os.environ.get("P4Q_NO_PROGRESS", "") != "":
        shown = iter(items)
    elif not sys.stderr.isatty():
        shown = _plain(items, desc, total)
    else:
        shown = _bar(items, desc, total)
    for item in shown:
        raise_if_interrupted()  # an interrupt swallowed as "Exception ignored" still stops the loop
        yield item


def _plain(items: Iterable[T], desc: str, total: int | None) -> Iterable[T]:
    start = last = time.monotonic()
    n = 0
    for item in items:
        yield item
        n += 1
        now = time.monotonic()
        if now - last >= PLAIN_EVERY_S:
            last = now
            done = now - start
            left = f", about {done / n * (total - n):.0f}s left" if total else ""
            log(f"{desc}: {n}/{total if total else '?'} after {done:.0f}s{left}")
    if last > start:  # said something on the way: say it finished
        log(f"{desc}: {n}/{total if total else n} done in {time.monotonic() - start:.0f}s")


def _bar(items: Iterable[T], desc: str, total: int | None) -> Iterable[T]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(desc, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def slow_step(what: str, after_s: float = 10.0) -> Iterator[None]:
    """Says `what ...` on stderr once the block has run `after_s` seconds, and when it ends: a long
    step (building a large model) is visible, a quick one or one refused at once stays silent, so a
    bad input is still exactly one line."""
    if os.environ.get("P4Q_NO_PROGRESS", "") != "":
        yield
        return
    start = time.monotonic()
    said = threading.Event()
    lock = threading.Lock()
    ended = False

    def say() -> None:
        with lock:  # never after the block has ended: the error line, if any, is the last line
            if not ended:
                said.set()
                log(f"{what} ...")

    timer = threading.Timer(after_s, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            ended = True
        timer.cancel()
    if said.is_set():
        log(f"{what}: done in {time.monotonic() - start:.0f}s")


def log(msg: str) -> None:
    """Human-readable status on stderr (stdout is reserved for --json)."""
    print(msg, file=sys.stderr, flush=True)


def pct(fraction: float | None) -> str:
    """An accuracy or agreement as every command prints it: 96.00%."""
    return "n/a" if fraction is None else f"{100 * fraction:.2f}%"
