"""The extension points are real: a backend and a quantization profile registered at test time
(tests/registry_examples.py, no module of the package edited) reach every place that lists
backends or profiles. Each assertion fails where that place keeps a hand-written list."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import registry_examples as ex
from support import make_tiny_bundle

from p4q_export.errors import UserError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture
def examples():
    ex.register()
    yield ex
    ex.unregister()


@pytest.fixture
def tiny_bundle(tmp_path) -> Path:
    return make_tiny_bundle(tmp_path / "tiny bundle")


def _cli_help() -> dict[str, dict[str, str]]:
    """{command: {option: help}} of the real CLI, built in a fresh process after registering the
    examples (the commands build their help texts when they are imported)."""
    code = f"""
import json, sys
sys.path.insert(0, {str(TESTS)!r})
import registry_examples
registry_examples.register()
from typer.main import get_command
from p4q_export.cli import app
group = get_command(app)
print(json.dumps({{name: {{p.opts[0]: p.help for p in cmd.params if getattr(p, "help", None)}}
                  for name, cmd in group.commands.items()}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_the_cli_help_lists_what_is_registered():
    helps = _cli_help()
    for command in ("eval", "validate", "predict"):
        assert "ort-nospin (ONNX Runtime's fast kernels, threads not spinning)" in helps[command]["--backend"], command
    pairs, opt_in = helps["bench"]["--backends"].split("Timed only when named here:")
    assert "trt/int8, ort-nospin/fp32, ort-nospin/int8." in pairs and "ort-nospin/fp32" in opt_in
    assert "ort-nospin rows" in helps["bench"]["--threads"]
    for command in ("eval", "inspect"):
        assert "trt-w4 (trt with 4-bit weights) or ort-vnni (" in helps[command]["--quant"], command
    assert "ort-vnni (8-bit weights for ONNX Runtime on VNNI CPUs)" in helps["export"]["--profile"]
    assert "trt-w4" not in helps["export"]["--profile"]  # not exportable
    assert "int8 for ort-vnni" in helps["export"]["--precision"]


def test_bench_parses_plans_and_times_a_registered_backend(examples, tiny_bundle):
    from p4q_export.bench.run import (
        BenchRequest,
        parse_backends,
        plan_backends,
        ran_on,
        run_bench,
    )

    assert parse_backends("ort-nospin/int8,ort-nospin/fp32") == ["ort-nospin/int8", "ort-nospin/fp32"]
    cpu, _ = plan_backends("cpu", None)
    assert cpu[-1] == ("ort-nospin", "int8") and ("ort-nospin", "fp32") not in cpu  # bench_opt_in
    gpu, skipped = plan_backends("cuda", None)
    assert ("ort-nospin", "int8") not in gpu  # runs_on cpu: left out of a GPU bench, with the reason
    assert {"backend": "ort-nospin", "precision": "int8"}.items() <= skipped[-1].items() and "CPU only" in skipped[-1]["reason"]
    assert ran_on("ort-nospin", None) == "cpu"

    seen = []

    def recording_open(bundle, device, **opts):
        seen.append(opts)
        return ex.ORT_NOSPIN.open(bundle, device, **opts)

    ex.BACKENDS.unregister("ort-nospin")
    ex.BACKENDS.register(dataclasses.replace(ex.ORT_NOSPIN, open=recording_open))
    rep = run_bench(BenchRequest(bundle=tiny_bundle, device="cpu", batches=[1], iterations=1, warmup=0,
                                 backends=["ort-nospin/int8"], threads=1))
    assert [(r["backend"], r["precision"], r["ran_on"]) for r in rep["results"]] == [("ort-nospin", "int8", "cpu")]
    assert seen == [{"precision": "int8", "threads": 1}]  # `threads`: bench hands it --threads


def test_validate_and_the_runners_resolve_a_registered_backend(examples, tiny_bundle):
    from p4q_export.runtime import open_runner
    from p4q_export.runtime.validate import validate_bundle
    from p4q_export.tasks.validate import _resolve_backend

    assert _resolve_backend("ort-nospin", "exact") == "ort-nospin"
    with pytest.raises(UserError, match=r"expected ort, ort-exact, ort-fast, ort-nospin or trt"):
        _resolve_backend("onnx", "exact")
    with pytest.raises(UserError, match=r"use --backend ort, ort-exact, trt or ort-nospin"):
        validate_bundle(tiny_bundle, "torch", device="cpu")
    runner = open_runner(tiny_bundle, "ort-nospin", precision="int8")
    assert runner.backend == "ort-nospin"
    assert runner.session.get_session_options().get_session_config_entry(ex.SPIN) == "0"
    with pytest.raises(UserError, match=r"expected one of: torch, ort, ort-exact, trt, ort-nospin"):
        open_runner(tiny_bundle, "onnx")


def test_the_quantizer_and_export_resolve_a_registered_profile(examples):
    from p4q_export.config import TrainRecipe
    from p4q_export.deploy.fold import resolve_profile
    from p4q_export.deploy.precision import default_precision
    from p4q_export.p4q.recipe import recipe_profile
    from p4q_export.quant import QuantLinear, get_profile
    from p4q_export.quant.profiles.paper import SPEC as PAPER

    w4 = get_profile("trt-w4")
    assert (w4.bits, w4.w_narrow_range, w4.a_symmetric, w4.a_per_channel, w4.exportable) == ("4/8", True, True, False, False)
    layer = QuantLinear(16, 4, profile=w4)
    assert (layer.weight_quantizer.qmin, layer.weight_quantizer.qmax, layer.input_quantizer.qmax) == (-7, 7, 127)
    with pytest.raises(UserError, match=r"supports only --bits 4/8, got 8/8; use --profile paper for other bit widths"):
        get_profile("trt-w4", "8/8")
    with pytest.raises(UserError, match=r"minmax \(narrow range ±7\)"):
        get_profile("trt-w4", w_observer="omse")
    with pytest.raises(UserError, match="choose one of trt, ort-x86, paper, trt-w4, ort-vnni"):
        get_profile("w4")
    assert recipe_profile(TrainRecipe(profile="trt-w4", bits="4/8", act_symmetric=False)).a_symmetric  # fixed by trt-w4
    # export refuses it with its reason and names the exportable profiles, ort-vnni included
    with pytest.raises(UserError, match=r"'trt-w4' is 4-bit weight fake quantization and not deployable: use --profile trt, ort-x86 or ort-vnni"):
        resolve_profile("trt-w4")
    assert get_profile("paper").export_reason.endswith("use --profile trt, ort-x86 or ort-vnni")
    assert resolve_profile("ort-vnni").bits == "8/8" and default_precision("ort-vnni") == "int8"

    # the fields other profiles leave at their defaults reach the quantizers and the recipe too
    full = dataclasses.replace(ex.TRT_W4, name="trt-w4-full", w_narrow_range=False)
    free = dataclasses.replace(PAPER, name="paper-too")
    twin = dataclasses.replace(ex.TRT, name="trt-too")
    extra = (full, free, twin)
    for spec in extra:
        ex.PROFILES.register(spec)
    try:
        assert QuantLinear(16, 4, profile=get_profile("trt-w4-full")).weight_quantizer.qmin == -8
        asym = recipe_profile(TrainRecipe(profile="paper-too", bits="4/4", act_symmetric=False, act_per_channel=True))
        assert (asym.a_symmetric, asym.a_per_channel) == (False, True)
        assert default_precision("trt-too") == "int8-fp16"
    finally:
        for spec in extra:
            ex.PROFILES.unregister(spec.name)


def test_the_contributing_examples_are_one_module_plus_one_registry_line(tmp_path, tiny_bundle):
    """CONTRIBUTING.md's diffs apply to today's registries, add one line there and one module, and
    that module, loaded as the package's own, is a working backend / profile."""
    from p4q_export.quant.profiles import REGISTRY as PROFILES
    from p4q_export.quant.profiles import get_profile
    from p4q_export.runtime import open_runner
    from p4q_export.runtime.backends import REGISTRY as BACKENDS

    diffs = re.findall(r"```diff\n(.*?)```", (REPO / "CONTRIBUTING.md").read_text(), re.DOTALL)
    assert len(diffs) == 2
    for diff, registry in zip(diffs, (BACKENDS, PROFILES)):
        registry_part, module_part = diff.split("diff --git ")[1:]
        registry_file = REPO / re.search(r"^\+\+\+ b/(\S+)", registry_part, re.MULTILINE)[1]
        hunk = registry_part.split("\n@@", 1)[1].split("\n", 1)[1].splitlines()
        assert [line for line in hunk if line[0] in "+-"] == [f'+    "{Path(module_part.split()[0]).stem}",']
        assert "\n".join(line[1:] for line in hunk if line[0] == " ") in registry_file.read_text()
        assert "new file mode" in module_part
        body = module_part.split("\n@@", 1)[1].split("\n", 1)[1].splitlines()
        assert all(line.startswith("+") for line in body)
        path = tmp_path / Path(module_part.split()[0]).name
        path.write_text("".join(line[1:] + "\n" for line in body))
        package = registry_file.parent.relative_to(REPO).as_posix().replace("/", ".")
        spec = importlib.util.spec_from_file_location(f"{package}.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        registry.register(module.SPEC)
        try:
            if registry is BACKENDS:
                assert open_runner(tiny_bundle, module.SPEC.name, precision="int8").backend == "ort-nospin"
            else:
                assert get_profile(module.SPEC.name).bits == "4/8"
        finally:
            registry.unregister(module.SPEC.name)
