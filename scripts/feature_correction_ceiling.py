"""Where a low-bit setting loses its accuracy, and how much any correction of the image feature
could win back: the ceiling P4Q's adapter works under.

    python scripts/feature_correction_ceiling.py [recipe] [--set key=value ...]

Prints top-1 on the recipe's evaluation split for: FP image + FP text (FP zero-shot), quantized
image + FP text (the loss that is the image tower's), and quantized image features corrected by
the best linear map onto the FP features (ridge regression, fitted on the 16-shot images or on the
unlabeled calibration images) with the FP text classifier. The W4A4 diagnosis in docs/testbeds.md comes
from `python scripts/feature_correction_ceiling.py recipes/testbed-p4q-w4a4.yaml`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from p4q_export.config import TrainRecipe, load_recipe
from p4q_export.data import few_shot_indices
from p4q_export.data.samplers import calibration_indices
from p4q_export.p4q.distributed import DistContext
from p4q_export.p4q.features import CachedFeatures, ImageSource
from p4q_export.p4q.prepare import prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default="recipes/testbed-p4q-w4a4.yaml")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, ["model=testbed", *args.overrides], TrainRecipe)
    prep = prepare(recipe, Path(tempfile.mkdtemp(prefix="ceiling-")), DistContext())
    ev = prep.eval
    quantized = F.normalize(ev.student, dim=-1)

    def top1(image: torch.Tensor) -> float:
        return float(((image @ prep.teacher_text.T).argmax(1) == ev.labels).float().mean())

    print(f"FP image + FP text          {top1(ev.fp):.4f}")
    print(f"PTQ (both towers quantized)  {prep.zero_shot['ptq_zeroshot']:.4f}")
    print(f"quantized image + FP text    {top1(quantized):.4f}")
    pools = {
        f"{recipe.shots}-shot images (seed {recipe.seed})": few_shot_indices(prep.train_ds.labels, recipe.shots, recipe.seed),
        f"{recipe.calib_images} calibration images": calibration_indices(len(prep.train_ds), recipe.calib_images, recipe.calib_seed),
    }
    for name, idx in pools.items():
        feats = CachedFeatures(prep.model, ImageSource(prep.train_ds.subset(idx), prep.loaded.preprocess), 1, True)
        x = F.normalize(feats.student.reshape(-1, feats.student.shape[-1]), dim=-1)
        t = feats.teacher.reshape(-1, feats.teacher.shape[-1])
        for ridge in (1e-3, 1e-1, 1.0):
            w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1]), x.T @ t)
            print(f"linear correction fitted on {name}, ridge {ridge:g}: {top1(F.normalize(quantized @ w, dim=-1)):.4f}")


if __name__ == "__main__":
    main()
