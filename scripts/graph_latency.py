"""Two ONNX graphs of the same network, timed alternately in one process (ORT CPU, batch 1), and
their outputs compared: read the ratio, never the milliseconds across machines.

    .venv/bin/python scripts/graph_latency.py OLD.onnx NEW.onnx [--runs 30] [--size 224]"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graphs", nargs=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sessions = [ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for p in args.graphs]
    name = sessions[0].get_inputs()[0].name
    x = np.random.default_rng(0).normal(size=(1, 3, args.size, args.size)).astype(np.float32)
    outs = [s.run(None, {name: x}) for s in sessions]
    print("max |output diff|:", [float(np.abs(a - b).max()) for a, b in zip(*outs)])
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(args.runs):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, {name: x})
            times[i].append(time.perf_counter() - t)
    p50 = [float(np.median(t)) for t in times]
    for path, p in zip(args.graphs, p50):
        print(f"{path}: p50 {1000 * p:.1f} ms")
    print(f"second/first p50: {p50[1] / p50[0]:.2f}")


if __name__ == "__main__":
    main()
