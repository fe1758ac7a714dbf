"""QAdapter (official P4Q): a bottleneck MLP on the image feature, mixed into it residually.

    f' = normalize(ratio · out_fc(relu(in_fc(f))) + (1 − ratio) · f)

in_fc is d → d/reduction (with bias), out_fc d/reduction → d. With a quantization profile both
layers are QuantLinear with their own bits (8-bit weights and activations by default); a
deployable profile's weight grid caps the weights (ort-x86: 7 bits, the towers' grid), so the
adapter runs on the same kernels as the rest of the exported graph. As in the
official code the adapter trains in full precision and is calibrated on the training features
afterwards (`calibrate`), which fixes its activation ranges and switches its quantization on.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def feature_dim(model: nn.Module) -> int:
    """Width of the CLIP embedding the adapter works on (the image tower's output)."""
    from ..models.text import text_tower

    dim = getattr(model.visual, "output_dim", None)
    if dim is None:
        proj = text_tower(model).text_projection
        dim = proj.out_features if isinstance(proj, nn.Module) else proj.shape[1]
    return int(dim)


class QAdapter(nn.Module):
    def __init__(self, dim: int, reduction: int = 4, ratio: float = 0.2, profile=None, bits: int = 8):
        super().__init__()
        hidden = max(1, dim // reduction)
        in_fc, out_fc = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        if profile is not None:
            from ..quant import QuantLinear

            w_bits = min(bits, profile.w_bits) if profile.exportable else bits
            in_fc = QuantLinear.from_linear(in_fc, profile, w_bits=w_bits, a_bits=bits)
            out_fc = QuantLinear.from_linear(out_fc, profile, w_bits=w_bits, a_bits=bits)
        self.fc = nn.Sequential(OrderedDict([("in_fc", in_fc), ("relu", nn.ReLU()), ("out_fc", out_fc)]))
        self.ratio = ratio
        self.quantized = profile is not None

    def quantizers(self) -> list[nn.Module]:
        from ..quant import FakeQuantizer

        return [m for m in self.modules() if isinstance(m, FakeQuantizer)]

    def set_quantization(self, enabled: bool) -> None:
        for q in self.quantizers():
            q.enabled = enabled

    @torch.no_grad()
    def calibrate(self, features: torch.Tensor) -> None:
        """Observe the layers' inputs on the FP forward of `features` (raw image features), as the
        towers are calibrated (`calibrating`), fix the weights' scales, and switch quantization on."""
        if not self.quantized:
            return
        from ..quant import calibrating

        with calibrating(self):
            self.fc(features)
        self.set_quantization(True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mixed = self.ratio * self.fc(features) + (1.0 - self.ratio) * features
        return F.normalize(mixed, dim=-1)
