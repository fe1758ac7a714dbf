"""TensorRT engines for a bundle: build (through polygraphy's TensorRT loaders), record in the
bundle manifest, and refuse engines built for another GPU or TensorRT version.

TensorRT and the CUDA bindings are an optional extra (`pip install p4q-export[tensorrt]`); they are
imported lazily so that every other command works without them. The pure parts (names, the
compatibility check, manifest bookkeeping) need neither and are tested everywhere.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..manifest import file_sha256, read_json, write_bytes_atomic, write_json_atomic
from .cuda_env import (  # noqa: F401 (re-exported: the TensorRT API of this package is here)
    GpuInfo,
    gpu_errors,
    gpu_info,
    prepare_polygraphy_cuda,
    require_tensorrt,
    tensorrt_install,
    trt_available,
)

ENGINES_DIR = "engines"


# ----------------------------------------------------------------------------- names

def slugify(text: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'nvidia-geforce-rtx-4090' (safe as a file name on any OS)."""
    slug = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return slug or "gpu"


def engine_filename(gpu_name: str, trt_version: str, precision: str = "int8") -> str:
    """The contract's name for the INT8 engine (int8 or int8-fp16: one per GPU and TensorRT
    version); the FP16 twin gets a suffix so both coexist."""
    suffix = "" if precision.startswith("int8") else f"-{precision}"
    return f"{slugify(gpu_name)}-trt{trt_version}{suffix}.plan"


# ----------------------------------------------------------------------------- compatibility

def engine_incompatibility(entry: dict, gpu: GpuInfo, trt_version: str) -> str | None:
    """Why an engine entry cannot run here, or None. Engines are tied to the GPU model (its
    compute capability and SM count: every Orin module is "Orin" 8.7, with 16, 8 or 4 SMs) and to
    the exact TensorRT version that built them."""
    problems = []
    if slugify(str(entry.get("gpu", ""))) != slugify(gpu.name):
        problems.append(f"it was built on GPU '{entry.get('gpu')}', this is '{gpu.name}'")
    if str(entry.get("compute_capability", "")) != str(gpu.compute_capability):
        problems.append(f"compute capability {entry.get('compute_capability')} != {gpu.compute_capability}")
    problems += _module_problems(entry, gpu)
    if str(entry.get("tensorrt", "")) != str(trt_version):
        problems.append(f"TensorRT {entry.get('tensorrt')} built it, this machine has TensorRT {trt_version}")
    if not problems:
        return None
    return (f"engine {entry.get('path', '?')} cannot be loaded here: " + "; ".join(problems)
            + ". Rebuild it on this device with `p4q-export build-engine BUNDLE --int8`")


def _module_problems(entry: dict, gpu: GpuInfo) -> list[str]:
    """The Jetson module check: the same SM count and device-tree model. On a Jetson an entry that
    does not say which module built it is refused too (it may come from another Orin)."""
    built_sm, built_module = entry.get("sm_count"), entry.get("module")
    if gpu.module and built_sm is None and built_module is None:
        return [f"it does not record which Jetson module built it, this is {gpu.module} ({gpu.sm_count} SMs)"]
    problems = []
    if built_sm is not None and gpu.sm_count is not None and int(built_sm) != int(gpu.sm_count):
        problems.append(f"it was built on a {built_sm}-SM {entry.get('module') or entry.get('gpu')}, "
                        f"this is a {gpu.sm_count}-SM {gpu.module or gpu.name}")
    elif built_module and gpu.module and built_module != gpu.module:
        problems.append(f"it was built on {built_module}, this is {gpu.module}")
    return problems


def check_engine_compatible(entry: dict, gpu: GpuInfo, trt_version: str) -> None:
    """Refuse (UserError, exit 2) an engine built for another GPU, module or TensorRT version."""
    reason = engine_incompatibility(entry, gpu, trt_version)
    if reason:
        raise UserError(reason)


# ----------------------------------------------------------------------------- manifest bookkeeping

def read_manifest(bundle_dir: Path) -> dict:
    """The manifest as it stands (no hash check: engines are looked up on every run)."""
    from ..deploy.bundle import manifest_dir

    return read_json(manifest_dir(bundle_dir) / "manifest.json",
                     f"{bundle_dir} is not a bundle (no manifest.json); make one with `p4q-export export`")


