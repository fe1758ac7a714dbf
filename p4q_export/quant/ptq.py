"""One call from a loaded CLIP to a calibrated PTQ model, with a reproducible calibration list."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..config import CALIB_IMAGES, CALIB_SEED
from ..data import (
    ImageDataset,
    calibration_indices,
    dataset_templates,
    image_batches,
    write_calibration_list,
)
from ..data.samplers import calibration_list_hash
from ..models import LoadedModel
from ..progress import log, slow_step
from .clip import calibrate_clip, quant_layers, quantize_clip
from .profiles import QuantProfile


def caption_tokens(loaded: LoadedModel, dataset: ImageDataset) -> torch.Tensor:
    """Tokenized template captions of every class: the text tower's calibration set."""
    captions = [t.format(c) for c in dataset.classnames for t in dataset_templates(dataset)]
    return loaded.tokenizer(captions)


def build_ptq_model(
    loaded: LoadedModel,
    profile: QuantProfile,
    quantize_text: bool,
    calib: ImageDataset,
    n_calib: int = CALIB_IMAGES,
    seed: int = CALIB_SEED,
    calibration_dir: Path | str = "calibration",
    batch_size: int = 128,
    workers: int | None = None,
    keep_fp: list[str] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Quantize `loaded.model` IN PLACE (copy it first if the FP model is still needed as a separate
    object; `quantization_disabled` gives the FP forward back) and calibrate it on `n_calib`
    seeded training images, streamed in batches to the model's device (`workers` decode image
    files; `keep_fp` patterns name layers left FP). Returns (model, info) with what a run manifest records."""
    from ..devices import module_device

    if calib.split != "train":
        log(f"warning: calibrating on the '{calib.split}' split; the train split keeps test data untouched")
    idx = calibration_indices(len(calib), n_calib, seed)
    list_path = write_calibration_list(calib, idx, calibration_dir, seed)
    tokens = caption_tokens(loaded, calib) if quantize_text else None
    model = quantize_clip(loaded.model, profile, quantize_text=quantize_text, keep_fp=keep_fp)
    images = image_batches(calib, loaded.preprocess, batch_size, module_device(model), indices=idx, workers=workers)
    # said once it takes a while: a damaged image among the first is then the only line
    with slow_step(f"calibrating {len(quant_layers(model))} quantized layers ({profile.name} W{profile.w_bits}A{profile.a_bits}) "
                   f"on {len(idx)} images"):
        calibrate_clip(model, images, tokens, batch_size=batch_size)
    info = {
        "profile": profile.name,
        "bits": profile.bits,
        "profile_settings": profile.as_dict(),
        "quantize_text": bool(quantize_text),
        "n_quant_layers": len(quant_layers(model)),
        "keep_fp": list(model.p4q_keep_fp),
        "n_calib": len(idx),
        "calib_seed": int(seed),
        "calibration_list": str(list_path),
        "calibration_sha256": calibration_list_hash(calib, idx),
        "calibration_file_sha256": hashlib.sha256(Path(list_path).read_bytes()).hexdigest(),
        "n_text_captions": 0 if tokens is None else len(tokens),
    }
    return model, info
