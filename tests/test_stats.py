"""Accuracy intervals and paired comparisons (hwmodel.report.stats), checked against scipy and by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hwmodel.report.stats import holm, paired_comparison, summarize_accuracy, wilson_interval


@pytest.mark.parametrize("successes,total", [(0, 10), (3, 10), (10, 10), (352, 359), (180, 359)])
def test_wilson_matches_scipy_on_integer_counts(successes, total):
    expected = stats.binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(successes, total) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_summary_of_several_seeds():
    correct = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]], dtype=bool)
    summary = summarize_accuracy(correct)
    assert summary.mean == pytest.approx(9 / 12) and summary.seeds == 3 and summary.examples == 4
    assert summary.seed_sd == pytest.approx(np.std([0.75, 0.5, 1.0], ddof=1))
    assert (summary.low, summary.high) == pytest.approx(wilson_interval(3.0, 4))
    assert summarize_accuracy(correct[0]).seed_sd is None


def test_one_seed_is_the_exact_mcnemar_test():
    reference = np.ones(100, dtype=bool)
    model = reference.copy()
    model[:7] = False  # 7 examples only the reference gets right ...
    reference[90:92] = False  # ... and 2 only the model
    comparison = paired_comparison(model, reference)
    assert (comparison.model_only, comparison.reference_only) == (2, 7)
    assert comparison.p_value == pytest.approx(stats.binomtest(2, 9, 0.5).pvalue)
    assert comparison.difference == pytest.approx(-5 / 100) and comparison.test == "exact McNemar"
    assert paired_comparison(reference, reference).p_value == 1.0


def test_agreement_is_the_share_of_equal_predictions():
    same = np.array([[True, True, False, True]])
    comparison = paired_comparison(same, same, same_prediction=same)
    assert comparison.agreement == pytest.approx(0.75)


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([]) == []


def _simulate(rng, seeds, examples, seed_sd, shift=0.0):
    """Correctness of a model and a reference on shared examples: an example is right when its difficulty
    (plus a little per-seed noise) is below the model's accuracy, which each seed moves by ``seed_sd``."""
    difficulty = rng.random(examples)
    offsets = rng.normal(shift, seed_sd, (seeds, 1))
    reference = difficulty + 0.05 * rng.standard_normal((seeds, examples)) < 0.9
    model = difficulty + 0.05 * rng.standard_normal((seeds, examples)) < 0.9 + offsets
    return model, reference


@pytest.mark.parametrize("seed_sd", [0.0, 0.03])
def test_two_way_test_holds_its_level_when_seeds_vary(seed_sd):
    """Under no true difference, p < 0.05 about 5% of the time, also when the seed moves the accuracy (a
    test that ignored seed-to-seed variation would reject far more often)."""
    rng = np.random.default_rng(1)
    rejections = sum(paired_comparison(*_simulate(rng, 3, 300, seed_sd)).p_value < 0.05 for _ in range(400))
    assert rejections / 400 < 0.09


def test_two_way_test_finds_a_real_difference():
    rng = np.random.default_rng(2)
    found = sum(paired_comparison(*_simulate(rng, 3, 300, 0.005, shift=-0.06)).p_value < 0.05 for _ in range(50))
    assert found >= 35
