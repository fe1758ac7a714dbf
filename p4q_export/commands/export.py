"""`export` command (placeholder until its issue lands)."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from ..errors import UserError


def export(
    args: Annotated[Optional[List[str]], typer.Argument(help="Not built yet.")] = None,
) -> None:
    """Not built yet."""
    raise UserError("'export' is not built yet in this version of p4q-export")
