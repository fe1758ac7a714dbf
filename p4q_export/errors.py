"""Error types the CLI maps to exit codes (see shared CONTRACT: 2 = bad input, 1 = a check failed)."""


class UserError(Exception):
    """Bad input: the CLI prints the message as one line and exits 2."""


class CheckFailed(Exception):
    """A validation or acceptance check did not hold: the CLI exits 1."""
