"""Engine naming, the engine-manifest compatibility check, manifest bookkeeping, and the lazy
TensorRT import. Building needs TensorRT + a GPU: those tests skip where it is not installable."""

import json

import pytest
from support import tensorrt_api, tensorrt_api_versions, tensorrt_has

from p4q_export.errors import UserError
from p4q_export.runtime import trt_engine
from p4q_export.runtime.trt_engine import (
    BuilderSetup,
    BuildOptions,
    builder_setup,
    check_engine_compatible,
    engine_batch_range,
    engine_filename,
    engine_incompatibility,
    engine_matches,
    parse_batch_profile,
    record_engine,
    slugify,
)

trt_available = trt_engine.trt_available()
needs_trt = pytest.mark.skipif(not trt_available, reason="TensorRT is not installable on this machine (no NVIDIA index, no GPU)")

ORIN_ENTRY = {"path": "engines/orin-trt10.3.0.plan", "gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0",
              "precision": "int8"}
RTX = trt_engine.GpuInfo("NVIDIA GeForce RTX 4090", "8.9", 128)
AGX_ORIN = trt_engine.GpuInfo("Orin", "8.7", 16, "NVIDIA Jetson AGX Orin Developer Kit")
ORIN_NANO = trt_engine.GpuInfo("Orin", "8.7", 8, "NVIDIA Orin Nano Developer Kit")


def test_engine_names_are_slugified():
    assert slugify("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert slugify("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slugify("../../etc") == "etc"
    assert engine_filename("Orin", "10.3.0") == "orin-trt10.3.0.plan"
    assert engine_filename("Orin", "10.3.0", "fp16") == "orin-trt10.3.0-fp16.plan"


def test_same_gpu_and_version_is_accepted():
    entry = dict(ORIN_ENTRY, sm_count=16, module=AGX_ORIN.module)
    assert engine_incompatibility(entry, AGX_ORIN, "10.3.0") is None
    check_engine_compatible(entry, AGX_ORIN, "10.3.0")  # no exception
    rtx = dict(ORIN_ENTRY, gpu=RTX.name, compute_capability="8.9")  # a discrete GPU's entry from before sm_count
    assert engine_incompatibility(rtx, RTX, "10.3.0") is None


@pytest.mark.parametrize("gpu,version,needle", [
    (RTX, "10.3.0", "GPU"),
    (trt_engine.GpuInfo("Orin", "8.7", 16, AGX_ORIN.module), "10.7.0", "TensorRT 10.3.0 built it"),
    (trt_engine.GpuInfo("Orin", "7.2", 16, AGX_ORIN.module), "10.3.0", "compute capability"),
])
def test_other_gpu_or_tensorrt_is_refused_with_rebuild_hint(gpu, version, needle):
    entry = dict(ORIN_ENTRY, sm_count=16, module=AGX_ORIN.module)
    with pytest.raises(UserError) as err:
        check_engine_compatible(entry, gpu, version)
    message = str(err.value)
    assert needle in message and "build-engine" in message and "Rebuild" in message
    assert "\n" not in message


def test_engines_are_built_with_tensorrts_default_tf32_and_the_cli_can_turn_it_off(cli):
    """polygraphy's CreateConfig clears TF32 unless asked, unlike TensorRT's and trtexec's builds."""
    assert BuildOptions().tf32 is True and BuildOptions(tf32=False).tf32 is False
    proc = cli("build-engine", "--help")
    assert proc.returncode == 0 and "--no-tf32" in proc.stdout


def test_build_options_are_checked():
    with pytest.raises(UserError):
        BuildOptions(engine="fp8")
    with pytest.raises(UserError):
        BuildOptions(min_batch=8, opt_batch=4, max_batch=32)
    assert BuildOptions().engine == "int8" and BuildOptions(engine="fp16").engine == "fp16"
    assert parse_batch_profile("1,8,32") == (1, 8, 32)
    with pytest.raises(UserError):
        parse_batch_profile("1,8")


def test_record_engine_updates_entries_and_hashes_atomically(tmp_path):
    (tmp_path / "engines").mkdir()
    plan = tmp_path / "engines" / "orin-trt10.3.0.plan"
    plan.write_bytes(b"plan")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "p4q-bundle/1", "files": {"model.onnx": {"sha256": "x", "bytes": 1}}}))
    entry = dict(ORIN_ENTRY, sha256=trt_engine.file_sha256(plan), bytes=4)
    record_engine(tmp_path, entry)
    record_engine(tmp_path, dict(entry, build_seconds=2))  # same path: replaced, not duplicated
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert len(m["engines"]) == 1 and m["engines"][0]["build_seconds"] == 2
    assert m["files"]["engines/orin-trt10.3.0.plan"] == {"sha256": entry["sha256"], "bytes": 4}
    assert m["files"]["model.onnx"]["sha256"] == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_find_engine_explains_what_to_do(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"engines": [ORIN_ENTRY]}))
    gpu = trt_engine.GpuInfo("Orin", "8.7")  # no module: a discrete-GPU-like identity, as before
    assert trt_engine.find_engine(tmp_path, gpu, "10.3.0")["path"] == ORIN_ENTRY["path"]
    with pytest.raises(UserError, match="Rebuild"):
        trt_engine.find_engine(tmp_path, gpu, "10.8.0")
    with pytest.raises(UserError, match="build-engine .* --fp16"):
        trt_engine.find_engine(tmp_path, gpu, "10.3.0", "fp16")


