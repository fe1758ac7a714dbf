"""Every TensorRT name the package calls exists in the real binding modules of TensorRT 10.3,
10.13, 10.16, 11.0 and 11.4, so the check runs on every machine instead of skipping where
TensorRT is missing. The name lists (tests/data/tensorrt_api/) are read from PyPI's
tensorrt-cu12-bindings / tensorrt-cu13-bindings wheels by scripts/trt_api_names.py: their
tensorrt.so imported against stand-in libnvinfer stubs, dir() of every class."""

import ast
from pathlib import Path

import pytest
from support import tensorrt_api as api
from support import tensorrt_api_versions
from support import tensorrt_has as exists

PACKAGE = Path(__file__).parents[1] / "p4q_export"
VERSIONS = tensorrt_api_versions()
# objects the code holds under these names, by the TensorRT class they are
HELD = {"engine": "ICudaEngine", "context": "IExecutionContext"}


def called_names(source: str) -> set[str]:
    """'Class.member' and 'module_name' for every use of the tensorrt module (`trt`) and of the
    engine/context objects (`self.engine.x`, `self.context.x`) in one file; calls on the result
    of `trt.Class(...)` count as members of Class."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id == "trt":
            names.add(".".join(chain[:2]))
        elif isinstance(base, ast.Name) and base.id == "self" and len(chain) == 2 and chain[0] in HELD:
            names.add(f"{HELD[chain[0]]}.{chain[1]}")
        elif isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute) and \
                isinstance(base.func.value, ast.Name) and base.func.value.id == "trt":
            names.add(f"{base.func.attr}.{chain[0]}")
    return names


def package_names() -> dict[str, set[str]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        names = called_names(path.read_text())
        if names:
            out[str(path.relative_to(PACKAGE))] = names
    return out


def test_the_scan_sees_the_calls_the_timing_and_build_code_make():
    """Not vacuous: the scan finds the names that matter (and would find a misspelt one)."""
    found = set().union(*package_names().values())
    for name in ("Runtime.deserialize_cuda_engine", "init_libnvinfer_plugins", "nptype", "Logger.ERROR",
                 "MemoryPoolType.WORKSPACE", "IExecutionContext.execute_async_v3", "ICudaEngine.num_io_tensors",
                 "IExecutionContext.set_tensor_address", "ICudaEngine.get_tensor_profile_shape"):
        assert name in found, name
    assert called_names("trt.Runtime(x).deserialise_cuda_engine(b)") == {"Runtime.deserialise_cuda_engine", "Runtime"}
    assert not exists(api(VERSIONS[0]), "Runtime.deserialise_cuda_engine")


def test_five_versions_from_10_3_to_11_4_are_checked():
    assert len(VERSIONS) == 5 and VERSIONS[0].startswith("10.3") and VERSIONS[-1].startswith("11.4")
    assert any(v.startswith("11.0") for v in VERSIONS)
    for version in VERSIONS:
        assert api(version)["method"] == "introspection"  # exact class -> member map, not strings


@pytest.mark.parametrize("version", VERSIONS)
def test_every_name_the_package_calls_exists(version):
    names = api(version)
    missing = sorted(f"{file}: trt.{n}" for file, used in package_names().items() for n in used
                     if n not in ("__version__", "__file__") and not exists(names, n))
    assert not missing, f"TensorRT {version} has no {missing}"
    assert "__version__" in names["module"]


def test_tensorrt_11_removed_the_precision_flags_that_10_still_has():
    """Why builder_setup sets no flags on 11: the names are gone there (read from the wheels)."""
    for version in VERSIONS:
        has = exists(api(version), "BuilderFlag.INT8") and exists(api(version), "BuilderFlag.FP16")
        assert has == version.startswith("10"), version


def test_plugins_are_initialised_before_an_engine_is_deserialized():
    """An engine with plugin layers deserializes only after init_libnvinfer_plugins."""
    source = (PACKAGE / "bench" / "trt_timing.py").read_text()
    assert 0 < source.index("trt.init_libnvinfer_plugins(") < source.index(".deserialize_cuda_engine(")
