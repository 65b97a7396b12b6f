"""The fused (tensor-core) accumulators in the simulator's layers: lba_matmul/lba_bmm/lba_linear/lba_conv2d,
lbaify, finetune (STE only), and the per-layer truncation statistics (docs/arithmetic.md §9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from lba_core import MacConfig, fused_matmul_reference
from lba_train import EventStats, lba_bmm, lba_conv2d, lba_linear, lba_matmul
from lba_train.convert import event_stats_table, lbaify, set_collect_stats
from lba_train.quantize import quantize_operand

CFG = MacConfig(input="e4m3", acc="hopper-fp8")


def reference(x: torch.Tensor, w: torch.Tensor, cfg: MacConfig) -> np.ndarray:
    x_q = quantize_operand(x, cfg.a_format, "test").double().numpy()
    w_q = quantize_operand(w, cfg.b_format, "test").double().numpy()
    return fused_matmul_reference(x_q, w_q, cfg)


@pytest.mark.parametrize("acc", ["hopper-fp8", "hopper-fp8+promote64", "hopper-fp8-f16"])
def test_lba_matmul_equals_the_reference(acc):
    cfg = MacConfig(input="e4m3", weight="e5m2", acc=acc)
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(5, 70, generator=gen) * 4, torch.randn(70, 3, generator=gen)
    y = lba_matmul(x, w, cfg)
    assert y.dtype == torch.float32
    np.testing.assert_array_equal(y.double().numpy(), reference(x, w, cfg))


def test_layers_bmm_conv_and_events():
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 4, 40, generator=gen), torch.randn(3, 40, 6, generator=gen)
    y = lba_bmm(a, b, CFG)
    for i in range(3):
        np.testing.assert_array_equal(y[i].double().numpy(), reference(a[i], b[i], CFG))
    x, weight, bias = torch.randn(2, 3, 6, 6, generator=gen), torch.randn(4, 3, 3, 3, generator=gen), torch.randn(4)
    stats = EventStats()
    out = lba_conv2d(x, weight, bias, CFG, padding=1, stats=stats)
    assert out.shape == (2, 4, 6, 6) and torch.isfinite(out).all()
    # K = 27 < L: one FDPA per output; 2*4*36 outputs; no overflow at these magnitudes.
    assert stats.steps == 2 * 4 * 36 and stats.overflow == 0 and stats.swamp == 0
    assert 0 < stats.terms <= 2 * 4 * 36 * 27 and 0 <= stats.terms_zeroed <= stats.terms
    assert 0 < stats.truncated_mass_share < 2.0**-8
    row = stats.as_dict()
    assert row["truncated_mass_share"] == stats.truncated_mass_share and "zeroed_term_rate" in row
    assert "terms" not in EventStats(steps=1).as_dict()  # sequential chains keep their columns
    linear = lba_linear(torch.randn(2, 40, generator=gen), torch.randn(5, 40, generator=gen), None, CFG)
    assert linear.shape == (2, 5)


def test_far_below_terms_are_counted_as_zeroed():
    """One large product per group and the rest 2^-14 below it: with F = 13 every small term is zeroed."""
    x = torch.tensor([[256.0] + [2.0**-6] * 31])
    w = torch.ones(32, 1)
    stats = EventStats()
    assert lba_matmul(x, w, CFG, stats=stats).item() == 256.0
    assert stats.terms == 32 and stats.terms_zeroed == 31 and stats.zeroed_term_rate == 31 / 32
    assert stats.truncated_mass_share == pytest.approx(31 * 2.0**-6 / (256 + 31 * 2.0**-6))


def test_only_ste_applies():
    with pytest.raises(ValueError, match="fused accumulator hopper-fp8 takes 'ste'"):
        lba_matmul(torch.ones(2, 3), torch.ones(3, 2), CFG, estimator="recursive-of")


def test_ste_gradient_is_the_exact_product_gradient():
    x = torch.randn(3, 33, requires_grad=True)
    w = torch.randn(33, 2, requires_grad=True)
    lba_matmul(x, w, CFG).sum().backward()
    w_q = quantize_operand(w.detach(), CFG.b_format, "test")
    torch.testing.assert_close(x.grad, torch.ones(3, 2) @ w_q.T.float())


def test_lbaify_runs_a_model_and_reports_truncation_per_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    converted = lbaify(model, CFG)
    set_collect_stats(converted, True)
    out = converted(torch.randn(8, 64))
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    rows = [row for row in event_stats_table(converted) if row["type"] == "LBALinear"]
    assert len(rows) == 2 and all(row["terms"] > 0 and 0 <= row["truncated_mass_share"] < 0.01 for row in rows)
    assert rows[0]["steps"] == 8 * 32 * 2  # K = 64: two FDPAs per output


@pytest.mark.slow  # about 20 s: make fused-check
def test_finetune_runs_with_a_fused_accumulator():
    from lba_train.data import load_digits_data, make_bundle
    from lba_train.models import build_model
    from lba_train.finetuning import FinetuneOptions, finetune

    full = load_digits_data(seed=0)
    train_x, train_y = full.train.dataset.tensors
    val_x, val_y = full.val.dataset.tensors
    data = make_bundle("tiny-digits", train_x[:64].numpy(), train_y[:64].numpy(), val_x[:64].numpy(),
                       val_y[:64].numpy(), batch_size=32)
    model = build_model("mlp", data.input_shape, data.classes, seed=0)
    result = finetune(model, data.train, data.val, CFG, options=FinetuneOptions(epochs=(1, 1), bias="calibrate"))
    assert 0.0 <= result.stage2 <= 1.0 and result.cfg.acc.name == "hopper-fp8"
    assert any(row.get("terms", 0) > 0 for row in result.events)  # truncation statistics per layer
