"""Every image-tower family quantized, exported and checked against its PyTorch reference.

The matrix runs on small members of each family (tests/data/towers: the same open_clip / timm
architectures as the shipped CLIPs at 64 px, one-layer text towers), random weights seeded as for
any open_clip NAME. The full-size matrix (ViT-B-16, EVA02-B-16, MobileCLIP-B, MobileCLIP2-S0,
RN50, convnext_base) is `python -m benchmarks.families` (docs/models-and-data.md, "Supported image towers")."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import REPO, run_cli
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

TOWERS = REPO / "tests" / "data" / "towers"
os.environ["P4Q_MODEL_CONFIGS"] = str(TOWERS)

# (model, family, INT8 share of the MACs it must reach: the conv towers' work is nearly all
# convolution; the two tiny transformers spend a large share in FP attention matmuls)
CASES = [
    ("p4q-small-rn", "open_clip-resnet", 0.9),
    ("p4q-small-mobileclip2", "timm:FastVit", 0.9),
    ("p4q-small-convnext", "timm:ConvNeXt", 0.9),
    ("p4q-small-eva", "timm:Eva", 0.75),
    ("p4q-small-vit", "open_clip-vit", 0.6),
]


def _fold(name: str, tmp_path):
    from p4q_export.deploy.fold import fold_model

    folded = fold_model(name, "fashion-mnist", "trt", calib_images=16, uint8_input=False, with_embedding=True,
                        calibration_dir=tmp_path, device="cpu", workers=0)
    return folded.module.cpu().eval()


def _inputs(module, n: int = 8) -> torch.Tensor:
    from p4q_export.data import load_dataset
    from p4q_export.data.loader import preprocess_dataset
    from p4q_export.data.preprocess import TensorPreprocess

    test = load_dataset("fashion-mnist", "test")
    test.arrays = test.arrays[:n]
    test.labels = test.labels[:n]
    return preprocess_dataset(test, TensorPreprocess.from_model(module))


@pytest.mark.parametrize(("name", "family", "min_share"), CASES)
def test_family_exports_int8_and_onnx_computes_the_reference(tmp_path, name, family, min_share):
    from p4q_export.deploy.export_onnx import export_onnx
    from p4q_export.deploy.macs import mac_summary
    from p4q_export.deploy.trt_lint import check_trt_compatible
    from p4q_export.quant import quant_layers

    module = _fold(name, tmp_path)
    assert module.visual.p4q_tower["family"] == family
    layers = quant_layers(module)
    size = module.visual.image_size[0] if isinstance(module.visual.image_size, tuple) else module.visual.image_size
    graph = export_onnx(module, tmp_path / "model.onnx", size, uint8_input=False, with_embedding=True)
    report = check_trt_compatible(graph, expected_layers=len(layers), quantized_modules=set(layers))
    ops = [n.op_type for n in graph.graph.node]
    assert "BatchNormalization" not in ops
    convs = sum(op == "Conv" for op in ops)
    quantized_convs = sum(isinstance(m, torch.nn.Conv2d) or type(m).__name__ == "QuantConv2d" for m in layers.values())
    assert convs - quantized_convs == 1, "every convolution but the image-reading stem is INT8"

    macs = mac_summary(graph, report.quantized_layers)
    assert macs["int8_mac_fraction"] >= min_share
    images = _inputs(module)
    # the math backend: FlopCounterMode has no formula for the CPU's fused attention kernel
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        module(images[:1])
    # the graph's MAC count is the network's: torch counts FLOPs (2 per MAC) of the same forward
    assert macs["total_macs"] == pytest.approx(counter.get_total_flops() / 2, rel=0.01)

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_quant_qdq", "1")  # exact Q/DQ arithmetic
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    logits, emb = sess.run(None, {"image": images.numpy()})
    with torch.no_grad():
        ref_logits, ref_emb = (t.numpy() for t in module(images))
    cos = (emb * ref_emb).sum(-1) / np.linalg.norm(emb, axis=-1) / np.linalg.norm(ref_emb, axis=-1)
    assert cos.min() > 0.999
    assert np.array_equal(logits.argmax(-1), ref_logits.argmax(-1))


def test_deploy_form_of_mobileclip2_s0_has_no_batchnorm_and_the_same_output():
    """The real MobileCLIP2-S0 image tower (256 px): 423 modules reparameterized, every BatchNorm
    folded, outputs equal to the training-form tower."""
    import copy

    from p4q_export.models import load_model
    from p4q_export.quant.plan import prepare_image_tower

    visual = load_model("MobileCLIP2-S0").model.visual.eval()
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    before = copy.deepcopy(visual)
    info = prepare_image_tower(visual)
    assert info["family"] == "timm:FastVit" and info["reparameterized_modules"] > 100
    assert not [m for m in visual.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        a, b = before(x), visual(x)
    assert (a - b).abs().max() / a.abs().max() < 1e-4


def test_explicit_attention_pool_equals_open_clip_attention_pool():
    from open_clip.modified_resnet import AttentionPool2d

    from p4q_export.quant.towers.modified_resnet import ExplicitAttentionPool2d

    torch.manual_seed(0)
    pool = AttentionPool2d(7, 64, 4, 32).eval()
    x = torch.randn(3, 64, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(ExplicitAttentionPool2d(pool)(x), pool(x), rtol=1e-5, atol=1e-5)


def test_eva_attention_calls_its_qkv_layer_after_the_bias_merge():
    """timm's fused EvaAttention (EVA01) adds q/v biases through F.linear on qkv.weight: after the
    merge the same output comes from calling qkv, so a quantized qkv is really used."""
    from timm.models.eva import EvaAttention

    from p4q_export.quant.towers.timm_trunk import _merge_qkv_bias

    torch.manual_seed(0)
    attn = EvaAttention(64, num_heads=4, qkv_bias=True, norm_layer=torch.nn.LayerNorm).eval()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.k_bias.zero_()
        attn.v_bias.normal_()
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        ref = attn(x)
        assert _merge_qkv_bias(attn)
        calls = []
        attn.qkv.register_forward_hook(lambda *a: calls.append(1))
        torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)
    assert calls == [1]


def test_mac_count_of_a_known_graph():
    from onnx import TensorProto, helper, numpy_helper

    from p4q_export.deploy.macs import node_macs

    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.ones((8, 5), np.float32), "m")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("GlobalAveragePool", ["c"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("MatMul", ["f", "m"], ["y"], name="mm")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], [w, m])
    macs = node_macs(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert macs == {"conv": 16 * 16 * 8 * 3 * 3 * 3, "mm": 8 * 5}


@pytest.mark.slow
@pytest.mark.full
def test_mobileclip2_export_and_validate_from_the_cli(tmp_path):
    out = tmp_path / "bundle"
    proc = run_cli("--json", "export", "p4q-small-mobileclip2", "--data", "fashion-mnist", "--calib-images", "16",
                   "--precision", "int8", "--out", str(out), check=True)
    result = json.loads(proc.stdout)
    assert result["tower_family"] == "timm:FastVit" and result["int8_mac_fraction"] >= 0.9
    manifest = json.loads((out / "deploy" / "manifest.json").read_text())
    assert manifest["onnx"]["int8_mac_fraction"] == result["int8_mac_fraction"]
    assert len(manifest["tower"]["quantized_layers"]) == result["quantized_layers"]
    assert manifest["tower"]["batchnorms_folded"] > 0
    assert not [n for n in onnx.load(str(out / "deploy" / "model.onnx")).graph.node if n.op_type == "BatchNormalization"]
    proc = run_cli("--json", "validate", str(out), "--backend", "ort", "--data", "fashion-mnist", "--limit", "16", check=True)
    report = json.loads(proc.stdout)
    assert report["passed"] and report["cosine_min"] >= 0.999


@pytest.mark.slow
def test_testbed_conv_exports_its_convolutions_int8_and_validates_from_the_cli(tmp_path):
    """The project's conv config (p4q-testbed-conv: open_clip ModifiedResNet, width 32, one
    bottleneck per stage, random weights): 3 stem convs + 4 stages × (conv1, conv2, conv3,
    downsample) = 19 convolutions, all but the image-reading stem conv INT8 (18), plus the
    attention pool's q, k, v, c_proj; the TensorRT lint accepts the deploy graph and validate
    passes ONNX Runtime's output against the PyTorch reference."""
    from p4q_export.deploy.trt_lint import check_trt_compatible, module_of
    from p4q_export.runtime.validate import validate_bundle

    out = tmp_path / "bundle"
    proc = run_cli("--json", "export", "p4q-testbed-conv", "--data", "fashion-mnist", "--calib-images", "64",
                   "--precision", "int8", "--out", str(out), check=True)
    result = json.loads(proc.stdout)
    manifest = json.loads((out / "deploy" / "manifest.json").read_text())
    layers = manifest["tower"]["quantized_layers"]
    assert result["tower_family"] == "open_clip-resnet" and manifest["tower"]["batchnorms_folded"] == 19
    assert result["quantized_layers"] == len(layers) == 22
    assert [n for n in layers if "attnpool" in n] == [f"visual.attnpool.{p}" for p in ("q_proj", "k_proj", "v_proj", "c_proj")]
    graph = onnx.load(str(out / "deploy" / "model.onnx"))
    report = check_trt_compatible(graph, expected_layers=len(layers), quantized_modules=set(layers))
    assert {module_of(n) for n in report.quantized_layers} == set(layers)
    nodes = {n.name: n for n in graph.graph.node}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    quantized_convs = [n for n in report.quantized_layers if nodes[n].op_type == "Conv"]
    assert (len(convs), len(quantized_convs)) == (19, 18)
    producers = {o: n.op_type for n in graph.graph.node for o in n.output}
    fp_convs = [n for n in convs if n.name not in quantized_convs]
    assert [module_of(n.name) for n in fp_convs] == ["visual.conv1"]  # the stem reads the image in FP
    assert all(producers.get(n.input[0]) != "DequantizeLinear" and producers.get(n.input[1]) != "DequantizeLinear" for n in fp_convs)
    assert all(producers[nodes[n].input[0]] == producers[nodes[n].input[1]] == "DequantizeLinear" for n in quantized_convs)
    assert not [n for n in graph.graph.node if n.op_type == "BatchNormalization"]

    report = validate_bundle(out, backend="ort", data="fashion-mnist", limit=64, workers=0)  # `validate BUNDLE --backend ort`
    assert report["passed"] and report["precision"] == "int8" and report["n"] == 64
    assert report["cosine_min"] >= report["thresholds"]["cosine_min"] == 0.999
    assert report["top1_agreement"] >= report["thresholds"]["top1_agreement_min"] == 0.99


