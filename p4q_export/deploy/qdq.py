"""Graph surgery on QDQ models: `strip_qdq` gives the FP32 twin of an exported graph so benchmarks
time ORT FP32 on exactly the same network (same ops, same weights, no quantization);
`exact_session` runs a graph with exact Q/DQ arithmetic and inner tensors as extra outputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def along_axis(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A per-channel scale or zero point shaped to broadcast along `axis` of an `ndim` tensor, as
    Q/DQ apply it (a per-tensor scalar as it is)."""
    if v.size == 1:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _dequantized_initializer(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    q = q.astype(np.float32)
    zp = np.zeros_like(scale) if zp is None else zp.astype(np.float32)
    return ((q - along_axis(zp, q.ndim, axis)) * along_axis(scale, q.ndim, axis)).astype(np.float32)


def strip_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop every Q→DQ pair (consumers read the float tensor the Q read) and replace DQ of an INT8
    initializer by the dequantized float initializer. Returns a new model; the input is untouched."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    rename: dict[str, str] = {}
    new_inits = []
    drop = set()
    for n in g.node:
        if n.op_type != "DequantizeLinear":
            continue
        src = producer.get(n.input[0])
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if src is not None and src.op_type == "QuantizeLinear":
            rename[n.output[0]] = src.input[0]
            drop.update({id(n), id(src)})
        elif n.input[0] in inits:
            zp = numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 and n.input[2] in inits else None
            w = _dequantized_initializer(numpy_helper.to_array(inits[n.input[0]]), numpy_helper.to_array(inits[n.input[1]]), zp, axis)
            name = n.output[0] + "_fp32"
            new_inits.append(numpy_helper.from_array(w, name))
            rename[n.output[0]] = name
            drop.add(id(n))
    # Resolve chains (a Q reading another DQ's output) before rewiring.
    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    kept = [n for n in g.node if id(n) not in drop]
    for n in kept:
        for i, name in enumerate(n.input):
            n.input[i] = resolve(name)
    outputs = {o.name for o in g.output}
    for name in outputs & set(rename):
        kept.append(helper.make_node("Identity", [resolve(name)], [name]))
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | outputs
    keep_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    return out


def exact_session(model: onnx.ModelProto, extra_outputs=()):
    """An ONNX Runtime CPU session on a copy of `model` that computes every Q/DQ as written
    (`session.disable_quant_qdq`) and also returns the tensors named in `extra_outputs`."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(set(extra_outputs) - have))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
