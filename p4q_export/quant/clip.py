"""Quantizing open_clip CLIP towers: put the image tower in its deployed form (towers/, reparam.py),
replace every layer of the one list (plan.py) with a fake-quantized layer, calibrate, switch
quantization off for the FP teacher, save / load the calibration state.

Quantized: every Linear and Conv2d the image tower calls (attention projections, MLPs, every
convolution with its BatchNorm folded in, the output projections; the image-reading stem conv only
with quantize_patch_embed), and with quantize_text the text tower's Linears. Left in FP:
LayerNorm, Softmax, activations, the attention matmuls, pooling and residual adds (the output of
an INT8 conv or matmul is dequantized, and TensorRT fuses the add into its epilogue).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase

import torch
from torch import nn

from ..errors import UserError
from ..progress import progress_iter
from .attention import make_attention_explicit
from .fake_quant import FakeQuantizer
from .layers import QuantConv2d, QuantLinear, QuantProjection
from .plan import image_targets, prepare_image_tower
from .profiles import QuantProfile


def _linear_names(tower: nn.Module, prefix: str) -> list[str]:
    """Full names of the text tower's nn.Linear layers (not those inside an nn.MultiheadAttention)."""
    skip: list[str] = []
    out = []
    for name, module in tower.named_modules():
        if any(name.startswith(s + ".") for s in skip):
            continue
        if isinstance(module, nn.MultiheadAttention):
            skip.append(name)
        elif isinstance(module, nn.Linear) and name:
            out.append(f"{prefix}.{name}" if prefix else name)
    return out


def _swap(model: nn.Module, name: str, profile: QuantProfile) -> None:
    """The layer (or `x @ proj` matrix) at `name` → its quantized form, sharing its Parameters."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    layer = getattr(parent, attr)
    if isinstance(layer, nn.Linear):
        setattr(parent, attr, QuantLinear.from_linear(layer, profile))
    elif isinstance(layer, nn.Conv2d):
        setattr(parent, attr, QuantConv2d.from_conv(layer, profile))
    elif isinstance(layer, nn.Parameter):
        delattr(parent, attr)  # a registered Parameter cannot be overwritten by a module
        setattr(parent, attr, QuantProjection.from_matrix(layer, profile))
    else:
        raise TypeError(f"{name} is a {type(layer).__name__}, not a quantizable layer")


def _text_tower(model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """(modules holding the text Linears, the module owning `text_projection`)."""
    if hasattr(model, "text") and hasattr(model.text, "transformer"):  # CustomTextCLIP
        return [model.text.transformer], model.text
    if hasattr(model, "transformer") and hasattr(model, "text_projection"):  # CLIP
        return [model.transformer], model
    raise UserError("this model's text tower cannot be quantized (no open_clip text transformer found)")


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _candidates(model: nn.Module, profile: QuantProfile, quantize_text: bool) -> list[str]:
    """Names of the layers quantize_clip quantizes (the image tower already in its deployed form),
    in network order: what `keep_fp` patterns are matched against."""
    names, _ = image_targets(model.visual, profile.quantize_patch_embed)
    if quantize_text:
        modules, owner = _text_tower(model)
        for module in modules:
            names += _linear_names(module, _module_name(model, module))
        if isinstance(getattr(owner, "text_projection", None), (nn.Linear, nn.Parameter)):
            owner_name = _module_name(model, owner)
            names.append(f"{owner_name}.text_projection".lstrip("."))
    return names


def resolve_keep_fp(names: list[str], patterns: list[str] | tuple[str, ...] | None) -> list[str]:
    """The quantizable layer names matched by the fnmatch `patterns` (in network order); a pattern
    that matches none of them is bad input."""
    patterns = [str(p).strip() for p in (patterns or []) if str(p).strip()]
    unmatched = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unmatched:
        example = ", ".join(names[:3])
        raise UserError(f"keep_fp pattern(s) {', '.join(repr(p) for p in unmatched)} match no quantized layer "
                        f"(names look like {example}, ...; `p4q-export inspect` lists them)")
    return [n for n in names if any(fnmatchcase(n, p) for p in patterns)]


def quantize_clip(model: nn.Module, profile: QuantProfile, quantize_text: bool = False,
                  keep_fp: list[str] | tuple[str, ...] | None = None) -> nn.Module:
    """In place; returns `model`. Weights are calibrated now, activations by `calibrate_clip`.
    `keep_fp`: fnmatch patterns over the quantized-layer names (e.g. `visual.transformer.resblocks.3.mlp.c_proj`,
    `transformer.resblocks.*.attn.*`): those layers stay FP (no quantizer anywhere downstream). The
    resolved names are kept on `model.p4q_keep_fp`."""
    if not hasattr(model, "visual"):
        raise UserError("quantize_clip needs an open_clip CLIP model (no .visual tower)")
    if quant_layers(model):
        raise ValueError("model is already quantized")
    from ..devices import module_device

    device = module_device(model)
    prepare_image_tower(model.visual)
    make_attention_explicit(model)  # the text tower's blocks (the image tower's family did its own)
    candidates = _candidates(model, profile, quantize_text)
    kept = resolve_keep_fp(candidates, keep_fp)
    for name in candidates:
        if name not in kept:
            _swap(model, name, profile)
    model.visual.p4q_quantized = [n for n in candidates if n.startswith("visual.") and n not in kept]  # network order
    model.p4q_keep_fp = kept
    return model.to(device)  # the swapped-in layers and their quantizers start on the CPU


def quant_layers(module: nn.Module) -> dict[str, QuantLinear | QuantConv2d]:
    """name → quantized layer, in registration order (= forward order for open_clip towers:
    image tower before text tower, patch conv, blocks, output projection)."""
    return {name: m for name, m in module.named_modules() if isinstance(m, (QuantLinear, QuantConv2d))}


def fake_quantizers(module: nn.Module) -> dict[str, FakeQuantizer]:
    return {name: m for name, m in module.named_modules() if isinstance(m, FakeQuantizer)}


@contextmanager
def calibrating(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every quantized layer under `module` runs in FP while its input quantizer
    records statistics; on leaving, each input that was seen is finalized and weights are
    re-calibrated. Usable for any module with QuantLinear layers (e.g. an adapter)."""
    layers = quant_layers(module)
    saved = {}
    for layer in layers.values():
        saved[layer] = (layer.weight_quantizer.enabled, layer.input_quantizer.enabled)
        layer.weight_quantizer.enabled = False  # observe the FP forward
        layer.input_quantizer.enabled = True
        layer.input_quantizer.reset_observer()
        layer.input_quantizer.calibrating = True
    try:
        yield module
    finally:
        for layer, (w_enabled, a_enabled) in saved.items():
            layer.weight_quantizer.enabled, layer.input_quantizer.enabled = w_enabled, a_enabled
            layer.input_quantizer.calibrating = False
    for layer in layers.values():
        if layer.input_quantizer.has_observations:
            layer.input_quantizer.finalize()
        layer.calibrate_weight()


