"""Multiply-accumulates per compute node of an exported graph (batch 1), and the share that runs in
INT8: what tells a user how much of the tower TensorRT can run on its INT8 kernels, beside the
layer count (one INT8 depthwise conv and one INT8 1×1 conv count very differently).

Shapes come from ONNX shape inference on a copy whose batch is fixed to 1; a node whose shapes it
cannot resolve is measured by running the graph once on ONNX Runtime with its tensors as outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference

from .qdq import exact_session
from .trt_lint import COMPUTE_OPS


def _batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in [*m.graph.input, *m.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    del m.graph.value_info[:]
    return m


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int] | None]:
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int] | None] = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _run_shapes(model: onnx.ModelProto, names: set[str]) -> dict[str, list[int]]:
    """Run the batch-1 graph on zeros with `names` as extra outputs (exact Q/DQ arithmetic)."""
    sess = exact_session(model, names)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    dtype = np.uint8 if "uint8" in inp.type else (np.float16 if "float16" in inp.type else np.float32)
    outs = sess.run(None, {inp.name: np.zeros(shape, dtype)})
    return {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), outs)}


def _node_macs(node, shape) -> int:
    if node.op_type == "Conv":
        out, w = shape(node.output[0]), shape(node.input[1])
        return int(np.prod(out, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    if node.op_type == "MatMul":
        a, out = shape(node.input[0]), shape(node.output[0])
        return int(np.prod(out, dtype=np.int64) * a[-1])
    a, out = shape(node.input[0]), shape(node.output[0])  # Gemm
    trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
    return int(np.prod(out, dtype=np.int64) * (a[0] if trans_a else a[-1]))


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Compute node name (or first output) → multiply-accumulates at batch 1."""
    m = _batch_one(model)
    shapes = _static_shapes(m)
    nodes = [n for n in m.graph.node if n.op_type in COMPUTE_OPS]
    needed = {n.output[0] for n in nodes} | {n.input[0] for n in nodes} | {n.input[1] for n in nodes}
    unknown = {name for name in needed if shapes.get(name) is None}
    if unknown:
        shapes.update(_run_shapes(m, unknown))
    return {n.name or n.output[0]: _node_macs(n, shapes.__getitem__) for n in nodes}


def mac_summary(model: onnx.ModelProto, int8_nodes: list[str]) -> dict:
    """`int8_mac_fraction`: MACs of the Q/DQ'd compute nodes over all compute MACs (the attention
    matmuls and any FP layer count in the denominator)."""
    macs = node_macs(model)
    total = sum(macs.values())
    int8 = sum(macs.get(n, 0) for n in set(int8_nodes))
    return {"int8_mac_fraction": round(int8 / total, 4) if total else 0.0, "int8_macs": int8, "total_macs": total}
