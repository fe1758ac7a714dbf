"""Image-tower families: what each kind of CLIP image tower needs before its Linear and Conv2d
layers can be quantized as layers (attention that reads projection weights directly rewritten as
explicit layers). Adding a family is one module with a `FAMILY` and a line in `FAMILIES`.

Everything else is shared by every family (`prepare_image_tower`): timm's reparameterization and
BatchNorm folding (quant/reparam.py), then one traced forward that lists the layers the tower
really calls, in network order: the one list of what gets quantized.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class TowerFamily:
    name: str
    matches: Callable[[nn.Module], bool]  # the CLIP's .visual
    prepare: Callable[[nn.Module], int]  # in place; returns how many modules it rewrote

    def describe(self, visual: nn.Module) -> str:
        trunk = getattr(visual, "trunk", None)
        return f"{self.name}:{type(trunk).__name__}" if trunk is not None else self.name


def _families() -> list[TowerFamily]:
    from . import modified_resnet, openclip_vit, timm_trunk

    return [openclip_vit.FAMILY, modified_resnet.FAMILY, timm_trunk.FAMILY]


FAMILIES = _families()


def family_of(visual: nn.Module) -> TowerFamily | None:
    return next((f for f in FAMILIES if f.matches(visual)), None)
