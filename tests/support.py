"""Helpers several test modules share (tests import this module, never each other)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE, CLASSES = 8, 4


def tiny_qdq_model() -> onnx.ModelProto:
    """image N×3×8×8 → Flatten → Q/DQ → MatMul(DQ(int8 W)) → logits N×4: the shape of a bundle graph."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(3 * SIZE * SIZE, CLASSES), dtype=np.int8)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "zero"), numpy_helper.from_array(np.array(0.05, np.float32), "x_scale")]
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("QuantizeLinear", ["flat", "x_scale", "zero"], ["flat_q"]),
             helper.make_node("DequantizeLinear", ["flat_q", "x_scale", "zero"], ["flat_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "zero"], ["w"]),
             helper.make_node("MatMul", ["flat_dq", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def make_tiny_bundle(out: Path) -> Path:
    from p4q_export.deploy.bundle import FORMAT, write_bundle

    def write(deploy: Path, validation: Path) -> dict:
        onnx.save(tiny_qdq_model(), str(deploy / "model.onnx"))
        (deploy / "classnames.txt").write_text("\n".join(f"class{i}" for i in range(CLASSES)) + "\n")
        return {"format": FORMAT, "model": {"name": "tiny"}, "profile": {"name": "ort-x86"},
                "inputs": [{"name": "image", "shape": ["N", 3, SIZE, SIZE], "dtype": "float32"}],
                "outputs": [{"name": "logits", "shape": ["N", CLASSES], "dtype": "float32"}],
                "preprocessing": {"image_size": SIZE, "mean": [0.5] * 3, "std": [0.5] * 3},
                "classnames": [f"class{i}" for i in range(CLASSES)],
                "accuracy": {"fp_zeroshot": {"top1": 0.81}, "int8": {"top1": 0.8}}}

    write_bundle(out, write)
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for sshd and torchrun rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TENSORRT_API = Path(__file__).parent / "data" / "tensorrt_api"


def tensorrt_api_versions() -> list[str]:
    """The TensorRT versions whose binding-module names are recorded (scripts/trt_api_names.py)."""
    versions = [json.loads(p.read_text())["version"] for p in TENSORRT_API.glob("tensorrt-*.json")]
    return sorted(versions, key=lambda v: tuple(int(x) for x in v.split(".")))


def tensorrt_api(version: str) -> dict:
    """{'classes': {class: [members]}, 'module': [names]} of that version's `tensorrt` module."""
    return json.loads((TENSORRT_API / f"tensorrt-{version}.json").read_text())


def tensorrt_has(names: dict, dotted: str) -> bool:
    """'Class.member' or 'module_name' exists in a tensorrt_api() listing."""
    cls, _, member = dotted.partition(".")
    return cls in names["module"] if not member else member in names["classes"].get(cls, [])