def record_engine(bundle_dir: Path, entry: dict) -> dict:
    """Add (or replace, same path) an engine entry in manifest.json, with its hash in the bundle's
    "files" map (so load_bundle verifies the engine too); atomic write. The one manifest updater."""
    from ..deploy.bundle import manifest_dir, seal

    bundle_dir = manifest_dir(bundle_dir)
    manifest = read_manifest(bundle_dir)
    engines = [e for e in manifest.get("engines", []) if e.get("path") != entry["path"]]
    engines.append(entry)
    manifest["engines"] = engines
    manifest.setdefault("files", {})[entry["path"]] = {"sha256": entry["sha256"], "bytes": entry["bytes"]}
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json_atomic(bundle_dir / "manifest.json", seal(manifest))
    return manifest


def engine_matches(entry_precision: str, wanted: str) -> bool:
    """`wanted` is a precision (int8-fp16, int8, fp16) or the kind `int8` = any INT8 engine."""
    return entry_precision == wanted or (wanted == "int8" and entry_precision.startswith("int8"))


def find_engine(bundle_dir: Path, gpu: GpuInfo, trt_version: str, precision: str = "int8") -> dict:
    """The manifest entry of an engine that runs here, or a UserError that says to rebuild."""
    entries = [e for e in read_manifest(bundle_dir).get("engines", []) if engine_matches(e.get("precision", "int8"), precision)]
    for entry in entries:
        if engine_incompatibility(entry, gpu, trt_version) is None:
            return entry
    if entries:  # explain why the closest one was refused
        check_engine_compatible(entries[-1], gpu, trt_version)
    if precision not in ("int8", "int8-fp16", "fp16"):
        raise UserError(f"TensorRT engines are int8 or fp16 (build-engine --int8 / --fp16), not {precision}")
    flags = "--int8" if precision.startswith("int8") else "--fp16"
    raise UserError(f"{bundle_dir} has no {precision} TensorRT engine for {gpu.name}: build one with "
                    f"`p4q-export build-engine {bundle_dir} {flags}`")


# ----------------------------------------------------------------------------- building

@dataclass
class BuildOptions:
    engine: str = "int8"  # int8 (from the bundle's quantized graph) or fp16 (from the FP16 twin)
    workspace_gb: float = 4.0
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    timing_cache: str | None = None
    # TF32 for the FP32 layers, as TensorRT's and trtexec's own builds (polygraphy clears it unless asked)
    tf32: bool = True

    def __post_init__(self):
        if self.engine not in ("int8", "fp16"):
            raise UserError("build-engine needs --int8 (the quantized graph) or --fp16 (the FP16 twin)")
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise UserError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min_batch},{self.opt_batch},{self.max_batch}")
        if self.workspace_gb <= 0:
            raise UserError("--workspace-gb must be positive")


@dataclass(frozen=True)
class BuilderSetup:
    """How one TensorRT version builds one engine of a bundle: the graph parsed, strong typing,
    and the BuilderFlag names set (weakly typed builds only). Names are TensorRT's own
    (trt.BuilderFlag.<name>, trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)."""

    graph: str  # a key of the bundle's graphs; "int8-stripped" = model.onnx without its Q/DQ
    strongly_typed: bool
    flags: tuple[str, ...]
    precision: str  # what the engine entry records: the precision of the bundle graph it was built from
    note: str = ""


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise UserError(f"cannot read a TensorRT version from {version!r}") from None


def builder_setup(trt_version: str, engine: str, graphs) -> BuilderSetup:
    """The build for `engine` (int8 | fp16) from a bundle holding `graphs` (precision keys).

    TensorRT >= 10: strongly typed, the graph decides every layer's type (on 11 strong typing is
    the only mode and the creation flag is accepted and ignored). TensorRT 11 has no precision
    flags at all, so a bundle without the graph asked for must be re-exported. TensorRT 10 can
    still build an old bundle's graphs weakly typed with its flags, and TensorRT 8.6 (JetPack
    6.0; JetPack 5 has 8.4/8.5.2) has no strong typing: flags only, from model.onnx."""
    major = trt_major(trt_version)
    graphs = set(graphs)
    reexport = "re-export the bundle with `p4q-export export ... --precision int8-fp16` (it carries both graphs)"
    if engine == "int8":
        if major >= 10 and "int8-fp16" in graphs:
            return BuilderSetup("int8-fp16", True, (), "int8-fp16")
        if major >= 11:
            return BuilderSetup("int8", True, (), "int8", f"unquantized layers run in FP32: for FP16 there, {reexport}")
        return BuilderSetup("int8", False, ("INT8", "FP16"), "int8",
                            "weakly typed: Q/DQ pin INT8, the FP16 flag lets TensorRT pick FP16 elsewhere")
    if engine != "fp16":
        raise UserError(f"unknown engine kind {engine!r} (int8 or fp16)")
    if major >= 10 and "fp16" in graphs:
        return BuilderSetup("fp16", True, (), "fp16")
    if major >= 11:
        raise UserError(f"this bundle has no FP16 graph and TensorRT {trt_version} has no FP16 builder flag: {reexport}")
    return BuilderSetup("int8-stripped", False, ("FP16",), "fp16", "weakly typed: model.onnx without Q/DQ, FP16 flag")


