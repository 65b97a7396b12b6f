"""The analytical cost model: widths from configurations, exact recovery of planted coefficients, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwmodel.synthesis.costmodel import TERMS, fit_cost_model, mac_widths
from lba_core import MacConfig

ACCS = ("e4m3", "e4m7", "e5m6", "e3m8", "e5m10", "e8m7", "e8m23", "e6m20")


def test_widths_follow_the_formats():
    cfg = MacConfig(input="e4m3", acc="e4m7")
    # exact product: 3+3+2 = 8 significand bits; window max(8+2, 8+1) = 10, plus carry and sticky.
    assert mac_widths(cfg) == {"mult_bits": 16, "datapath_bits": 12, "exp_bits": 8, "acc_bits": 12}
    fp32 = mac_widths(MacConfig(input="e5m2", acc="fp32"))
    assert fp32 == {"mult_bits": 9, "datapath_bits": 28, "exp_bits": 13, "acc_bits": 32}
    rounded_product = mac_widths(MacConfig(input="e4m3", acc="e4m3", product="e5m2"))
    assert rounded_product["datapath_bits"] == max(4 + 2, 3 + 1) + 2


def planted_ge(widths, coefficients):
    w = widths["datapath_bits"]
    terms = (widths["mult_bits"], w * math.log2(w), w, widths["exp_bits"], widths["acc_bits"])
    return sum(c * t for c, t in zip(coefficients, terms))


def test_fit_recovers_planted_coefficients(comparisons):
    planted = (9.0, 6.5, 4.0, 11.0, 6.0)
    configs = [MacConfig(input=fmt, acc=acc) for fmt in ("e4m3", "e5m2") for acc in ACCS]
    widths = [mac_widths(cfg) for cfg in configs]
    model = fit_cost_model(widths, [planted_ge(row, planted) for row in widths])
    assert [model.coefficients[term] for term in TERMS] == pytest.approx(planted, rel=1e-9)
    assert model.rms_error < 1e-9 and model.max_error < 1e-9 and model.loo_rms_error < 1e-9
    unseen = MacConfig(input="e4m3", acc="e7m12")
    assert model.estimate(unseen) == pytest.approx(planted_ge(mac_widths(unseen), planted))
    comparisons("cost-model fit vs planted GE", len(configs) + 1)


def test_fit_reports_its_error_on_noisy_points():
    planted = (9.0, 6.5, 4.0, 11.0, 6.0)
    widths = [mac_widths(MacConfig(input="e4m3", acc=acc)) for acc in ACCS]
    noise = np.random.default_rng(0).uniform(-0.05, 0.05, len(widths))
    model = fit_cost_model(widths, [planted_ge(row, planted) * (1 + n) for row, n in zip(widths, noise)])
    assert 0 < model.rms_error <= model.max_error < 0.05
    assert model.loo_rms_error > model.rms_error  # held-out points are predicted worse than fitted ones


def test_fit_needs_more_points_than_terms():
    widths = [mac_widths(MacConfig(input="e4m3", acc=acc)) for acc in ACCS[: len(TERMS)]]
    with pytest.raises(ValueError, match="more than 5"):
        fit_cost_model(widths, [100.0] * len(widths))
    with pytest.raises(ValueError, match="positive"):
        fit_cost_model(widths * 2, [0.0] * (2 * len(widths)))