@pytest.mark.skipif(trt_available, reason="checks the message shown where TensorRT is missing")
def test_missing_tensorrt_says_how_to_install():
    with pytest.raises(UserError) as err:
        trt_engine.require_tensorrt()
    message = str(err.value)
    assert "pip install 'p4q-export[" in message and "docs/tensorrt.md" in message and "\n" not in message


@pytest.mark.skipif(trt_available, reason="checks the message shown where TensorRT is missing")
def test_build_engine_cli_without_tensorrt_is_a_user_error(cli, random_testbed_bundle):
    proc = cli("build-engine", str(random_testbed_bundle), "--int8")
    assert proc.returncode == 2
    assert "pip install 'p4q-export[" in proc.stderr and "Traceback" not in proc.stderr


@needs_trt
@pytest.mark.tensorrt
def test_gpu_info_reports_a_name_and_capability():
    try:
        info = trt_engine.gpu_info()
    except UserError as exc:  # TensorRT imports, but no GPU is usable here (no driver, a container without one)
        pytest.skip(str(exc))
    assert info.name and "." in info.compute_capability and info.sm_count and info.sm_count > 0


def test_an_engine_from_another_orin_module_is_refused():
    """Every Orin is "Orin" 8.7: the SM count and the device-tree model tell AGX Orin (16 SMs) from
    Orin NX / Nano (8 or 4); an engine built on one is refused on another, with the reason."""
    agx_engine = dict(ORIN_ENTRY, sm_count=16, module=AGX_ORIN.module)
    reason = engine_incompatibility(agx_engine, ORIN_NANO, "10.3.0")
    assert reason and "16-SM" in reason and "8-SM" in reason and ORIN_NANO.module in reason and "build-engine" in reason
    same_sm_other_module = trt_engine.GpuInfo("Orin", "8.7", 16, "NVIDIA Jetson AGX Orin Industrial")
    assert "Industrial" in engine_incompatibility(agx_engine, same_sm_other_module, "10.3.0")
    # an entry that does not say which module built it cannot be trusted on a Jetson
    assert "does not record which Jetson module" in engine_incompatibility(ORIN_ENTRY, ORIN_NANO, "10.3.0")
    with pytest.raises(UserError, match="Rebuild"):
        check_engine_compatible(agx_engine, ORIN_NANO, "10.3.0")


def test_engine_names_carry_the_module_on_a_jetson():
    assert AGX_ORIN.label == "Orin 16sm" and ORIN_NANO.label == "Orin 8sm" and RTX.label == RTX.name
    assert engine_filename(AGX_ORIN.label, "10.3.0") == "orin-16sm-trt10.3.0.plan"
    assert engine_filename(ORIN_NANO.label, "10.3.0", "fp16") == "orin-8sm-trt10.3.0-fp16.plan"
    assert engine_filename(RTX.label, "10.13.3") == "nvidia-geforce-rtx-4090-trt10.13.3.plan"


NEW = {"int8", "int8-fp16", "fp16"}  # a bundle exported with --precision int8-fp16
OLD = {"int8"}  # a bundle from before --precision


