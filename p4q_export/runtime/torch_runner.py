"""The PyTorch reference: the fake-quant image tower + adapter + folded head, rebuilt from the
bundle's reference.pt (a plain state dict, loaded with weights_only=True) and its config.

Runs on the CPU or a CUDA device; outputs always come back as float32 numpy on the host.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError

PRECISIONS = ("int8", "fp32", "fp16", "bf16")
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner:
    backend = "torch"

    def __init__(self, bundle, threads: int | None = None, precision: str = "int8", device="cpu"):
        """precision int8: the fake-quant reference (FP32 arithmetic, TF32 off on a GPU); fp32: the
        same module with every quantizer off, i.e. the FP model in PyTorch eager (the baseline
        `bench` compares against); fp16 / bf16: that FP model cast to half precision.
        device: cpu, cuda, cuda:N or auto (devices.resolve_device; UserError without a GPU)."""
        from ..deploy.fold import rebuild_reference
        from ..devices import resolve_device
        from ..quant import fake_quantizers

        if precision not in PRECISIONS:
            raise UserError(f"the torch backend runs {', '.join(PRECISIONS)} (int8 = the fake-quant reference), not {precision!r}")
        self.device = resolve_device(str(device))
        if threads:
            torch.set_num_threads(int(threads))
        try:
            state = torch.load(bundle.reference_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"{bundle.reference_path} is not a readable state dict ({type(exc).__name__})") from None
        model = rebuild_reference(bundle.manifest["reference"]["config"], state)
        self.precision = precision
        if precision != "int8":
            for q in fake_quantizers(model).values():
                q.enabled = False
        self.dtype = _HALF.get(precision, torch.float32)
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
            if model.input_norm is not None:
                # uint8 → (x/255 − mean)/std stays FP32 (as exported), then the tower's dtype
                model.input_norm.float()
                dtype = self.dtype
                model.input_norm.register_forward_hook(lambda _m, _i, out: out.to(dtype))
        self.model = model.to(self.device)

    @property
    def logit_scale(self) -> float:
        return self.model.head.logit_scale

    def to_device(self, images: np.ndarray) -> torch.Tensor:
        """Bundle input → the tensor the model takes, on its device (the host→device copy)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return x.to(self.dtype) if x.is_floating_point() else x  # uint8 input stays uint8

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Device tensor in, device tensors out (logits[, embedding]): what GPU timing measures."""
        with torch.inference_mode():
            out = self.model(x)
        return out if isinstance(out, tuple) else (out,)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run_all(images)["logits"]

    def run_all(self, images: np.ndarray) -> dict[str, np.ndarray]:
        names = ("logits", "embedding")  # DeployModel's output order, as exported
        out = self.forward(self.to_device(images))
        return {name: o.float().cpu().numpy() for name, o in zip(names, out)}
