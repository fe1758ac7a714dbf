"""`train`: P4Q (learned prompts + QAdapter on a PTQ CLIP) or the FP CoOp baseline.

Resumes from RUN/checkpoint.pt when it exists (same command after an interruption); runs under
`torchrun --nproc_per_node N` unchanged (rank 0 prints and writes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..progress import pct
from ._common import AmpOpt, DeviceOpt, JsonOpt, WorkersOpt, emit, set_interrupt_note


def _human(d: dict) -> str:
    acc = d["accuracy"]
    trained = f"{d['trained_mean_std']}%" if "trained_mean_std" in d else pct(acc.get("trained"))
    return (f"{d['method']}: trained top-1 {trained} (FP zero-shot {pct(acc.get('fp_zeroshot'))}, "
            f"PTQ zero-shot {pct(acc.get('ptq_zeroshot'))}) on {d['n_eval']} {d.get('eval_images', d['eval_split'])} images, "
            f"{d['seconds']:.1f}s on {d.get('device', 'cpu')} -> {d['out']}")


def train(
    out: Annotated[Path, typer.Option("--out", help="Run directory (checkpoint.pt, metrics.json, run.json): a new or empty folder, or a run to resume; a folder of other files is refused.")],
    recipe: Annotated[Path | None, typer.Option("--recipe", help="YAML recipe, e.g. recipes/testbed-p4q-w8a8.yaml.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe key: --set epochs=10.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="p4q (default) or coop (FP learnable prompts).")] = None,
    shots: Annotated[int | None, typer.Option("--shots", help="Training images per class.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Few-shot sample and initialisation seed.")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Several seeds, e.g. 1,2,3: reported as mean ± std.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start over instead of resuming from OUT's checkpoint.")] = False,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    amp: AmpOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train P4Q prompts + QAdapter on a quantized CLIP (or CoOp on the FP one); resumes after interruptions."""
    from ..tasks.train import train_recipe

    set_interrupt_note(f"{out} keeps the checkpoint of the last finished epoch, if any: the same command resumes from there")
    result = train_recipe(out, recipe=recipe, overrides=set_, method=method, shots=shots, seed=seed, seeds=seeds, force=force,
                          device=device, workers=workers, amp=amp)
    if result is not None:  # None on a non-zero torchrun rank: rank 0 reports
        emit(result, json_out, _human)
