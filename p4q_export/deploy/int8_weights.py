"""Weights stored as INT8 codes: each weight's QuantizeLinear is computed once, here, exactly as
ONNX defines it, and its DequantizeLinear reads an INT8 initializer. The graph shrinks about 4×
(the FP32 weights it held become one byte each) and computes the same numbers: the codes are the
ones ONNX Runtime's QuantizeLinear gives for those weights, which is what it folded them into at
session start before. It is the form ModelOpt's ONNX export and ORT's `quantize_static` write;
TensorRT's developer guide ("Explicit Quantization" > "Quantized Weights") takes weights given in
INT8 when a DequantizeLayer sits between them and the layer that uses them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .qdq import along_axis

INT8_MIN, INT8_MAX = -128, 127


def quantize_like_onnx(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear to int8: saturate(round_half_to_even(x / scale) + zero_point), with the
    division in float32 as ONNX Runtime computes it."""
    x = x.astype(np.float32)
    scale = along_axis(scale.astype(np.float32), x.ndim, axis)
    zp = 0.0 if zero_point is None else along_axis(zero_point.astype(np.float32), x.ndim, axis)
    return np.clip(np.rint(x / scale) + zp, INT8_MIN, INT8_MAX).astype(np.int8)


def with_int8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with its weights stored as INT8 codes (`fold_weight_quantizers`)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    fold_weight_quantizers(out)
    return out


def fold_weight_quantizers(model: onnx.ModelProto) -> int:
    """In place: every QuantizeLinear of an FP32/FP16 initializer (a weight) becomes the INT8
    initializer it computes, named as the Q's output, so its DequantizeLinear needs no rewiring;
    float weights nothing else reads are dropped. Returns how many weights were folded."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    readers: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1
    folded, kept_nodes, new_inits, dropped = 0, [], [], set()
    for n in g.node:
        weight = inits.get(n.input[0]) if n.op_type == "QuantizeLinear" else None
        scale = inits.get(n.input[1]) if weight is not None and len(n.input) > 1 else None
        zp = inits.get(n.input[2]) if scale is not None and len(n.input) > 2 and n.input[2] else None
        if weight is None or scale is None or zp is None or zp.data_type != onnx.TensorProto.INT8:
            kept_nodes.append(n)
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        codes = quantize_like_onnx(numpy_helper.to_array(weight), numpy_helper.to_array(scale),
                                   numpy_helper.to_array(zp), axis)
        new_inits.append(numpy_helper.from_array(codes, n.output[0]))
        folded += 1
        for name in n.input:
            readers[name] -= 1
        if readers[weight.name] == 0:
            dropped.add(weight.name)
    if not folded:
        return 0
    del g.node[:]
    g.node.extend(kept_nodes)
    used = {name for node in kept_nodes for name in node.input} | {o.name for o in g.output}
    kept_inits = [t for t in g.initializer if t.name not in dropped and t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept_inits + new_inits)
    return folded