def parse_batch_profile(text: str) -> tuple[int, int, int]:
    """'1,8,32' -> (1, 8, 32)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--batch expects min,opt,max (e.g. 1,8,32), got {text!r}") from None
    if len(values) != 3:
        raise UserError(f"--batch expects three numbers min,opt,max, got {text!r}")
    return values  # type: ignore[return-value]


def _onnx_for(bundle, setup: BuilderSetup, workdir: Path) -> Path:
    """The ONNX file the setup parses (the stripped twin is written to `workdir`)."""
    if setup.graph != "int8-stripped":
        return bundle.graph_path(setup.graph)
    import onnx

    from ..deploy.qdq import strip_qdq

    fp_path = workdir / "model.fp32.onnx"
    onnx.save(strip_qdq(onnx.load(str(bundle.onnx_path))), str(fp_path))
    return fp_path


def engine_batch_range(entry: dict) -> tuple[int, int | None]:
    """The smallest and largest batch an engine's optimization profile accepts (max None: unknown)."""
    options = entry.get("build_options") or {}
    return int(options.get("min_batch") or 1), (int(options["max_batch"]) if options.get("max_batch") else None)


def build_engine(bundle_dir: Path, options: BuildOptions) -> dict:
    """Build a TensorRT engine for this GPU, save it under BUNDLE/engines/, record it in the
    manifest and return its entry. Needs TensorRT and a GPU."""
    import tempfile

    trt = require_tensorrt()
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        Profile,
    )

    from ..deploy.bundle import load_bundle

    bundle = load_bundle(bundle_dir)  # verifies the hashes before building from the graph
    bundle_dir = bundle.path  # engines go to deploy/: the device needs them
    io = bundle.engine_io
    setup = builder_setup(trt.__version__, options.engine, bundle.graphs)
    gpu = gpu_info()
    prepare_polygraphy_cuda()
    input_name, size = io["input_name"], io["image_size"]
    rel = f"{ENGINES_DIR}/{engine_filename(gpu.label, trt.__version__, setup.precision)}"
    timing_cache = Path(options.timing_cache) if options.timing_cache else \
        bundle_dir / ENGINES_DIR / f"{slugify(gpu.label)}-trt{trt.__version__}.timing-cache"
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    # TensorRT versions without the flag have no TF32 switch to record
    tf32 = options.tf32 if hasattr(trt.BuilderFlag, "TF32") else None

    shape = lambda n: (n, 3, size, size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, gpu_errors(f"TensorRT could not build the {setup.precision} engine"):
        profile = Profile().add(input_name, min=shape(options.min_batch), opt=shape(options.opt_batch), max=shape(options.max_batch))
        onnx_path = _onnx_for(bundle, setup, Path(tmp))
        network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=setup.strongly_typed)
        flags = {name.lower(): True for name in setup.flags}  # CreateConfig(int8=..., fp16=...) sets BuilderFlag.INT8/FP16
        config = CreateConfig(
            **flags,
            tf32=bool(tf32),
            profiles=[profile],
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(options.workspace_gb * (1 << 30))},
            load_timing_cache=str(timing_cache) if timing_cache.exists() else None,
        )
        serialized = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(timing_cache))()
    plan = bundle_dir / rel
    write_bytes_atomic(plan, bytes(serialized))
    entry = {
        "path": rel,
        "gpu": gpu.name,
        "compute_capability": gpu.compute_capability,
        "sm_count": gpu.sm_count,
        "module": gpu.module,
        "tensorrt": trt.__version__,
        "install": tensorrt_install(trt),
        "precision": setup.precision,
        "graph": onnx_path.name if setup.graph != "int8-stripped" else f"{bundle.onnx_path.name} (Q/DQ stripped)",
        **io,
        "build_options": {**asdict(options), "tf32": tf32, "strongly_typed": setup.strongly_typed,
                          "builder_flags": list(setup.flags)},
        "note": setup.note,
        "build_seconds": round(time.perf_counter() - started, 2),
        "bytes": plan.stat().st_size,
        "sha256": file_sha256(plan),
    }
    record_engine(bundle_dir, entry)
    return entry