@pytest.mark.parametrize("version", ["10.3.0", "10.13.2", "11.0.0", "11.4.1"])
def test_tensorrt_10_and_11_build_the_new_graphs_strongly_typed_without_flags(version):
    assert builder_setup(version, "int8", NEW) == BuilderSetup("int8-fp16", True, (), "int8-fp16")
    assert builder_setup(version, "fp16", NEW) == BuilderSetup("fp16", True, (), "fp16")


def test_builder_flags_only_where_a_version_still_needs_them():
    # TensorRT 10 builds an old bundle weakly typed with its flags; 11 has none
    old10 = builder_setup("10.3.0", "int8", OLD)
    assert (old10.graph, old10.strongly_typed, old10.flags, old10.precision) == ("int8", False, ("INT8", "FP16"), "int8")
    assert builder_setup("10.3.0", "fp16", OLD) == BuilderSetup("int8-stripped", False, ("FP16",), "fp16", builder_setup("10.3.0", "fp16", OLD).note)
    old11 = builder_setup("11.1.0", "int8", OLD)
    assert (old11.graph, old11.strongly_typed, old11.flags, old11.precision) == ("int8", True, (), "int8") and "FP32" in old11.note
    with pytest.raises(UserError, match="re-export"):
        builder_setup("11.1.0", "fp16", OLD)
    # TensorRT 8.6 (JetPack 6.0) has no strong typing: flags on model.onnx even for a new bundle
    jp60 = builder_setup("8.6.2", "int8", NEW)
    assert (jp60.graph, jp60.strongly_typed, jp60.flags) == ("int8", False, ("INT8", "FP16"))
    assert builder_setup("8.6.2", "fp16", NEW).flags == ("FP16",)
    with pytest.raises(UserError):
        builder_setup("ten", "int8", NEW)


def test_engine_kinds_match_precisions_and_the_batch_cap_is_the_profile_max():
    assert engine_matches("int8-fp16", "int8") and engine_matches("int8", "int8") and engine_matches("fp16", "fp16")
    assert not engine_matches("fp16", "int8") and not engine_matches("int8", "int8-fp16")
    assert engine_filename("Orin", "10.3.0", "int8-fp16") == engine_filename("Orin", "10.3.0", "int8") == "orin-trt10.3.0.plan"
    assert engine_batch_range({"build_options": {"min_batch": 2, "max_batch": 32}}) == (2, 32)
    assert engine_batch_range({"build_options": {"max_batch": 32}})[1] == 32 and engine_batch_range({}) == (1, None)


def _installed_api() -> dict:
    """The installed TensorRT's names, in the form of the recorded ones."""
    import tensorrt as trt

    classes = {name: dir(getattr(trt, name)) for name in ("BuilderFlag", "NetworkDefinitionCreationFlag",
                                                           "IExecutionContext", "ICudaEngine")}
    return {"version": trt.__version__, "classes": classes, "module": dir(trt)}


@pytest.mark.parametrize("version", [*tensorrt_api_versions(), "installed"])
def test_builder_setup_names_are_tensorrts_own(version):
    """Every name builder_setup hands to polygraphy exists in that TensorRT's API, and so do the
    execution-context calls the GPU timing uses: checked here against the real binding modules of
    TensorRT 10.3-11.4 (tests/data/tensorrt_api), and against the installed one where it imports."""
    if version == "installed":
        if not trt_available:
            pytest.skip("TensorRT is not installed here: the recorded versions are checked instead")
        names = _installed_api()
        version = names["version"]
    else:
        names = tensorrt_api(version)
    assert tensorrt_has(names, "NetworkDefinitionCreationFlag.STRONGLY_TYPED")
    assert tensorrt_has(names, "BuilderFlag.TF32")  # what build_engine sets and records
    for engine in ("int8", "fp16"):
        for graphs in (NEW, OLD):
            try:
                setup = builder_setup(version, engine, graphs)
            except UserError:
                assert version.startswith("11") and engine == "fp16" and graphs == OLD
                continue  # TensorRT 11 and an old bundle's FP16 engine: refused with a re-export hint
            for flag in setup.flags:
                assert tensorrt_has(names, f"BuilderFlag.{flag}"), (version, flag)
    for name in ("execute_async_v3", "set_tensor_address", "set_input_shape", "get_tensor_shape"):
        assert tensorrt_has(names, f"IExecutionContext.{name}"), name
    for name in ("num_io_tensors", "get_tensor_name", "get_tensor_dtype", "create_execution_context"):
        assert tensorrt_has(names, f"ICudaEngine.{name}"), name