def text_layer_names(model: nn.Module) -> set[str]:
    try:
        modules, owner = _text_tower(model)
    except UserError:
        return set()
    ids = {id(m) for tower in modules for m in quant_layers(tower).values()}
    proj = getattr(owner, "text_projection", None)
    if isinstance(proj, (QuantLinear, QuantConv2d)):
        ids.add(id(proj))
    return {name for name, m in quant_layers(model).items() if id(m) in ids}


def calibrate_clip(model: nn.Module, images, text_tokens: torch.Tensor | None = None, batch_size: int = 128) -> None:
    """Observe every layer input on the FP forward of `images` (and `text_tokens` when the text
    tower is quantized), then finalize all scales / zero points. Weights are re-calibrated too.
    `images`: one tensor (cut into `batch_size` batches here) or an iterable of batches on the
    model's device (streamed from disk; the observers see the same batches either way)."""
    from ..data.loader import tensor_batches
    from ..devices import module_device
    from ..models.text import encode_tokens

    layers = quant_layers(model)
    if not layers:
        raise ValueError("calibrate_clip: the model has no quantized layers (run quantize_clip first)")
    if isinstance(images, torch.Tensor):
        if len(images) == 0:
            raise UserError("calibration needs at least one image")
        images = tensor_batches(images, batch_size)
    text_quantized = bool(text_layer_names(model))
    if text_quantized and text_tokens is None:
        raise UserError("the text tower is quantized: calibrate_clip needs text_tokens")
    device = module_device(model)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with calibrating(model), torch.no_grad():
            for batch in progress_iter(images, desc="calibrating image tower"):
                model.encode_image(batch.to(device))
                seen += len(batch)
            if seen == 0:
                raise UserError("calibration needs at least one image")
            if text_quantized:
                for batch in progress_iter(tensor_batches(text_tokens, batch_size), desc="calibrating text tower"):
                    encode_tokens(model, batch.to(device))  # cut after EOS, as prompts run: no padding observed
    finally:
        model.train(was_training)
    missed = [name for name, layer in layers.items() if not layer.input_quantizer.is_calibrated]
    if missed:
        raise RuntimeError(f"calibration never reached {len(missed)} quantized layer(s), e.g. {missed[0]}")


@contextmanager
def quantization_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Every FakeQuantizer off (the FP teacher) inside the block; previous flags restored after."""
    quantizers = list(fake_quantizers(model).values())
    saved = [q.enabled for q in quantizers]
    for q in quantizers:
        q.enabled = False
    try:
        yield model
    finally:
        for q, enabled in zip(quantizers, saved):
            q.enabled = enabled


QUANT_BUFFERS = ("scale", "zero_point", "calibrated")


def quant_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The calibration state only: `<quantizer>.scale / .zero_point / .calibrated` for every
    fake quantizer (weights excluded)."""
    return {
        f"{name}.{buf}": getattr(q, buf).detach().clone()
        for name, q in fake_quantizers(model).items()
        for buf in QUANT_BUFFERS
    }


def load_quant_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore a `quant_state_dict` into a model quantized with the same profile and towers."""
    quantizers = fake_quantizers(model)
    expected = {f"{name}.{buf}" for name in quantizers for buf in QUANT_BUFFERS}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise UserError(
            "calibration state does not match this quantized model "
            f"({len(missing)} missing, {len(unexpected)} unexpected entries; e.g. "
            f"{min(missing or unexpected)}): was it saved with another profile or --quantize-text setting, or by a "
            "p4q-export older than the tower families (convolutions quantized since)? Then retrain it"
        )
    for name, q in quantizers.items():
        sub = {buf: state[f"{name}.{buf}"] for buf in QUANT_BUFFERS}
        q.load_state_dict(sub)