def test_siglip2_without_its_tokenizer_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "sig"
    proc = run_cli("export", "ViT-B-16-SigLIP2", "--data", "fashion-mnist", "--out", str(out),
                   env={"HF_HUB_OFFLINE": "1", "P4Q_HF_TOKENIZER": ""})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ViT-B-16-SigLIP2 tokenizes text with the Hugging Face tokenizer 'timm/ViT-B-16-SigLIP2'")
    assert "P4Q_HF_TOKENIZER" in last
    assert list(tmp_path.iterdir()) == []


def test_a_siglip_name_without_hf_tokenizer_name_is_one_line_too(tmp_path):
    """open_clip picks its SigLIP sentencepiece tokenizer by name alone (no hf_tokenizer_name in the
    config); that path needs `transformers` as well, and said so in a traceback."""
    configs = tmp_path / "configs"
    configs.mkdir()
    cfg = json.loads((TOWERS / "p4q-small-vit.json").read_text())
    (configs / "p4q-small-siglip.json").write_text(json.dumps(cfg))
    proc = run_cli("train", "--recipe", str(REPO / "recipes" / "testbed-p4q-w8a8.yaml"), "--set", "model=p4q-small-siglip",
                   "--out", str(tmp_path / "run"), env={"P4Q_MODEL_CONFIGS": str(configs), "P4Q_HF_TOKENIZER": ""})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: p4q-small-siglip tokenizes text with the Hugging Face tokenizer "
                                  "'http://storage.googleapis.com/t5-data/vocabs/cc_en.32000/sentencepiece.model'")
    assert not (tmp_path / "run").exists()


