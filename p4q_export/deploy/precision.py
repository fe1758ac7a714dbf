"""The graphs a bundle carries, by precision, made from the one exported INT8 Q/DQ graph:

- `int8`: Q/DQ around every quantized Linear/Conv, FP32 everywhere else (opset 17). ONNX Runtime
  on the CPU runs it, and TensorRT 8.6 builds it weakly typed with its INT8/FP16 builder flags.
- `int8-fp16`: the deploy graph for strongly typed TensorRT (10 and 11): the same Q/DQ, FP16 for
  the unquantized compute, and FP32 where FP16 hurts accuracy: LayerNormalization (its variance
  overflows FP16 on ViT activations), Softmax, and everything from the image feature on (the L2
  normalization and the logits MatMul), so the logits and embedding
  come out of FP32 arithmetic. Q/DQ scales are FP16 like the tensors they quantize, as NVIDIA's
  ModelOpt emits them, which needs opset 19.
- `fp16`: the same network without Q/DQ and the same FP32 islands: the FP16 twin that INT8 is
  compared with on the same GPU.
- `fp32`: the network without Q/DQ in FP32.

The casts come from NVIDIA ModelOpt's AutoCast, the replacement TensorRT 11's migration guide
names for the FP16 builder flag, with the ops and nodes above excluded by rule (no graph surgery
of our own). onnxconverter-common's float16 converter was
tried first: on these graphs it leaves FP16 outputs despite keep_io_types, mistypes the logits
MatMul, and its cast-removal pass crashes on a Cast with several consumers.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import UserError
from .export_onnx import simplify
from .int8_weights import with_int8_weights
from .qdq import strip_qdq

PRECISIONS = ("int8-fp16", "int8", "fp16", "fp32")
FP16_OPSET = 19  # QuantizeLinear/DequantizeLinear take FP16 from opset 19 on
# Ops kept in FP32 in the FP16 graphs (why: the module docstring).
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceL2")
FILES = {"int8": "model.onnx", "int8-fp16": "model.int8-fp16.onnx", "fp16": "model.fp16.onnx", "fp32": "model.fp32.onnx"}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return precision


def default_precision(profile_name: str) -> str:
    """The profile's deploy graph (its spec's deploy_precision): trt ships the strongly typed
    int8-fp16 graph, ort-x86 the int8 one for ONNX Runtime's INT8 CPU kernels."""
    from ..quant.profiles import find_profile

    spec = find_profile(profile_name)
    return spec.deploy_precision if spec is not None else "int8"


def graphs_for(precision: str) -> tuple[str, ...]:
    """The graphs a bundle exported at `precision` carries, deploy graph first. `model.onnx` (int8)
    is always there: the CPU backends, the weakly typed TensorRT 10 build and the FP32 baseline
    (its Q/DQ stripped) read it. Quantized bundles carry the FP16 twin."""
    check_precision(precision)
    extra = {"int8-fp16": ("int8-fp16", "fp16"), "int8": ("fp16",), "fp16": ("fp16",), "fp32": ("fp32",)}[precision]
    ordered = [precision] + [g for g in ("int8", *extra) if g != precision]
    return tuple(dict.fromkeys(ordered))


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes from the image feature on: everything that reads the input of the last
    L2 normalization (ReduceL2), transitively. That is the normalization (ReduceL2, Clip, Expand,
    Div) and the logits MatMul of the folded head."""
    g = model.graph
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    norms = [n for n in g.node if n.op_type == "ReduceL2"]
    if not norms:
        return []
    names, stack = set(), [norms[-1].input[0]]
    while stack:
        for c in consumers.get(stack.pop(), []):
            if c.name not in names:
                names.add(c.name)
                stack.extend(c.output)
    return sorted(names)


@contextlib.contextmanager
def _quiet_modelopt():
    """AutoCast logs INFO lines through a handler on stdout, which --json reserves, and onnxscript's
    version converter warns about its fallback: errors only."""
    names = [n for n in logging.root.manager.loggerDict if n.startswith(("modelopt", "onnxscript"))] + ["modelopt", "onnxscript"]
    before = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 compute with the FP32 islands above; inputs and outputs keep their types (the input
    uint8 or float32, logits and embedding float32), so every runner feeds every graph alike.
    AutoCast's range rule (a reference run keeping FP32 whatever exceeds a bound on sample
    inputs) stays off: its reference pass held 9.8 GB for 8 images on ViT-B-32, and the fixed
    split validates at cosine >= 0.999 (docs/validation.md)."""
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as exc:
        raise UserError("the FP16 graphs (--precision int8-fp16 or fp16) need NVIDIA ModelOpt's AutoCast: "
                        "pip install 'p4q-export[fp16]', or export --precision int8 for the Q/DQ graph alone "
                        f"({type(exc).__name__}: {exc})") from None
    exclude = [re.escape(name) + "$" for name in head_nodes(model)]
    with tempfile.TemporaryDirectory(prefix="p4q-autocast-") as tmp:
        src = Path(tmp) / "model.onnx"
        onnx.save(model, str(src))
        with _quiet_modelopt():
            out = convert_to_mixed_precision(
                str(src), low_precision_type="fp16", op_types_to_exclude=list(FP32_OPS), nodes_to_exclude=exclude,
                keep_io_types=True, data_max=np.inf, opset=FP16_OPSET)
    out.producer_name = model.producer_name
    return out


def make_graph(int8_model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """The `precision` graph of an exported INT8 Q/DQ graph (the input is not modified)."""
    check_precision(precision)
    if precision == "int8":
        return with_int8_weights(int8_model)
    if precision == "int8-fp16":
        # AutoCast first (FP16 weights and scales), then the codes those give: the same codes ORT
        # computed at session start from the graph before weights were stored as INT8
        out = with_int8_weights(simplify(to_fp16(int8_model)))
    elif precision == "fp16":
        out = simplify(to_fp16(strip_qdq(int8_model)))
    else:
        out = strip_qdq(int8_model)
    del out.metadata_props[:]
    out.metadata_props.extend(int8_model.metadata_props)
    out.metadata_props.add(key="p4q_export.precision", value=precision)
    onnx.checker.check_model(out, full_check=True)
    return out


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed value in the graph (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def fp16_compute_nodes(model: onnx.ModelProto, types: dict[str, int]) -> int:
    """How many MatMul/Gemm/Conv nodes compute in FP16 (reported in the manifest); `types`:
    tensor_types(model)."""
    return sum(1 for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and types.get(n.output[0]) == TensorProto.FLOAT16)


def elem_type_name(code: int) -> str:
    return helper.tensor_dtype_to_np_dtype(code).name if code else "unknown"
