"""The integer/fixed-point GEMM kernel (lba_train.kernels.int_gemm) against the exact reference, lba_core.dot.

Both of its paths are checked: the exact matmul (outputs that provably stay in range) and the sequential
chain (outputs that may wrap or saturate), with their events, and the operand conversion into int8.
"""

from __future__ import annotations

import pytest
import torch

from lba_core import ConfigError, MacConfig
from lba_train import EventStats, lba_conv2d, lba_matmul
from lba_train.kernels import int_gemm
from lba_train.quantize import quantize
from support.gemm import count_mismatches, reference_gemm

CONFIGS = [
    MacConfig("int8", "int32"),
    MacConfig("int8", "int16_sat"),
    MacConfig("int8", "int16"),
    MacConfig("int8", "int14_sat", chunk_size=5),
    MacConfig("int8", "int13", chunk_size=3, weight="int4"),
    MacConfig("e4m3", "fx40.24"),  # exact grid
    MacConfig("e4m3", "fx20.6_sat", rounding="rtz"),  # products rounded onto the grid
    MacConfig("e4m3_sub", "fx24.10", chunk_size=4),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
@pytest.mark.parametrize("spread", [0.05, 1.0], ids=["in-range", "overflowing"])
def test_matches_the_reference_with_events(cfg, spread, comparisons, one_torch_thread):
    generator = torch.Generator().manual_seed(7)
    top = float(cfg.a_format.max_value)
    x = torch.randn(9, 23, generator=generator, dtype=torch.float64) * top * spread
    w = (torch.randn(23, 6, generator=generator, dtype=torch.float64) * top * spread).abs()  # same-signed runs
    x[0] = x[0].abs()
    stats = EventStats()
    got = lba_matmul(x, w, cfg, stats=stats)
    expected, events = reference_gemm(quantize(x, cfg.a_format), quantize(w, cfg.b_format), cfg)
    mismatches = count_mismatches(got, expected)
    mismatches += (stats.overflow, stats.underflow, stats.swamp) != (events.overflow, events.underflow, events.swamp)
    comparisons(f"int_gemm vs lba_core.dot, {cfg.name}, spread {spread}", got.numel() + 1, mismatches)
    assert mismatches == 0


def test_exact_path_and_chain_agree_where_nothing_overflows(one_torch_thread):
    """Small int8 values into int32: the exact matmul path; forcing every row through the chain agrees."""
    cfg = MacConfig("int8", "int32")
    generator = torch.Generator().manual_seed(3)
    x = torch.randint(-127, 128, (40, 300), generator=generator).to(torch.float64)
    w = torch.randint(-127, 128, (300, 17), generator=generator).to(torch.float64)
    plan = int_gemm.plan_fixed_gemm(cfg)
    values = torch.zeros(40, 17, dtype=torch.float64)
    assert len(int_gemm.exact_rows(x, w, plan, values)) == 0
    chained, events = int_gemm.chain(x, w, plan, True)
    assert torch.equal(values, chained) and torch.equal(values, x @ w) and events == [0, 0, 0]


@pytest.mark.skipif(not int_gemm.NUMBA_AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
def test_numba_chain_equals_the_torch_chain(cfg, one_torch_thread):
    """lba_matmul's CPU path is the Numba chain (compared with the reference above); the PyTorch chain, which
    runs elsewhere, must give the same bits and events."""
    generator = torch.Generator().manual_seed(11)
    top = float(cfg.a_format.max_value)
    x = quantize(torch.randn(13, 31, generator=generator, dtype=torch.float64) * top, cfg.a_format)
    w = quantize(torch.randn(31, 5, generator=generator, dtype=torch.float64).abs() * top, cfg.b_format)
    plan = int_gemm.plan_fixed_gemm(cfg)
    numba_values, numba_events = int_gemm.chain_numba(x, w, plan, True)
    torch_values, torch_events = int_gemm.chain(x, w, plan, True)
    assert torch.equal(numba_values, torch_values) and numba_events == torch_events


def test_int8_conversion_rounds_half_to_even_and_saturates():
    x = torch.tensor([2.5, -2.5, 3.5, 126.6, 300.0, -300.0, float("inf"), float("-inf")])
    assert quantize(x, "int8").tolist() == [2, -2, 4, 127, 127, -128, 127, -128]
    assert quantize(torch.tensor([0.3, 0.375]), "fx8.3").tolist() == [0.25, 0.375]


def test_conv2d_runs_on_an_integer_accumulator(one_torch_thread):
    cfg = MacConfig("int8", "int16_sat")
    generator = torch.Generator().manual_seed(5)
    x = torch.randint(-127, 128, (1, 2, 5, 5), generator=generator).float()
    weight = torch.randint(-127, 128, (3, 2, 3, 3), generator=generator).float()
    got = lba_conv2d(x, weight, None, cfg)
    columns = torch.nn.functional.unfold(x, 3)[0].T.to(torch.float64)  # (L, K) in the contract's order
    expected, _ = reference_gemm(columns, weight.reshape(3, -1).T, cfg)
    assert count_mismatches(got[0].reshape(3, -1).T, expected) == 0


def test_configurations_the_kernel_cannot_hold_are_refused_first():
    with pytest.raises(ConfigError, match="significand bits"):
        lba_matmul(torch.zeros(1, 2), torch.zeros(2, 1), MacConfig("int30", "int53", weight="int30"))
    with pytest.raises(ValueError, match="estimator"):
        lba_matmul(torch.zeros(1, 2), torch.zeros(2, 1), MacConfig("int8", "int32"), estimator="recompute")


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (4, 5, 0)])
def test_empty_operands(shape):
    m, k, n = shape
    y = lba_matmul(torch.ones(m, k), torch.ones(k, n), MacConfig("int8", "int16_sat"))
    assert y.shape == (m, n) and not y.any()