def test_keep_fp_leaves_convolutions_in_floating_point_and_the_lint_agrees(tmp_path):
    """keep_fp matches the same names the quantizer, the lint and the manifest use (here timm-free
    ModifiedResNet names); the kept convolutions have no Q/DQ in the graph."""
    from p4q_export.deploy.export_onnx import export_onnx
    from p4q_export.deploy.fold import fold_model
    from p4q_export.deploy.trt_lint import check_trt_compatible, module_of
    from p4q_export.quant import quant_layers

    folded = fold_model("p4q-small-rn", "fashion-mnist", "trt", calib_images=8, calibration_dir=tmp_path, device="cpu",
                        workers=0, keep_fp=["visual.layer1.*"], with_embedding=True)
    module = folded.module.cpu().eval()
    assert folded.reference_config["keep_fp"] == ["visual.layer1.0.conv1", "visual.layer1.0.conv2", "visual.layer1.0.conv3",
                                                  "visual.layer1.0.downsample.0"]
    layers = set(quant_layers(module))
    assert not [n for n in layers if n.startswith("visual.layer1.")]
    graph = export_onnx(module, tmp_path / "m.onnx", 64, uint8_input=False, with_embedding=True)
    report = check_trt_compatible(graph, expected_layers=len(layers), quantized_modules=layers)
    assert {module_of(n) for n in report.quantized_layers} == layers


