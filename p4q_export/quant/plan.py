"""The one list of what gets quantized in an image tower, shared by the quantizer, `keep_fp`, the
lint, `inspect` and the manifest.

The tower is first put in its deployed form (family rewrites, reparameterization, BatchNorm
folding: towers/ and reparam.py); then one traced forward lists every nn.Linear and nn.Conv2d it
really calls, in call order. Layers the forward never reaches (a timm classifier left in place)
are not candidates, nor layers inside an nn.MultiheadAttention (which reads their weights
directly), nor subclasses with a forward of their own (`quantizable`). The first convolution called reads the image: it stays FP unless the
profile quantizes the patch embedding (TensorRT runs a 3-channel INT8 conv poorly, and it is
<1% of the work).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .reparam import deploy_form, tower_image_size
from .towers import FAMILIES, family_of

_LAYERS = (nn.Linear, nn.Conv2d)


def prepare_image_tower(visual: nn.Module) -> dict:
    """In place, once: the family's rewrites and the deployed form. Returns (and keeps on
    `visual.p4q_tower`) what was done: family, rewritten modules, reparameterized, folded."""
    done = getattr(visual, "p4q_tower", None)
    if done is not None:
        return done
    family = family_of(visual)
    if family is None:
        names = ", ".join(f.name for f in FAMILIES)
        raise UserError(f"image tower {type(visual).__name__} is not a supported family ({names}): "
                        "p4q-export quantizes open_clip ViT, ModifiedResNet and timm towers")
    info = {"family": family.describe(visual), "rewritten_modules": family.prepare(visual)}
    info.update(deploy_form(visual))
    visual.p4q_tower = info
    return info


def quantizable(layer: nn.Module) -> bool:
    """An nn.Linear / nn.Conv2d that computes what the quantized layer computes: a subclass that
    overrides forward (timm's Conv2dSame, StdConv2d: dynamic padding, weight standardization) or a
    conv with non-zero padding mode would lose that, so it stays FP."""
    for base in _LAYERS:
        if isinstance(layer, base):
            same = type(layer).forward is base.forward
            return same and getattr(layer, "padding_mode", "zeros") == "zeros"
    return False


def _inside_mha(name: str, mha_names: list[str]) -> bool:
    return any(name.startswith(m + ".") for m in mha_names)


@torch.no_grad()
def called_layers(visual: nn.Module) -> list[str]:
    """Names (under `visual`) of the Linear / Conv2d layers one forward calls, in call order."""
    mha = [n for n, m in visual.named_modules() if isinstance(m, nn.MultiheadAttention)]
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=name: order.append(n))
             for name, m in visual.named_modules() if quantizable(m) and name and not _inside_mha(name, mha)]
    was_training = visual.training
    visual.eval()
    h, w = tower_image_size(visual)
    device = next((p.device for p in visual.parameters()), torch.device("cpu"))
    try:
        visual(torch.zeros(1, 3, h, w, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        visual.train(was_training)
    return list(dict.fromkeys(order))


def image_targets(visual: nn.Module, quantize_stem: bool, prefix: str = "visual") -> tuple[list[str], str | None]:
    """(full names of the image-tower layers to quantize in network order, the stem conv's name).
    open_clip's `x @ proj` matrix (a Parameter) is the last layer where the tower has one."""
    called = called_layers(visual)
    stem = next((n for n in called if isinstance(visual.get_submodule(n), nn.Conv2d)), None)
    if quantize_stem and stem is None:
        raise UserError("quantize_patch_embed: this image tower has no convolution reading the image")
    names = [n for n in called if quantize_stem or n != stem]
    if isinstance(getattr(visual, "proj", None), nn.Parameter):
        names.append("proj")
    return [f"{prefix}.{n}" for n in names], (f"{prefix}.{stem}" if stem else None)
