"""The deployed form of an image tower, before anything is quantized: reparameterizable branches
(MobileOne / FastViT / RepMixer) folded by timm's own `reparameterize_model`, every BatchNorm that
follows a convolution folded into that convolution's weights, and any other BatchNorm turned into
the per-channel multiply-add it computes at inference. Calibration then sees the network that
ships, and the exported graph has no BatchNormalization.

Which BatchNorm follows which convolution is read from one traced forward (a conv's output tensor
that is a BatchNorm's input), so it works for any tower without per-architecture pattern lists;
the folded tower is checked against the original on the same input before it is kept.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..errors import UserError

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


class ChannelAffine(nn.Module):
    """An inference BatchNorm that no convolution precedes: x · scale + shift per channel (dim 1)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        inv = torch.rsqrt(bn.running_var.detach().float() + bn.eps)
        weight = bn.weight.detach().float() if bn.weight is not None else torch.ones_like(inv)
        bias = bn.bias.detach().float() if bn.bias is not None else torch.zeros_like(inv)
        scale = weight * inv
        self.register_buffer("scale", scale)
        self.register_buffer("shift", bias - bn.running_mean.detach().float() * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1, -1] + [1] * (x.ndim - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, module)


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What stays of a folded BatchNorm: nothing, or the activation a timm BatchNormAct2d carries."""
    act = getattr(bn, "act", None)
    drop = getattr(bn, "drop", None)
    kept = [m for m in (drop, act) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*kept) if kept else nn.Identity()


def _conv_bn_pairs(tower: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name) where the BatchNorm's input is exactly that conv's output."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    hooks = []
    for name, m in tower.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda mod, args, out, n=name: produced.__setitem__(id(out), (n, out))))
        elif isinstance(m, _BN):
            def pre(mod, args, n=name):
                hit = produced.get(id(args[0]))
                if hit is not None and hit[1] is args[0]:
                    pairs.append((hit[0], n))
            hooks.append(m.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            tower(example)
    finally:
        for h in hooks:
            h.remove()
    return pairs


def fold_batchnorms(tower: nn.Module, example: torch.Tensor) -> int:
    """In place; returns how many BatchNorms were removed. A BatchNorm shared by two convs, or a
    conv feeding two BatchNorms, is not folded (treated as a standalone affine)."""
    pairs = _conv_bn_pairs(tower, example)
    convs = [c for c, _ in pairs]
    bns = [b for _, b in pairs]
    folded = 0
    for conv_name, bn_name in pairs:
        if convs.count(conv_name) > 1 or bns.count(bn_name) > 1:
            continue
        conv, bn = tower.get_submodule(conv_name), tower.get_submodule(bn_name)
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        conv.weight, conv.bias = nn.Parameter(w.detach(), requires_grad=conv.weight.requires_grad), nn.Parameter(b.detach(), requires_grad=False)
        _set_module(tower, bn_name, _bn_replacement(bn))
        folded += 1
    for name, m in list(tower.named_modules()):
        if isinstance(m, _BN):
            act = _bn_replacement(m)
            affine = ChannelAffine(m)
            _set_module(tower, name, affine if isinstance(act, nn.Identity) else nn.Sequential(affine, act))
            folded += 1
    return folded


def reparameterize(tower: nn.Module) -> int:
    """timm's reparameterization (MobileOne, RepMixer, RepCPE, large-kernel branches): the count of
    modules it changed."""
    from timm.utils.model import reparameterize_model

    before = sum(1 for _ in tower.modules())
    reparameterize_model(tower, inplace=True)
    return before - sum(1 for _ in tower.modules())


def tower_image_size(tower: nn.Module) -> tuple[int, int]:
    size = getattr(tower, "image_size", 224)
    return (size, size) if isinstance(size, int) else tuple(size)[:2]


@torch.no_grad()
def deploy_form(tower: nn.Module) -> dict:
    """Reparameterize and fold the BatchNorms of `tower` in place (eval mode), check that it still
    computes what it did, and say what changed."""
    was_training = tower.training
    tower.eval()
    h, w = tower_image_size(tower)
    gen = torch.Generator().manual_seed(0)
    device = next((p.device for p in tower.parameters()), torch.device("cpu"))
    example = torch.randn(2, 3, h, w, generator=gen).to(device)
    has_bn = any(isinstance(m, _BN) for m in tower.modules())
    has_reparam = any(hasattr(m, "reparameterize") or hasattr(m, "fuse") or hasattr(m, "switch_to_deploy") for m in tower.modules())
    info = {"reparameterized_modules": 0, "batchnorms_folded": 0}
    if not (has_bn or has_reparam):
        tower.train(was_training)
        return info
    before = tower(example).float()
    info["reparameterized_modules"] = reparameterize(tower) if has_reparam else 0
    info["batchnorms_folded"] = fold_batchnorms(tower, example)
    after = tower(example).float()
    err = float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))
    if err > 1e-3:
        raise UserError(f"reparameterizing this image tower changed its output (relative error {err:.2e}): "
                        "it cannot be prepared for INT8 deployment")
    tower.train(was_training)
    info["relative_error"] = err
    return info
