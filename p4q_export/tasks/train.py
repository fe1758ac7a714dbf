"""`train`: the command's options as recipe overrides, then P4Q (or CoOp) for each seed; resumes
from OUT's checkpoint and runs under torchrun unchanged (rank 0 reports)."""

from __future__ import annotations

import re
from pathlib import Path

from ..config import TrainRecipe, comma_list, load_recipe
from ..errors import UserError


def _parse_seeds(text: str) -> list[int]:
    parts = comma_list(text, "--seeds", "1,2,3")
    if not all(re.fullmatch(r"-?[0-9]+", p) for p in parts):
        raise UserError(f"--seeds expects integers joined by commas (e.g. 1,2,3), got '{text}'")
    return [int(p) for p in parts]


def train_recipe(out: Path, *, recipe: Path | None, overrides: list[str] | None, method: str | None, shots: int | None,
                 seed: int | None, seeds: str | None, force: bool, device: str, workers: int | None, amp: bool) -> dict | None:
    """The run's metrics and OUT; None on a non-zero torchrun rank."""
    from ..p4q.distributed import shutdown_distributed
    from ..p4q.trainer import train_run

    overrides = list(overrides or [])
    if method is not None:
        overrides.append(f"method={method}")
    if shots is not None:
        overrides.append(f"shots={shots}")
    if seed is not None:
        overrides.append(f"seed={seed}")
    if amp:
        overrides.append("amp=true")
    r = load_recipe(recipe, overrides, TrainRecipe)
    if seeds is not None:
        r.seeds = _parse_seeds(seeds)
    try:
        metrics = train_run(r, out, force=force, device=device, workers=workers)
    finally:
        shutdown_distributed()
    return None if metrics is None else {**metrics, "out": str(out)}
