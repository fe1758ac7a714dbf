"""`keep_fp`: named layers stay FP everywhere (no quantizer in the model or the bundle's reference,
no Q/DQ in the exported graph, the lint's layer count drops), bad patterns are user errors; and
`inspect`'s per-layer SQNR against a hand computation."""

from __future__ import annotations

import json

import onnx
import open_clip
import pytest
import torch

from p4q_export.errors import UserError
from p4q_export.quant import fake_quantizers, get_profile, quant_layers, quantize_clip

KEPT = "visual.transformer.resblocks.1.mlp.c_proj"
TESTBED_LAYERS = 4 * 4 + 1


def _matmul_inputs(model: onnx.ModelProto, fragment: str) -> list[str]:
    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and fragment in n.name]
    assert len(nodes) == 1, [n.name for n in nodes]
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return [producers.get(i, "initializer") for i in nodes[0].input]


@pytest.fixture(scope="module")
def kept_bundle(tmp_path_factory):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("keep-fp") / "bundle"
    proc = run_cli("--json", "export", "p4q-testbed", "--data", "fashion-mnist", "--out", str(out), "--calib-images", "64",
                   "--keep-fp", KEPT, check=True)
    return out, json.loads(proc.stdout)


def test_kept_layer_has_no_qdq_in_the_graph_and_no_quantizer_in_the_reference(kept_bundle):
    from p4q_export.deploy.bundle import load_bundle
    from p4q_export.runtime.torch_runner import TorchRunner

    out, result = kept_bundle
    assert result["quantized_layers"] == TESTBED_LAYERS - 1 and result["keep_fp"] == [KEPT]
    model = onnx.load(str(load_bundle(out).onnx_path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == TESTBED_LAYERS - 1 and ops.count("DequantizeLinear") == 2 * (TESTBED_LAYERS - 1)  # one layer fewer
    assert "DequantizeLinear" not in _matmul_inputs(model, "resblocks.1/mlp/c_proj/")
    assert _matmul_inputs(model, "resblocks.0/mlp/c_proj/").count("DequantizeLinear") == 1  # the input; the weight via Transpose
    manifest = load_bundle(out).manifest
    assert manifest["reference"]["config"]["keep_fp"] == [KEPT] and manifest["ptq"]["keep_fp"] == [KEPT]
    ref = TorchRunner(load_bundle(out)).model
    assert not [n for n in fake_quantizers(ref) if n.startswith(KEPT + ".")]
    assert "visual.transformer.resblocks.0.mlp.c_proj.input_quantizer" in fake_quantizers(ref)
    assert isinstance(ref.get_submodule(KEPT), torch.nn.Linear)


def test_keep_fp_patterns_match_layer_names_and_unknown_ones_are_refused(cli, tmp_path):
    model = open_clip.create_model("ViT-B-32").eval()
    q = quantize_clip(model, get_profile("paper", "4/4"), quantize_text=True,
                      keep_fp=["transformer.resblocks.*.attn.*", "visual.proj"])
    assert len(q.p4q_keep_fp) == 2 * 12 + 1 and "visual.transformer.resblocks.0.attn.qkv" not in q.p4q_keep_fp
    assert len(quant_layers(q)) == 49 + 49 - 25
    with pytest.raises(UserError, match="match no quantized layer"):
        quantize_clip(open_clip.create_model("ViT-B-32"), get_profile("trt"), keep_fp=["transformer.resblocks.0.attn.qkv"])
    proc = cli("export", "p4q-testbed", "--data", "fashion-mnist", "--out", str(tmp_path / "b"), "--calib-images", "8",
               "--keep-fp", "visual.no_such_layer")
    assert proc.returncode == 2 and "match no quantized layer" in proc.stderr and not (tmp_path / "b").exists()
