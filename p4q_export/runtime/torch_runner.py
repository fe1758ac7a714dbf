"""The PyTorch reference: the fake-quant image tower + adapter + folded head, rebuilt from the
bundle's reference.pt (a plain state dict, loaded with weights_only=True) and its config."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError


class TorchRunner:
    backend = "torch"

    def __init__(self, bundle, threads: int | None = None, precision: str = "int8"):
        """precision int8: the fake-quant reference; fp32: the same module with every quantizer
        off, i.e. the FP model in PyTorch eager (the baseline `bench` compares against)."""
        from ..deploy.fold import rebuild_reference
        from ..quant import fake_quantizers

        if precision not in ("int8", "fp32"):
            raise UserError(f"the torch backend runs int8 (fake-quant reference) or fp32, not {precision!r}")

        if threads:
            torch.set_num_threads(int(threads))
        try:
            state = torch.load(bundle.reference_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"{bundle.reference_path} is not a readable state dict ({type(exc).__name__})") from None
        self.model = rebuild_reference(bundle.manifest["reference"]["config"], state)
        self.precision = precision
        if precision == "fp32":
            for q in fake_quantizers(self.model).values():
                q.enabled = False

    @property
    def logit_scale(self) -> float:
        return self.model.head.logit_scale

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run_all(images)["logits"]

    def run_all(self, images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(images)))
        names = ("logits", "embedding")  # DeployModel's output order, as exported
        out = out if isinstance(out, tuple) else (out,)
        return {name: o.float().numpy() for name, o in zip(names, out)}
