"""Error types the CLI maps to exit codes (see shared CONTRACT: 2 = bad input, 1 = a check failed)."""


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


def raise_if_interrupted() -> None:
    if _pending_signal is not None:
        raise Interrupted(_pending_signal)
