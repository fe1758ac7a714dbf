"""Static TensorRT-compatibility check of a QDQ ONNX graph, on CPU (TensorRT itself is not needed).

TensorRT's explicit quantization accepts: symmetric INT8 (zero point 0, int8 not uint8), weights
per-channel on axis 0 (or per-tensor) within [-127, 127], activations per-tensor, Q immediately
followed by DQ. On top of that the project's placement rule (docs/quantization.md, the `trt` profile: INT8 works
best for ViTs): Q/DQ only on the inputs and weights of Linear/Conv (MatMul, Gemm, Conv), never on
residual adds, LayerNorm or Softmax.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import CheckFailed
from .qdq import along_axis

QUANT_OPS = {"QuantizeLinear", "DequantizeLinear"}
COMPUTE_OPS = {"MatMul", "Gemm", "Conv"}
# Layout-only ops a weight may pass through between its DQ and the MatMul (Linear's W^T).
WEIGHT_LAYOUT_OPS = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten"}
# ONNX ops the graphs we export use and TensorRT's ONNX parser supports (TensorRT 10 operator list).
SUPPORTED_OPS = COMPUTE_OPS | QUANT_OPS | WEIGHT_LAYOUT_OPS | {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Erf",
    "Relu", "Sigmoid", "Tanh", "Gelu", "Softmax", "LayerNormalization", "ReduceMean", "ReduceSum",
    "ReduceL2", "ReduceMax", "ReduceMin", "Max", "Min", "Clip", "Concat", "Slice", "Split", "Gather",
    "Shape", "Expand", "Cast", "Constant", "ConstantOfShape", "Identity", "Where", "Equal", "Range",
    "GlobalAveragePool", "AveragePool", "MaxPool", "Pad", "Resize", "Tile", "Einsum", "ScatterND",
}  # fmt: skip


@dataclass
class LintReport:
    violations: list[str] = field(default_factory=list)
    quantized_layers: list[str] = field(default_factory=list)  # compute nodes with Q/DQ'd input + weight
    qdq_pairs: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {"ok": self.ok, "violations": self.violations, "quantized_layers": len(self.quantized_layers), "qdq_pairs": self.qdq_pairs}


class _Graph:
    """Producer/consumer maps and constant values of one ONNX graph."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.nodes = list(g.node)
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute:
                attr = next((a for a in n.attribute if a.name == "value"), None)
                if attr is not None:
                    self.consts[n.output[0]] = numpy_helper.to_array(attr.t)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in self.nodes:
            for i in n.input:
                self.consumers[i].append(n)
        self.graph_outputs = {o.name for o in g.output}

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def is_constant(self, name: str) -> bool:
        """A value computable from initializers alone (a weight, possibly behind layout ops)."""
        if name in self.consts:
            return True
        p = self.producer.get(name)
        return p is not None and p.op_type in WEIGHT_LAYOUT_OPS | {"Cast"} and all(self.is_constant(i) for i in p.input if i)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _label(node) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


