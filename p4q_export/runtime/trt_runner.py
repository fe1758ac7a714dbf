"""The `trt` backend: a bundle's TensorRT engine behind the runner interface
(callable images float32 N×3×S×S -> logits, with .backend and .precision).

Loaded lazily by runtime.base.open_runner; TensorRT is optional, so importing this module is
cheap and constructing a runner without TensorRT raises a UserError that says how to install it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .trt_engine import (
    check_engine_compatible,
    engine_batch_range,
    find_engine,
    gpu_errors,
    gpu_info,
    prepare_polygraphy_cuda,
    read_manifest,
    require_tensorrt,
)


class TrtRunner:
    backend = "trt"

    def __init__(self, bundle, engine_path: str | None = None, precision: str = "int8", fp16: bool = False, **_ignored):
        """`bundle`: a deploy.bundle.Bundle or a bundle directory. Without `engine_path` the
        manifest's engine for this GPU + TensorRT version and `precision` (int8 = any INT8
        engine, int8-fp16, fp16) is used. Batches above the engine's profile are split."""
        trt = require_tensorrt()
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes
        from polygraphy.backend.trt import TrtRunner as PolygraphyTrtRunner

        from ..deploy.bundle import manifest_dir

        self.bundle_dir = manifest_dir(getattr(bundle, "path", bundle))
        self.precision = "fp16" if fp16 else precision
        gpu = gpu_info()
        entry = self._entry_for(engine_path, gpu, trt.__version__)
        check_engine_compatible(entry, gpu, trt.__version__)
        self.engine_entry = entry
        self.precision = entry.get("precision", precision)
        plan = self.bundle_dir / entry["path"]
        if not plan.is_file():
            raise UserError(f"engine file {plan} is missing; rebuild it with `p4q-export build-engine {self.bundle_dir} --int8`")
        self.input_name = entry.get("input_name", "image")
        self.input_dtype = np.uint8 if entry.get("input_dtype") == "uint8" else np.float32
        self.output_name = entry.get("output_name", "logits")
        self.min_batch, self.max_batch = engine_batch_range(entry)
        self.plan_path = plan
        # polygraphy's runner owns the execution context and the device buffers (polygraphy.cuda),
        # and sets the input shape per call, which the dynamic-batch profile needs.
        prepare_polygraphy_cuda()
        with gpu_errors(f"TensorRT could not load {plan.name}"):
            self._runner = PolygraphyTrtRunner(EngineFromBytes(BytesFromPath(str(plan))))
            self._runner.activate()

    def _entry_for(self, engine_path, gpu, trt_version) -> dict:
        if engine_path is None:
            return find_engine(self.bundle_dir, gpu, trt_version, self.precision)
        rel = Path(engine_path)
        rel = rel.relative_to(self.bundle_dir) if rel.is_absolute() and self.bundle_dir in rel.parents else rel
        for entry in read_manifest(self.bundle_dir).get("engines", []):
            if Path(entry["path"]) == rel or Path(entry["path"]).name == rel.name:
                return entry
        raise UserError(f"{engine_path} is not recorded in {self.bundle_dir}/manifest.json; build engines with `p4q-export build-engine`")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run_all(images)[self.output_name]

    def run_all(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.ascontiguousarray(images, dtype=self.input_dtype)
        step = self.max_batch or len(images)
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(images), max(1, step)):
            chunk = images[start : start + step]
            n = len(chunk)
            if n < self.min_batch:  # a last partial batch below the profile's min: pad, then drop the padding
                chunk = np.concatenate([chunk, np.zeros((self.min_batch - n, *chunk.shape[1:]), chunk.dtype)])
            # polygraphy hands back views of its own device-to-host buffers: copy before the next call
            with gpu_errors(f"TensorRT inference with {self.plan_path.name} failed"):
                outputs = self._runner.infer({self.input_name: chunk})
            for name, value in outputs.items():
                chunks.setdefault(name, []).append(np.array(value[:n], dtype=np.float32))
        return {name: np.concatenate(parts) for name, parts in chunks.items()}

    def close(self) -> None:
        if getattr(self, "_runner", None) is not None and self._runner.is_active:
            self._runner.deactivate()
        self._runner = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
