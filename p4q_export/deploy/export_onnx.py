"""DeployModel → QDQ ONNX (opset 17, dynamic batch) with the legacy TorchScript exporter.

While exporting, the fake quantizers call torch.fake_quantize_per_{tensor,channel}_affine, which
that exporter turns into clean QuantizeLinear → DequantizeLinear pairs (int8 zero points, no Clip
between them); outside export they compute exactly what those ONNX ops define (quant/grid.py).

Weight form written here: FP32 weight initializer → QuantizeLinear(axis 0) → DequantizeLinear →
(Transpose) → MatMul/Conv, the form NVIDIA's QAT tools emit. The FP16/FP32 twins are made from it
(`strip_qdq` gives the network back with its own FP32 weights), and the bundle's quantized graphs
store each weight's QuantizeLinear as the INT8 codes it computes (`int8_weights.py`), about a
quarter of the size, with the same numbers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

OPSET = 17
INPUT_NAME = "image"
LOGITS = "logits"
EMBEDDING = "embedding"


def _inline_identity_constants(model: onnx.ModelProto) -> None:
    """The exporter shares equal initializers (e.g. all zero points) through Identity nodes; point
    consumers at the initializer itself so every Q/DQ reads constants directly."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    if not alias:
        return
    keep = [n for n in g.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    del g.node[:]
    g.node.extend(keep)


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and shape simplification (onnxslim): the exporter's shape arithmetic
    (Constant, Shape, Gather, Concat, Cast chains) folds away and unused initializers go. Only
    onnxslim's shape patterns run (Elimination*, FusionConcatReshape): its arithmetic fusions
    (Conv+Mul, MatMul+Add -> Gemm, ...) would fold float ops into quantized layers' weights, and
    its Conv+Mul pattern fails on a Conv whose weight comes from a DequantizeLinear. Q/DQ pairs stay
    as they are. ViT-B-32's node count roughly halves, and the graph computes what it computed
    before (tests/test_bundle_folders.py)."""
    import onnxslim
    from onnxslim.core.pattern.registry import DEFAULT_FUSION_PATTERNS

    arithmetic = [p for p in DEFAULT_FUSION_PATTERNS if not p.startswith("Elimination") and p != "FusionConcatReshape"]
    slim = onnxslim.slim(model, skip_fusion_patterns=arithmetic)
    slim.producer_name = model.producer_name
    del slim.metadata_props[:]
    slim.metadata_props.extend(model.metadata_props)
    return slim


def io_spec(image_size: int, uint8_input: bool, num_classes: int, embed_dim: int, with_embedding: bool) -> tuple[list, list]:
    """Input/output names, dtypes and shapes as recorded in the manifest."""
    inputs = [{"name": INPUT_NAME, "dtype": "uint8" if uint8_input else "float32", "shape": ["batch", 3, image_size, image_size],
               "layout": "NCHW", "range": "0-255 (normalization inside the graph)" if uint8_input else "normalized (x/255 - mean)/std"}]
    outputs = [{"name": LOGITS, "dtype": "float32", "shape": ["batch", num_classes]}]
    if with_embedding:
        outputs.append({"name": EMBEDDING, "dtype": "float32", "shape": ["batch", embed_dim], "note": "L2-normalized image embedding"})
    return inputs, outputs


def export_onnx(module: torch.nn.Module, path: Path, image_size: int, uint8_input: bool, with_embedding: bool,
                metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Export, tidy, check (onnx.checker full check) and save; returns the saved ModelProto."""
    path = Path(path)
    shape = (2, 3, image_size, image_size)
    dummy = torch.randint(0, 256, shape, dtype=torch.uint8) if uint8_input else torch.randn(shape)
    outputs = [LOGITS] + ([EMBEDDING] if with_embedding else [])
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation / tracer warnings
        torch.onnx.export(
            module, (dummy,), str(path), dynamo=False, opset_version=OPSET, do_constant_folding=True,
            input_names=[INPUT_NAME], output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]},
        )
    model = onnx.load(str(path))
    _inline_identity_constants(model)
    model = simplify(model)
    model.producer_name = "p4q-export"
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return model
