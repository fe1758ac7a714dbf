"""The PyTorch reference: the fake-quant image tower + adapter + folded head, rebuilt from the
bundle's reference.pt (a plain state dict, loaded with weights_only=True) and its config."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError


class TorchRunner:
    backend = "torch"

    def __init__(self, bundle, threads: int | None = None):
        from ..deploy.fold import rebuild_reference

        if threads:
            torch.set_num_threads(int(threads))
        try:
            state = torch.load(bundle.reference_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"{bundle.reference_path} is not a readable state dict ({type(exc).__name__})") from None
        self.model = rebuild_reference(bundle.manifest["reference"]["config"], state)
        self.precision = "int8"  # fake-quantized: INT8 numerics computed in float

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(images)))
        out = out[0] if isinstance(out, tuple) else out
        return out.float().numpy()
