"""`inspect`: the per-layer SQNR / cosine / range statistics against a hand computation, the
keep-FP toggles restoring the quantization state, and the CLI's report on a random-weight test bed."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from p4q_export.quant import QuantLinear, calibrating, get_profile
from p4q_export.quant.inspect import (
    collect_layer_stats,
    greedy_keep_fp,
    layers_in_fp,
    only_quantized,
)


class _Tiny(nn.Module):
    """The smallest thing with a `visual` tower and encode_image: one quantized Linear."""

    def __init__(self, profile):
        super().__init__()
        torch.manual_seed(0)
        self.visual = nn.Sequential(QuantLinear.from_linear(nn.Linear(6, 4), profile))

    def encode_image(self, x):
        return self.visual(x)


def _hand_fq(x, scale, qmin, qmax):
    return torch.clamp(torch.round(x / scale), qmin, qmax) * scale


@pytest.mark.parametrize("bits", ["8/8", "4/4"])
def test_sqnr_cosine_and_ranges_match_a_hand_computation(bits):
    profile = get_profile("paper", bits)
    w_bits, a_bits = (int(b) for b in bits.split("/"))
    model = _Tiny(profile).eval()
    layer = model.visual[0]
    x = torch.randn(3, 5, 6) * torch.tensor([1.0, 1, 1, 1, 1, 8.0])  # one outlier channel
    with calibrating(model), torch.no_grad():
        model.encode_image(x)
    [s] = collect_layer_stats(model, [x[:2], x[2:]])

    W, b = layer.weight.detach(), layer.bias.detach()
    a_qmax, w_qmax = 2 ** (a_bits - 1) - 1, 2 ** (w_bits - 1) - 1
    xq = _hand_fq(x, x.abs().max() / a_qmax, -a_qmax - 1, a_qmax)  # symmetric per-tensor input (minmax)
    w_scale = W.abs().amax(dim=1, keepdim=True) / w_qmax  # per-output-channel narrow-range weights
    wq = _hand_fq(W, w_scale, -w_qmax, w_qmax)
    y, yq = (x @ W.T + b).double(), (xq @ wq.T + b).double()
    sqnr = 10 * math.log10(float((y**2).sum() / ((y - yq) ** 2).sum()))
    cosine = float((y * yq).sum() / (y.norm() * yq.norm()))
    assert s.name == "visual.0" and s.tower == "image" and s.n_outputs == y.numel()
    assert s.sqnr_db == pytest.approx(sqnr, abs=1e-3) and s.cosine == pytest.approx(cosine, abs=1e-5)
    assert s.in_max == pytest.approx(float(x.abs().max()))
    ch = x.abs().reshape(-1, 6).amax(0)
    assert s.channel_spread == pytest.approx(float(ch.max() / ch.median()), rel=1e-5)
    per_batch = [float(torch.quantile(t.abs().flatten(), 0.999, interpolation="higher")) for t in (x[:2], x[2:])]
    assert s.in_p999 == pytest.approx(sum(per_batch) / 2, rel=1e-5)
    assert layer.input_quantizer.enabled and layer.weight_quantizer.enabled  # the quantization state is restored


def test_toggles_restore_state_and_greedy_stops_without_gain():
    model = _Tiny(get_profile("trt")).eval()
    layer = model.visual[0]
    with layers_in_fp(model, ["visual.0"]):
        assert not layer.input_quantizer.enabled and not layer.weight_quantizer.enabled
    with only_quantized(model, ["visual.0"]):
        assert layer.input_quantizer.enabled
    assert layer.input_quantizer.enabled and layer.weight_quantizer.enabled
    scores = {frozenset(): 0.5, frozenset(["visual.0"]): 0.7}
    steps = greedy_keep_fp(model, ["visual.0"], lambda mode, changed: scores[changed], 3, 0.5)
    assert [s["layer"] for s in steps] == ["visual.0"] and steps[0]["top1"] == 0.7
    assert greedy_keep_fp(model, ["visual.0"], lambda mode, changed: 0.4, 3, 0.5) == []


def test_inspect_cli_ranks_every_layer_and_writes_report_and_plot(cli, tmp_path):
    out = tmp_path / "report.json"
    proc = cli("--json", "inspect", "p4q-testbed", "--data", "fashion-mnist", "--quant", "paper", "--bits", "4/4",
               "--quantize-text", "--calib-images", "32", "--stats-images", "16", "--limit", "50", "--suggest", "1",
               "--alone", "--verify", "--verify-limit", "200", "--out", str(out), check=True)
    report = json.loads(proc.stdout)
    assert report["n_layers"] == 17 + 13 == len(report["ranking"]) == len(set(report["ranking"]))
    assert json.loads(out.read_text())["ranking"] == report["ranking"]
    assert out.with_suffix(".png").stat().st_size > 1000
    row = report["layers"][0]
    for key in ("sqnr_db", "cosine", "in_max", "in_p999", "channel_spread", "gain_keep_fp", "top1_alone"):
        assert row[key] is not None, key
    assert "suggest" in report and report["suggest"]["recipe_line"].startswith("keep_fp: [")
    # selected on held-out training images, never the test split; every gain with its interval
    sel = report["selection"]
    assert (sel["on"], sel["by"], sel["n_select"], sel["n_estimate"]) == ("heldout", "kl", 50, 50)
    assert "train split, held out: none of the 32 images calibration and training used" in sel["data"]
    for r in report["layers"]:
        lo, hi = r["gain_interval"]
        assert lo <= r["gain_keep_fp"] <= hi and r["gain_within_noise"] == (lo <= 0 <= hi)
        assert r["kl_reduction"] == pytest.approx(report["kl_quantized"] - r["kl_keep_fp"], abs=2e-6)
    s = report["suggest"]  # the suggestion's recovery: expected on 50 other held-out images, measured on the test split
    assert len(s["keep_fp"]) == 1 and s["expected"]["n"] == 50 and not s["expected"]["same_images_as_selection"]
    assert s["verify"]["n"] == 200 and s["verify"]["split"] == "test"
    # random weights: quantizing costs nothing on these samples, so there is no drop to recover
    assert s["expected"]["drop"] <= 0 and s["expected"]["recovered_fraction"] is None
    assert s["verify"]["within_expected_interval"] is False
    bad = cli("inspect", "p4q-testbed", "--data", "fashion-mnist")
    assert bad.returncode == 2 and "--quant" in bad.stderr
    bad = cli("inspect", "p4q-testbed", "--data", "fashion-mnist", "--quant", "paper", "--verify")
    assert bad.returncode == 2 and "--suggest" in bad.stderr


def test_held_out_samples_are_disjoint_seeded_and_avoid_what_calibration_used():
    import numpy as np

    from p4q_export.tasks.inspecting import heldout_samples

    used = np.arange(0, 1000, 3)
    a, b = heldout_samples(1000, used, 200)
    assert len(a) == len(b) == 200 and not set(a) & set(b) and not (set(a) | set(b)) & set(used.tolist())
    a2, b2 = heldout_samples(1000, used, 200)
    assert (a == a2).all() and (b == b2).all()
    half = (1000 - len(used)) // 2
    assert [len(x) for x in heldout_samples(1000, used, 0)] == [half, half]
    assert [len(x) for x in heldout_samples(1000, used, 5000)] == [half, half]


def test_paired_gain_and_recovery_intervals_by_hand():
    from p4q_export.quant import sensitivity as sv

    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 1.5]])
    labels = torch.tensor([0, 1, 0])
    assert sv.correct(logits, labels).tolist() == [1.0, 1.0, 0.0]
    p, q = torch.tensor([0.5, 0.5]), torch.softmax(torch.tensor([1.0, 0.0]), 0)
    by_hand = float((p * (p.log() - q.log())).sum())
    assert sv.kl_from(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])) == pytest.approx(by_hand)
    assert sv.kl_from(logits, logits) == pytest.approx(0.0, abs=1e-12)
    # 1000 images: keeping a layer FP fixes 100 and breaks none -> +10 points, clearly above the noise
    before = torch.zeros(1000)
    after = before.clone()
    after[:100] = 1
    g = sv.paired_gain(before, after)
    assert g.value == pytest.approx(0.1) and 0.08 < g.low < 0.1 < g.high < 0.12 and not g.within_noise
    # 3 fixed and 2 broken of 40: +2.5 points, within the noise
    b, a = torch.zeros(40), torch.zeros(40)
    a[:3], b[3:5] = 1, 1
    assert sv.paired_gain(b, a).within_noise
    # FP right on 400 of 1000, quantized on none, kept-FP on 200 of those: half the drop back
    q, fp, kept = torch.zeros(1000), torch.zeros(1000), torch.zeros(1000)
    fp[:400], kept[:200] = 1, 1
    r = sv.recovery(q, fp, kept)
    assert r.fraction == pytest.approx(0.5) and r.drop == pytest.approx(0.4) and r.low < 0.5 < r.high
    assert 0.4 < r.low and r.high < 0.6 and r.contains(0.5) and not r.contains(0.7)
    assert sv.recovery(q, q, kept).fraction is None  # no drop: nothing to recover


def test_select_on_test_reuses_the_selection_sample_and_says_so(cli):
    proc = cli("--json", "inspect", "p4q-testbed", "--data", "fashion-mnist", "--quant", "paper", "--bits", "4/4",
               "--quantize-text", "--calib-images", "32", "--stats-images", "16", "--limit", "50", "--suggest", "1",
               "--select-on", "test", "--accuracy-top", "3", check=True)
    report = json.loads(proc.stdout)
    assert report["selection"]["data"] == "fashion-mnist test split (50 images): selected and reported on the same images"
    expected = report["suggest"]["expected"]
    assert expected["same_images_as_selection"] and expected["n"] == 50
    # the estimate is the selection sample's own: the step's top-1 over the same quantized and FP top-1
    step = report["suggest"]["steps"][-1]["top1"]
    drop = report["top1_fp"] - report["top1_quantized"]
    assert expected["drop"] == pytest.approx(drop, abs=1e-6)
    assert expected["recovered_fraction"] == pytest.approx((step - report["top1_quantized"]) / drop, abs=1e-4)