@pytest.mark.slow
def test_rounding_ties_explain_the_flips_and_a_real_difference_is_still_found(tmp_path):
    """EVA02 (tiny, random weights): ORT exact and the fake-quant reference round a few
    pre-quantization values to neighbouring codes, which compounds through the blocks. Replayed
    with ORT's rounding ties the reference agrees to float precision; a graph with one bias
    changed by 1% of its range is still caught."""
    from onnx import numpy_helper

    from p4q_export.deploy.export_onnx import export_onnx
    from p4q_export.runtime.rounding import aligned_reference

    module = _fold("p4q-small-eva", tmp_path)
    images = _inputs(module, 8).numpy()
    export_onnx(module, tmp_path / "m.onnx", 224, uint8_input=False, with_embedding=True)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), _exact(), providers=["CPUExecutionProvider"])
    _, emb = sess.run(None, {"image": images})
    with torch.no_grad():
        raw = module(torch.from_numpy(images))[1].numpy()
    ref, stats = aligned_reference(tmp_path / "m.onnx", module, [images[:4], images[4:]])
    assert stats["rounding_flips_fraction"] > 0 and stats["beyond_tolerance_fraction"] == 0
    assert _cos(ref["embedding"], emb).min() > 0.999999 > _cos(raw, emb).min()

    graph = onnx.load(str(tmp_path / "m.onnx"))
    # fc2's bias is zero in this random model and the simplified graph has no Add for it: put one
    # back with 1e-3 on one channel, the change the test made to the bias before
    g = graph.graph
    i, mm = next((i, n) for i, n in enumerate(g.node) if n.op_type == "MatMul" and "blocks.3/mlp/fc2" in n.name)
    dim = next(len(t.dims) and t.dims[0] for t in g.initializer if t.name == "visual.trunk.blocks.3.mlp.fc2.weight")
    shift = np.zeros(dim, np.float32)
    shift[0] = 1e-3
    g.initializer.append(numpy_helper.from_array(shift, "fc2_bias_shift"))
    out = mm.output[0]
    mm.output[0] = out + "_unbiased"
    g.node.insert(i + 1, onnx.helper.make_node("Add", [out + "_unbiased", "fc2_bias_shift"], [out], name="fc2_bias_shift"))
    onnx.save(graph, str(tmp_path / "bad.onnx"))
    _, stats = aligned_reference(tmp_path / "bad.onnx", module, [images])
    assert stats["beyond_tolerance_fraction"] > 0


def _exact() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return opts


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_layers_with_a_forward_of_their_own_stay_floating_point():
    """timm's Conv2dSame pads dynamically and StdConv2d standardizes its weight in forward: a
    QuantConv2d would drop that, so neither is a candidate; nor a conv with reflect padding."""
    from timm.layers import Conv2dSame, StdConv2d

    from p4q_export.quant.plan import quantizable

    assert quantizable(torch.nn.Conv2d(3, 8, 3)) and quantizable(torch.nn.Linear(4, 4))
    assert not quantizable(Conv2dSame(3, 8, 3, stride=2))
    assert not quantizable(StdConv2d(3, 8, 3))
    assert not quantizable(torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"))
