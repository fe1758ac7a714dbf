"""The comparison statistics behind `validate`, on hand-made outputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from p4q_export.runtime.validate import compare_logits, compare_outputs


def test_cosine_and_errors_match_a_hand_computation():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    test = np.array([[1.0, 1.0], [0.0, 2.0]], np.float32)
    r = compare_outputs(ref, test, "embedding")
    assert r["cosine_min"] == pytest.approx(1 / np.sqrt(2), abs=1e-6)
    assert r["cosine_mean"] == pytest.approx((1 / np.sqrt(2) + 1) / 2, abs=1e-6)
    assert r["max_abs_diff"] == pytest.approx(1.0) and r["mean_abs_diff"] == pytest.approx(0.25)


def test_ties_are_left_out_of_top1_agreement_but_decisive_flips_count():
    ref = np.array([
        [5.00, 5.01, 0.0],  # a tie: the two best 0.01 apart
        [9.00, 1.00, 0.0],  # decisive
        [0.00, 1.00, 7.0],  # decisive
        [2.00, 2.00, 2.0],  # a perfect tie
    ], np.float32)
    flipped_ties = ref.copy()
    flipped_ties[0] = [5.01, 5.00, 0.0]
    flipped_ties[3] = [2.00, 2.01, 2.0]
    r = compare_logits(ref, flipped_ties, tie_margin=0.05)
    assert r["ties"] == 2 and r["top1_agreement"] == 1.0 and r["top1_agreement_all"] == 0.5

    flipped_decisive = ref.copy()
    flipped_decisive[1] = [1.0, 9.0, 0.0]
    r = compare_logits(ref, flipped_decisive, tie_margin=0.05)
    assert r["top1_agreement"] == 0.5 and r["top1_agreement_all"] == 0.75

    # no tie margin: every image counts, as before ties were recognised
    r = compare_logits(ref, flipped_ties, tie_margin=0.0)
    assert r["ties"] == 1 and r["top1_agreement_all"] == 0.5  # only the exact 3-way tie is left out


class _Capped:
    """A real ONNX Runtime session behind a batch cap, as a TensorRT engine's profile imposes:
    records every batch it is handed and refuses one above its max, as the engine would."""

    def __init__(self, runner, max_batch: int):
        self.runner, self.max_batch, self.seen = runner, max_batch, []
        self.backend, self.precision = "trt", runner.precision

    def run_all(self, images):
        self.seen.append(len(images))
        if len(images) > self.max_batch:
            raise ValueError(f"batch {len(images)} exceeds the engine profile's {self.max_batch}")
        return self.runner.run_all(images)


def test_validation_never_exceeds_an_engine_batch_profile(random_testbed_bundle):
    from p4q_export.data import load_dataset
    from p4q_export.data.samplers import eval_subset
    from p4q_export.deploy.bundle import load_bundle
    from p4q_export.runtime import open_runner
    from p4q_export.runtime.validate import BATCH, _all_outputs, batch_size_for

    bundle = load_bundle(random_testbed_bundle)
    ds = eval_subset(load_dataset("fashion-mnist", "test"), 300)
    capped = _Capped(open_runner(bundle, "ort-exact", precision="int8"), max_batch=32)
    plain = open_runner(bundle, "ort-exact", precision="int8")
    assert batch_size_for([plain]) == BATCH == 250 and batch_size_for([plain, capped]) == 32
    out_capped, out_plain = _all_outputs([capped, plain], bundle, ds)
    assert max(capped.seen) == 32 and sum(capped.seen) == 300
    np.testing.assert_allclose(out_capped["logits"], out_plain["logits"], rtol=0, atol=1e-5)
