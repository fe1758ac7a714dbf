"""Acceptance on the pretrained test-bed CLIP: export → validate against the PyTorch reference
(ORT exact Q/DQ for the trt profile, ORT's fast INT8 kernels for ort-x86), and a trained P4Q run
whose exported bundle reproduces the run's own accuracy. Validation uses a 1,000-image subset of
the Fashion-MNIST test split to stay quick (the full 10k is measured in the export report)."""

from __future__ import annotations

import json

import pytest

LIMIT = "1000"


def _export(cli, source, out, *extra):
    proc = cli("--json", "export", str(source), "--out", str(out), *extra, check=True)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def trt_bundle(testbed_model, tmp_path_factory):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("tb") / "trt"
    _export(run_cli, testbed_model, out, "--data", "fashion-mnist", "--profile", "trt", "--calib-images", "512")
    return out


def test_validate_ort_exact_matches_reference(trt_bundle, cli):
    proc = cli("--json", "validate", str(trt_bundle), "--backend", "ort", "--data", "fashion-mnist", "--limit", LIMIT, check=True)
    r = json.loads(proc.stdout)
    assert r["backend"] == "ort-exact" and r["n"] == 1000
    assert r["cosine_min"] >= 0.999 and r["top1_agreement"] >= 0.99 and r["passed"] is True
    # a default export has the embedding output, and that is the cosine that gates; the logits agree too
    assert r["compared"] == "embedding" and r["cosine_min"] == r["outputs"]["embedding"]["cosine_min"]
    assert r["outputs"]["logits"]["cosine_min"] >= 0.999
    # a trained classifier rarely ties: the tie rule sets aside few images and hides no disagreement.
    # The int8-fp16 graph's FP16 rounding flips a few near-ties: 8 of 1,000 with the graph before
    # simplification, 11 after (its embedding cosine min rose, 0.999547 -> 0.999584)
    assert r["ties"] <= 20 and r["top1_agreement_all"] >= 0.985
    assert {"cosine_mean", "max_abs_diff"} <= set(r)
    assert abs(r["accuracy"]["ort-exact"]["top1"] - r["accuracy"]["torch"]["top1"]) <= 0.005
    assert r["accuracy"]["torch"]["top1"] > 0.7  # a real classifier, not noise
    assert json.loads((trt_bundle / "deploy" / "validation.json").read_text())["passed"] is True


def test_impossible_threshold_fails_with_exit_1(trt_bundle, cli):
    # an exact 1.0 is within range (a threshold above 1 is bad input, exit 2) and no INT8 backend reaches it
    proc = cli("--json", "validate", str(trt_bundle), "--data", "fashion-mnist", "--limit", "200", "--cosine-min", "1.0")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["passed"] is False and "cosine_min" in proc.stderr


def test_ort_fast_int8_on_ort_x86_bundle_passes(testbed_model, tmp_path, cli):
    out = tmp_path / "x86"
    _export(cli, testbed_model, out, "--data", "fashion-mnist", "--profile", "ort-x86", "--calib-images", "512", "--uint8-input",
            "--no-embedding")
    proc = cli("--json", "validate", str(out), "--backend", "ort", "--ort-mode", "fast", "--data", "fashion-mnist", "--limit", LIMIT)
    r = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert r["backend"] == "ort" and r["passed"] is True and r["cosine_min"] >= 0.999 and r["top1_agreement"] >= 0.99
    assert r["compared"] == "logits" and list(r["outputs"]) == ["logits"]  # no embedding output to compare


@pytest.mark.slow
@pytest.mark.full
def test_trained_run_bundle_reproduces_run_accuracy(testbed_model, tmp_path, cli, repo_root):
    """A short P4Q run (10 epochs, scored on a 1,000-image sample) → export → validate, and the
    bundle's top-1 on the run's own evaluation sample equals the run's accuracy.trained."""
    from p4q_export.data import load_dataset
    from p4q_export.data.samplers import eval_subset_indices as eval_subset
    from p4q_export.deploy.bundle import load_bundle
    from p4q_export.runtime import open_runner, run_batched
    from p4q_export.runtime.inputs import dataset_inputs

    run = tmp_path / "run"
    cli("--json", "train", "--recipe", str(repo_root / "recipes" / "testbed-p4q-w8a8.yaml"), "--set", f"model={testbed_model}",
        "--set", "epochs=10", "--set", "eval_limit=1000", "--set", "calib_images=512", "--out", str(run), check=True)
    metrics = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "bundle"
    result = _export(cli, run, out)
    assert result["source"] == "run" and result["quantized_layers"] == 17 + 2  # tower + the adapter's 2
    assert load_bundle(out).manifest["accuracy"] == metrics["accuracy"]

    # the deploy graph (int8-fp16) and the FP16 twin, each against its reference
    for precision in ("int8-fp16", "fp16"):
        r = json.loads(cli("--json", "validate", str(out), "--data", "fashion-mnist", "--limit", LIMIT, "--precision", precision,
                           check=True).stdout)
        assert r["precision"] == precision and r["cosine_min"] >= 0.999 and r["top1_agreement"] >= 0.99 and r["passed"]

    bundle = load_bundle(out)
    test = load_dataset("fashion-mnist", "test")
    sample = test.subset(eval_subset(len(test), 1000))
    logits = run_batched(open_runner(bundle, "ort-exact", precision="int8"), dataset_inputs(bundle, sample))
    top1 = float((logits.argmax(1) == sample.labels).mean())
    trained = metrics["accuracy"]["trained"]
    trained = trained["top1"] if isinstance(trained, dict) else trained
    assert abs(top1 - trained) <= 0.005, (top1, trained)


@pytest.mark.slow
def test_ort_x86_run_keeps_7_bit_adapter_weights_and_passes_the_fast_path(testbed_model, tmp_path, cli, repo_root):
    """`adapter_bits: 8` must not give an ort-x86 bundle full-range INT8 adapter weights (the ones
    that saturate ORT's u8s8 kernels on CPUs without VNNI): the profile's 7-bit grid caps them."""
    import torch

    from p4q_export.deploy.bundle import load_bundle
    from p4q_export.runtime.torch_runner import TorchRunner

    run = tmp_path / "run"
    cli("--json", "train", "--recipe", str(repo_root / "recipes" / "testbed-p4q-w8a8.yaml"), "--set", f"model={testbed_model}",
        "--set", "profile=ort-x86", "--set", "epochs=2", "--set", "eval_limit=500", "--set", "calib_images=256",
        "--device", "cpu", "--out", str(run), check=True)
    out = tmp_path / "bundle"
    _export(cli, run, out, "--uint8-input", "--device", "cpu")
    manifest = load_bundle(out).manifest
    assert manifest["profile"]["name"] == "ort-x86" and manifest["reference"]["config"]["adapter"]["bits"] == 8
    adapter = TorchRunner(load_bundle(out)).model.adapter
    for layer in (adapter.fc.in_fc, adapter.fc.out_fc):
        w = layer.weight_quantizer
        assert (w.bits, w.qmin, w.qmax) == (7, -63, 63) and layer.input_quantizer.bits == 8
        codes = torch.round(layer.weight / w.scale.view(-1, 1))
        assert codes.abs().max() <= 63  # the exported weights' int8 codes stay inside the 7-bit grid
    proc = cli("--json", "validate", str(out), "--backend", "ort", "--ort-mode", "fast", "--data", "fashion-mnist",
               "--limit", LIMIT)
    r = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert r["backend"] == "ort" and r["passed"] is True and r["cosine_min"] >= 0.999
