"""Error types the CLI maps to exit codes (docs/usage.md: 2 = bad input, 1 = a check failed, 128 + N = signal N)."""

import contextlib
import signal
import threading


class UserError(Exception):
    """Bad input: the CLI prints the message as one line and exits 2."""


class CheckFailed(Exception):
    """A validation or acceptance check did not hold: the CLI exits 1."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the process: the CLI stops at once and exits 128 + the signal.
    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way swallows it, but
    not a KeyboardInterrupt, which typer turns into a returned exit code."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_pending_signal: int | None = None


def note_signal(signum: int) -> None:
    """The CLI's signal handler records the signal before raising Interrupted: a raise that lands in
    a finalizer or a weakref callback is printed as "Exception ignored" and lost, and the work would
    go on. Long loops call `raise_if_interrupted` and raise it again there."""
    global _pending_signal
    _pending_signal = signum


def pending_signal() -> int | None:
    return _pending_signal


def raise_if_interrupted() -> None:
    if _pending_signal is not None:
        raise Interrupted(_pending_signal)


@contextlib.contextmanager
def signals_held():
    """SIGINT/SIGTERM that arrive inside the block run their handler once it has finished.

    For short writes that must not stop half-way: a handler that raises inside torch.save's
    write callback is turned by its C++ writer into a RuntimeError ("unexpected pos") and the
    interrupt is lost. A signal mask would not do: any of torch's threads may take the signal.
    Outside the main thread (where handlers cannot change) the block runs unguarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: arrived.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)