def _check_qparams(g: _Graph, node, report: LintReport, is_weight: bool) -> None:
    scale = g.const(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        report.violations.append(f"{_label(node)}: scale is not a constant")
        return
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        report.violations.append(f"{_label(node)}: scale must be finite and > 0")
    zp = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zp is None:
        # A missing zero point means uint8 in ONNX: TensorRT needs int8.
        report.violations.append(f"{_label(node)}: no int8 zero point (ONNX defaults to uint8; TensorRT needs symmetric int8)")
    else:
        if zp.dtype != np.int8:
            report.violations.append(f"{_label(node)}: zero point is {zp.dtype}, TensorRT needs int8")
        if np.any(zp != 0):
            report.violations.append(f"{_label(node)}: zero point must be 0 (TensorRT is symmetric only)")
    if scale.size > 1:
        axis = _attr(node, "axis", 1)
        if not is_weight:
            report.violations.append(f"{_label(node)}: per-channel scale on an activation (TensorRT: per-tensor activations)")
        elif axis != 0:
            report.violations.append(f"{_label(node)}: per-channel axis {axis} on a weight (TensorRT: axis 0)")


def _weight_range_ok(weight: np.ndarray, scale: np.ndarray, axis: int) -> bool:
    """TensorRT's INT8 weights span [-127, 127]: the scale must not clip at -128."""
    q = np.round(weight.astype(np.float64) / along_axis(scale, weight.ndim, axis))
    return bool(np.all(np.abs(q) <= 127))


def _compute_reached(g: _Graph, value: str, depth: int = 0) -> list:
    """Compute nodes fed by `value`, allowing weight layout ops in between; non-compute consumers → None."""
    out = []
    for c in g.consumers.get(value, []):
        if c.op_type in COMPUTE_OPS:
            out.append(c)
        elif c.op_type in WEIGHT_LAYOUT_OPS and depth < 3:
            out.extend(_compute_reached(g, c.output[0], depth + 1))
        else:
            out.append(None)
    if value in g.graph_outputs:
        out.append(None)
    return out


def module_of(node_name: str) -> str:
    """'/visual/transformer/resblocks.0/attn/qkv/MatMul' -> 'visual.transformer.resblocks.0.attn.qkv':
    the exporter names nodes by the module path that made them, and a Sequential's child twice
    ('/trunk/stages/stages.0/blocks/blocks.1/...' is trunk.stages.0.blocks.1)."""
    parts: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


def lint_model(model: onnx.ModelProto, quantized_modules: set[str] | None = None) -> LintReport:
    """`quantized_modules`: the layers the profile quantizes (keep_fp layers and an unquantized patch
    embedding are not among them); every Q/DQ'd compute node must belong to one, and each one must
    be Q/DQ'd."""
    g = _Graph(model)
    report = LintReport()
    for n in g.nodes:
        if n.op_type == "DynamicQuantizeLinear":
            report.violations.append(f"{_label(n)}: DynamicQuantizeLinear is not supported by TensorRT (static scales only)")
        elif n.op_type not in SUPPORTED_OPS:
            report.violations.append(f"{_label(n)}: op {n.op_type} is not on the supported-ops list")

    quantized_inputs: dict[str, set[int]] = defaultdict(set)  # compute node name -> input slots fed by DQ
    for n in g.nodes:
        if n.op_type == "QuantizeLinear":
            is_weight = g.is_constant(n.input[0])
            _check_qparams(g, n, report, is_weight)
            consumers = g.consumers.get(n.output[0], [])
            if any(c.op_type == "Cast" for c in consumers):
                report.violations.append(f"{_label(n)}: a Cast between QuantizeLinear and its DequantizeLinear "
                                         "(TensorRT fuses Q/DQ only when Q feeds DQ directly)")
            elif not consumers or any(c.op_type != "DequantizeLinear" for c in consumers):
                kinds = sorted({c.op_type for c in consumers}) or ["nothing"]
                report.violations.append(f"{_label(n)}: must feed DequantizeLinear directly, feeds {', '.join(kinds)}")
            scale = g.const(n.input[1])
            weight = g.const(n.input[0])
            if (weight is not None and scale is not None and weight.dtype in (np.float32, np.float16)
                    and not _weight_range_ok(weight, scale, _attr(n, "axis", 1))):
                report.violations.append(f"{_label(n)}: weight quantizes outside [-127, 127] (TensorRT's INT8 weight range)")
        elif n.op_type == "DequantizeLinear":
            src = g.producer.get(n.input[0])
            from_int8_initializer = n.input[0] in g.consts
            if src is not None and src.op_type == "QuantizeLinear":
                report.qdq_pairs += 1
                is_weight = g.is_constant(src.input[0])
                if src.input[1] != n.input[1] and not np.array_equal(g.const(src.input[1]), g.const(n.input[1])):
                    report.violations.append(f"{_label(n)}: scale differs from its QuantizeLinear's")
            elif from_int8_initializer:
                report.qdq_pairs += 1  # a weight's pair, its Q computed at export into the INT8 codes
                is_weight = True
                q = g.consts[n.input[0]]
                if q.dtype != np.int8:
                    report.violations.append(f"{_label(n)}: quantized initializer is {q.dtype}, TensorRT needs int8")
                elif np.any(q == -128):
                    report.violations.append(f"{_label(n)}: int8 weight uses -128 (TensorRT's INT8 weight range is [-127, 127])")
            else:
                report.violations.append(f"{_label(n)}: input is neither a QuantizeLinear nor an int8 initializer")
                continue
            _check_qparams(g, n, report, is_weight)
            for target in _compute_reached(g, n.output[0]):
                if target is None:
                    report.violations.append(f"{_label(n)}: Q/DQ only around MatMul/Gemm/Conv inputs, but its output feeds other ops")
                    continue
                for slot, name in enumerate(target.input):
                    if name == n.output[0] or _feeds_through_layout(g, n.output[0], name):
                        quantized_inputs[target.name or target.output[0]].add(slot)

    for n in g.nodes:
        if n.op_type not in COMPUTE_OPS:
            continue
        key = n.name or n.output[0]
        slots = quantized_inputs.get(key, set())
        if slots >= {0, 1}:
            report.quantized_layers.append(key)
        elif slots:
            report.violations.append(f"{_label(n)}: only one of input/weight is quantized (TensorRT would run it in floating point)")
    if quantized_modules is not None:
        found = {module_of(name) for name in report.quantized_layers}
        for extra in sorted(found - quantized_modules):
            report.violations.append(f"layer '{extra}' has Q/DQ but the profile keeps it in floating point")
        for missing in sorted(quantized_modules - found):
            report.violations.append(f"layer '{missing}' is quantized in the reference but has no Q/DQ in the graph")
    return report


def lint_precision(model: onnx.ModelProto, fp32_nodes: list[str] = (), types: dict[str, int] | None = None) -> list[str]:
    """Violations of the FP32 islands of an FP16 graph: LayerNormalization, Softmax and the
    normalization compute in FP32, the head nodes (`fp32_nodes`) too, and the graph's outputs are
    FP32. `types`: the graph's tensor_types() where the caller has them already."""
    from .precision import FP32_OPS, elem_type_name, tensor_types

    types = tensor_types(model) if types is None else types
    half = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    must = set(fp32_nodes)
    violations = []
    for n in model.graph.node:
        if n.op_type in FP32_OPS or n.name in must:
            low = [name for name in [*n.input, *n.output] if name and types.get(name) in half]
            if low:
                violations.append(f"{_label(n)}: computes in {elem_type_name(types[low[0]])}, must stay FP32")
    for o in model.graph.output:
        if o.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            violations.append(f"output '{o.name}' is {elem_type_name(o.type.tensor_type.elem_type)}, must be FP32")
    return violations


def _feeds_through_layout(g: _Graph, source: str, name: str) -> bool:
    p = g.producer.get(name)
    for _ in range(3):
        if p is None or p.op_type not in WEIGHT_LAYOUT_OPS:
            return False
        if p.input[0] == source:
            return True
        p = g.producer.get(p.input[0])
    return False


def check_trt_compatible(model: onnx.ModelProto, expected_layers: int | None = None, quantized_modules: set[str] | None = None,
                         fp32_nodes: list[str] | None = None, types: dict[str, int] | None = None) -> LintReport:
    """Lint and raise CheckFailed with every violation (first few listed) if the graph won't suit
    TensorRT. `fp32_nodes` (an FP16 graph's head) also checks its FP32 islands."""
    report = lint_model(model, quantized_modules)
    if fp32_nodes is not None:
        report.violations.extend(lint_precision(model, fp32_nodes, types))
    if expected_layers is not None and len(report.quantized_layers) != expected_layers:
        report.violations.append(
            f"{len(report.quantized_layers)} layers have Q/DQ on input and weight, expected {expected_layers} (one per quantized Linear/Conv)"
        )
    if not report.ok:
        shown = "; ".join(report.violations[:5])
        more = f" (+{len(report.violations) - 5} more)" if len(report.violations) > 5 else ""
        raise CheckFailed(f"exported graph is not TensorRT-compatible: {shown}{more}")
    return report
