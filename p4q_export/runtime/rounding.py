"""The reference with the backend's rounding decisions: a quantized graph and its PyTorch reference
compute every layer in float32, in different orders (ORT's and torch's matmul blocking, fused
against decomposed attention), so their pre-quantization values differ by ~1e-4 of a quantization
step. Where such a value lies that close to a rounding boundary, the two round to neighbouring
INT8 codes; a flipped code changes the next layer's whole output row, and in a deep tower with
LayerNorms on small random-weight activations (EVA02's SwiGLU and attention norms) those flips
compound into a cosine of ~0.998 although every layer computes the same function.

This module replays the reference with ORT's own pre-quantization tensors wherever the two agree
to within `TOLERANCE` of a step: the reference then rounds as the backend did, and what still
differs is what the graph computes differently. `validate` uses it only to explain a failed exact
comparison (ORT exact mode, FP32-compute quantized graphs): the report keeps both numbers.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch

from ..deploy.qdq import exact_session
from ..deploy.trt_lint import COMPUTE_OPS, module_of

TOLERANCE = 0.05  # of a quantization step: 250x the float disagreement measured on EVA02-B-16
BATCH = 2  # every quantized layer's input is kept for a batch, twice: ~140 MB per image on a ViT-B


def quantizer_taps(graph: onnx.ModelProto) -> dict[str, str]:
    """Quantized layer (module path) -> the tensor its activation QuantizeLinear reads."""
    producer = {o: n for n in graph.graph.node for o in n.output}
    taps = {}
    for n in graph.graph.node:
        if n.op_type not in COMPUTE_OPS:
            continue
        dq = producer.get(n.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            taps[module_of(n.name)] = q.input[0]
    return taps


def aligned_reference(graph_path, module: torch.nn.Module, batches) -> tuple[dict[str, np.ndarray], dict]:
    """The reference's outputs (by name) on `batches` (bundle inputs, numpy) with ORT's rounding,
    and over all quantized inputs: `rounding_flips_fraction` (within tolerance, but rounded to
    another code: the ties taken from ORT) and `beyond_tolerance_fraction` (farther apart than a
    float disagreement: the graph computes something else there; zero for a faithful graph)."""
    from ..quant import quant_layers

    graph = onnx.load(str(graph_path))
    taps = quantizer_taps(graph)
    layers = {name: layer for name, layer in quant_layers(module).items() if name in taps}
    session = exact_session(graph, [taps[n] for n in layers])
    names = [o.name for o in session.get_outputs()]
    device = next(module.parameters()).device
    current: dict[str, torch.Tensor] = {}
    counts = {"elements": 0, "flips": 0, "beyond_tolerance": 0}

    def align(layer, args, name):
        x, ort_x = args[0], current[name]
        step = layer.input_quantizer.scale.to(x.dtype)
        diff = (x - ort_x).abs()
        close = diff <= TOLERANCE * step
        counts["elements"] += diff.numel()
        counts["flips"] += int((close & (torch.round(x / step) != torch.round(ort_x / step))).sum())
        counts["beyond_tolerance"] += int((~close).sum())
        return (torch.where(close, ort_x, x), *args[1:])

    hooks = [layer.register_forward_pre_hook(lambda m, a, n=name: align(m, a, n)) for name, layer in layers.items()]
    outs: dict[str, list[np.ndarray]] = {}
    try:
        for images in batches:
            values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: images})))
            current.update({n: torch.from_numpy(values[taps[n]]).to(device) for n in layers})
            with torch.inference_mode():
                out = module(torch.from_numpy(np.ascontiguousarray(images)).to(device))
            for key, value in zip(("logits", "embedding"), out if isinstance(out, tuple) else (out,)):
                outs.setdefault(key, []).append(value.float().cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    total = max(1, counts["elements"])
    stats = {"tolerance_steps": TOLERANCE, "rounding_flips_fraction": counts["flips"] / total,
             "beyond_tolerance_fraction": counts["beyond_tolerance"] / total, "layers": len(layers)}
    return {k: np.concatenate(v) for k, v in outs.items()}, stats
