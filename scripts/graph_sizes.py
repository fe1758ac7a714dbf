"""A bundle's sizes next to ONNX Runtime's own INT8 export of the same network: the FP32 graph
(the bundle's int8 graph with its Q/DQ stripped), each graph of the bundle, the deploy and
validation folders, and `onnxruntime.quantization.quantize_static` (QDQ, per-channel INT8
weights, calibrated on a few of the bundle's test images) of that FP32 graph.

    .venv/bin/python scripts/graph_sizes.py BUNDLE [--data fashion-mnist] [--calib 16]"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx


def _ort_quantize_static(fp32: onnx.ModelProto, inputs: np.ndarray, input_name: str) -> tuple[int, int]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: inputs[i : i + 1]} for i in range(len(inputs))])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(fp32, str(src))
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        return dst.stat().st_size, len(onnx.load(str(dst)).graph.node)


def main() -> None:
    from p4q_export.data import load_dataset
    from p4q_export.deploy.bundle import load_bundle
    from p4q_export.deploy.export_onnx import simplify
    from p4q_export.deploy.qdq import strip_qdq
    from p4q_export.runtime.inputs import dataset_input_batches

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--calib", type=int, default=16)
    args = ap.parse_args()
    b = load_bundle(args.bundle)
    fp32 = strip_qdq(onnx.load(str(b.onnx_path)))
    rows = {"fp32 graph (Q/DQ stripped)": {"bytes": len(fp32.SerializeToString()), "nodes": len(fp32.graph.node)}}
    for precision in b.graphs:
        g = onnx.load(str(b.graph_path(precision)))
        ops = Counter(n.op_type for n in g.graph.node)
        rows[f"{precision} graph ({b.graphs[precision].get('folder', '.')}/{b.graphs[precision]['file']})"] = {
            "bytes": b.graph_path(precision).stat().st_size, "nodes": len(g.graph.node),
            "shape_ops": sum(ops[k] for k in ("Shape", "Gather", "Concat", "Constant"))}
    sizes = b.manifest.get("sizes", {})
    rows["deploy folder"] = {"bytes": sizes.get("deploy_bytes")}
    rows["validation folder"] = {"bytes": sizes.get("validation_bytes")}
    x = np.concatenate(list(dataset_input_batches(b, load_dataset(args.data, "test"), args.calib, indices=np.arange(args.calib))))
    # folded first (W -> Transpose becomes W^T), as ORT's quant_pre_process would: its quantizer
    # takes MatMul weights from initializers only
    size, nodes = _ort_quantize_static(simplify(fp32), x, b.input_name)
    rows["ORT quantize_static (QDQ, per-channel INT8)"] = {"bytes": size, "nodes": nodes}
    print(json.dumps(rows, indent=2))
    for name, r in rows.items():
        mb = f"{r['bytes'] / 1e6:.1f} MB" if r.get("bytes") is not None else "-"
        print(f"| {name} | {mb} | {r.get('nodes', '')} |")


if __name__ == "__main__":
    main()
