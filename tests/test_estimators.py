"""The fine-grained gradient estimators (lba_train.estimators, docs/estimators.md).

Three independent checks: the recomputed chain's value against the exact reference (lba_core.dot), each
estimator's definition on hand-computed chains, and gemm_backward against an unrolled autograd graph of the
chain whose step values come from lba_core and whose local derivatives are written here from the definitions.
"""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from lba_core import ConfigError, FloatFormat, MacConfig, accumulate, dot, product
from lba_train import quantize
from lba_train.estimators import ESTIMATORS, dot_derivatives, gemm_backward
from lba_train.kernels.plan import (
    STEP_EXACT_SUM,
    STEP_GENERAL,
    STEP_ROUND_TO_ODD,
    plan_gemm,
)
from support.gemm import count_mismatches

STEP_CONFIGS = [
    MacConfig(input="e4m3", acc="e3m2"),
    MacConfig(input="e4m3", acc="e4m3", rounding="rtz"),
    MacConfig(input="e4m3", acc="e5m2_sub"),
    MacConfig(input="e4m3", acc="e5m2_sub", rounding="rtz"),
    MacConfig(input="e4m3", acc="e4m7_b10", underflow=False),
    MacConfig(input="e5m2", acc="e3m4", product="e5m4"),
    MacConfig(input="e5m2", acc="e3m4", product="e5m4_sub", rounding="rtz"),
    MacConfig(input="e4m3", acc="fp16"),
    MacConfig(input="bf16", acc="fp32"),
    MacConfig(input="bf16", acc="fp32", rounding="rtz", underflow=False),
    MacConfig(input="e8m23", acc="e10m52"),
    MacConfig(input="e8m23", acc="e10m52_sub", rounding="rtz"),
]


def random_value(fmt: FloatFormat, rng: random.Random) -> Fraction:
    """A value of ``fmt`` from a uniformly drawn code, with zero and +-max over-represented."""
    pick = rng.random()
    if pick < 0.05:
        return Fraction(0)
    if pick < 0.1:
        return fmt.max_value * rng.choice((-1, 1))
    return fmt.decode(rng.randrange(fmt.code_count))


def test_step_configs_cover_every_rounding_algorithm():
    assert {plan_gemm(cfg).step for cfg in STEP_CONFIGS} == {STEP_EXACT_SUM, STEP_ROUND_TO_ODD, STEP_GENERAL}


@pytest.mark.parametrize("cfg", STEP_CONFIGS, ids=lambda cfg: cfg.name)
def test_chain_value_matches_reference_dot(cfg, comparisons):
    """The chain the backward recomputes is the forward's, bit for bit, with each GEMM rounding algorithm."""
    rng = random.Random(11)
    mismatches = cases = 0
    for chunk_size in (None, 1, 3):
        chunked = cfg.replace(chunk_size=chunk_size)
        for length in (0, 1, 2, 5, 13):
            for _ in range(20):
                a = [random_value(cfg.a_format, rng) for _ in range(length)]
                b = [random_value(cfg.b_format, rng) for _ in range(length)]
                value, _ = dot_derivatives([float(v) for v in a], [float(v) for v in b], chunked, "recursive-diff")
                cases += 1
                mismatches += Fraction(value) != dot(a, b, chunked).value
    comparisons(f"estimator chain value vs lba_core.dot ({cfg.name})", cases, mismatches)
    assert mismatches == 0


# ------------------------------------------------------------------------------------ hand-computed chains
E3M2 = MacConfig(input="e4m3", acc="e3m2")  # acc max 28, min_normal 0.25, 2 fraction bits


def expected_table(case: str) -> dict[str, list[float]]:
    if case == "saturation":
        # s = 16; R(32) = 28 saturates; R(28 + 1) = 28 (swamped, no overflow).
        # DIFF: entering shares 16/16, 12/16, 0/1; running-sum shares (s_k - p_k)/s_{k-1}: 12/16, 27/28.
        through = 0.75 * 27 / 28
        return {
            "ste": [1, 1, 1],
            "immediate-of": [1, 0, 1],
            "recursive-of": [0, 0, 1],
            "immediate-diff": [1, 0.75, 0],
            "recursive-diff": [through, through, 0],
        }
    if case == "flush":
        # R(0.125) flushes to 0 (share 0); 0 + 1 exact (zero running sum: OF rule, 1); 1 - 1 = 0 exact.
        return {
            "ste": [1, 1, 1],
            "immediate-of": [1, 1, 1],
            "recursive-of": [1, 1, 1],
            "immediate-diff": [0, 1, 1],
            "recursive-diff": [0, 1, 1],
        }
    # swamp: s = 8; R(8 + 0.5) = 8 (share 0, running share 7.5/8); R(8 + 1) = 8 by ties-to-even (0, 7/8).
    return {
        "ste": [1, 1, 1],
        "immediate-of": [1, 1, 1],
        "recursive-of": [1, 1, 1],
        "immediate-diff": [1, 0, 0],
        "recursive-diff": [7.5 / 8 * 7 / 8, 0, 0],
    }


HAND_CASES = {
    "saturation": ([16, 16, 1], 28.0),
    "flush": ([0.125, 1, -1], 0.0),
    "swamp": ([8, 0.5, 1], 8.0),
}


#: Derivatives are float64 computations in a different order than the table's: equal within this.
DERIVATIVE_ATOL = 1e-15


@pytest.mark.parametrize("case", list(HAND_CASES))
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_hand_computed_chain(case, estimator, comparisons):
    a, value = HAND_CASES[case]
    got_value, derivatives = dot_derivatives(a, [1.0] * len(a), E3M2, estimator)
    mismatches = count_mismatches(derivatives, expected_table(case)[estimator], DERIVATIVE_ATOL) + (got_value != value)
    comparisons(f"hand-computed D, {case} chain, {estimator}", len(a) + 1, mismatches)
    assert got_value == value
    np.testing.assert_allclose(derivatives, expected_table(case)[estimator], rtol=0, atol=1e-15)


def test_chunk_adder_saturation_is_a_chain_step(comparisons):
    # Chunks of 2: c0 = 16 + 8 = 24, c1 = 16; the chunk adder saturates at R(24 + 16) = 28.
    # DIFF: c0 enters the adder whole (24/24); c1 contributes (28 - 24) / 16 = 0.25 and the adder passes
    # (28 - 16) / 24 = 0.5 of the running total c0.
    cfg = E3M2.replace(chunk_size=2)
    a = [16, 8, 8, 8]
    expected = {"immediate-of": [1, 1, 1, 1], "recursive-of": [0, 0, 0, 0], "recursive-diff": [0.5, 0.5, 0.25, 0.25]}
    got = {name: dot_derivatives(a, [1.0] * 4, cfg, name)[1] for name in expected}
    mismatches = sum(count_mismatches(got[name], expected[name], DERIVATIVE_ATOL) for name in expected)
    comparisons("hand-computed D, chunk adder saturation", 12, mismatches)
    assert mismatches == 0, got


# --------------------------------------------------------------------------- against an unrolled autograd graph
class InjectedStep(torch.autograd.Function):
    """One chain step: the value is given; the backward multiplies by the given local derivatives."""

    @staticmethod
    def forward(ctx, previous, addend, value, d_addend, d_previous):
        ctx.derivatives = (d_previous, d_addend)
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        d_previous, d_addend = ctx.derivatives
        return grad * d_previous, grad * d_addend, None, None, None


def local_derivatives(step_value: Fraction, previous: Fraction, addend: Fraction, overflow: bool, estimator: str):
    """(d s/d addend, d s/d previous) from the definitions in docs/estimators.md, on exact values."""
    if estimator.endswith("-of"):
        passed = 0.0 if overflow else 1.0
        d_addend = d_previous = passed
    else:
        def share(part: Fraction, other: Fraction) -> float:
            if part == 0:
                return 0.0 if overflow else 1.0
            return float(min(max((step_value - other) / part, Fraction(0)), Fraction(1)))

        d_addend, d_previous = share(addend, previous), share(previous, addend)
    if estimator.startswith("immediate"):
        d_previous = 1.0  # later steps pass the running sum straight through
    return d_addend, d_previous


def unrolled_chain_gradients(x, w, g, cfg: MacConfig, estimator: str):
    """grad_x, grad_w and event counts from an explicit autograd graph of every output's chain."""
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    rows, length = x.shape
    events = {"overflow": 0, "swamp": 0, "underflow": 0}
    chunk = cfg.chunk_size or max(length, 1)
    loss = torch.zeros((), dtype=torch.float64)

    def step(previous, previous_value, addend, addend_value, is_chunk_adder):
        result = accumulate(previous_value, addend_value, cfg)
        for name in events:
            events[name] += getattr(result, name)
        d_addend, d_previous = local_derivatives(result.value, previous_value, addend_value, result.overflow,
                                                 estimator)
        if is_chunk_adder and estimator.startswith("immediate"):
            d_addend = 1.0  # immediate: only the step where a product enters counts
        value = torch.tensor(float(result.value), dtype=torch.float64)
        return InjectedStep.apply(previous, addend, value, d_addend, d_previous), result.value

    for m in range(rows):
        for n in range(w.shape[1]):
            total, total_value = torch.zeros((), dtype=torch.float64), Fraction(0)
            for start in range(0, length, chunk):
                partial, partial_value = torch.zeros((), dtype=torch.float64), Fraction(0)
                for k in range(start, min(start + chunk, length)):
                    exact = x[m, k] * w[k, n]
                    p_value = product(Fraction(x[m, k].item()), Fraction(w[k, n].item()), cfg).value
                    p = exact + (float(p_value) - exact).detach()  # straight through R_prod
                    partial, partial_value = step(partial, partial_value, p, p_value, False)
                if cfg.chunk_size is None:
                    total, total_value = partial, partial_value
                else:
                    total, total_value = step(total, total_value, partial, partial_value, True)
            loss = loss + g[m, n] * total
    loss.backward()
    return x.grad, w.grad, events


CHAIN_CONFIGS = [
    MacConfig(input="e4m3", acc="e3m2"),
    MacConfig(input="e4m3", acc="e4m3", chunk_size=3),
    MacConfig(input="e4m3", acc="e5m2", rounding="rtz", chunk_size=2),
    MacConfig(input="e4m3", acc="e3m3", product="e4m3"),
    MacConfig(input="e4m3", acc="e4m2", underflow=False, chunk_size=4),
]


OPERAND_SCALES = (2.0**-3, 2.0**-1, 1.0, 4.0, 16.0, 256.0)  # from mostly flushed to mostly saturated chains


def random_operands(cfg: MacConfig, rows: int, length: int, columns: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    scale = OPERAND_SCALES[seed % len(OPERAND_SCALES)]

    def values(shape, fmt):
        return quantize(torch.randn(shape, generator=generator, dtype=torch.float64) * scale, fmt)

    g = torch.randint(-4, 5, (rows, columns), generator=generator).to(torch.float64) / 4
    return values((rows, length), cfg.a_format), values((length, columns), cfg.b_format), g


@pytest.mark.parametrize("cfg", CHAIN_CONFIGS, ids=lambda cfg: cfg.name)
@pytest.mark.parametrize("estimator", [name for name in ESTIMATORS if name != "ste"])
def test_gemm_backward_matches_unrolled_autograd_chain(cfg, estimator, comparisons):
    mismatches = compared = 0
    totals = {"overflow": 0, "swamp": 0, "underflow": 0}
    for seed in range(6):
        x, w, g = random_operands(cfg, 3, 7, 4, seed)
        want_x, want_w, events = unrolled_chain_gradients(x, w, g, cfg, estimator)
        got_x, got_w = gemm_backward(x, w, g, cfg, estimator)
        for name in totals:
            totals[name] += events[name]
        for got, want in ((got_x, want_x), (got_w, want_w)):
            compared += got.numel()
            if estimator.endswith("-of"):  # 0/1 derivatives and dyadic operands: every sum is exact
                mismatches += int((got != want).sum())
            else:
                mismatches += int((~torch.isclose(got, want, rtol=1e-12, atol=1e-14)).sum())
    comparisons(f"gemm_backward {estimator} vs unrolled autograd chain ({cfg.name})", compared, mismatches)
    assert mismatches == 0
    assert totals["overflow"] > 0 and totals["swamp"] > 0, f"the cases must exercise the estimator: {totals}"


def test_ste_is_the_plain_matmul_gradient():
    x, w, g = random_operands(MacConfig(input="e4m3", acc="e3m2"), 5, 9, 6, 0)
    grad_x, grad_w = gemm_backward(x.float(), w.float(), g.float(), MacConfig(input="e4m3", acc="e3m2"), "ste")
    assert grad_x.dtype == torch.float32 and grad_w.dtype == torch.float32
    torch.testing.assert_close(grad_x, (g @ w.T).float())
    torch.testing.assert_close(grad_w, (x.T @ g).float())


def test_gemm_backward_sums_chain_derivatives(comparisons):
    """grad_x / grad_w are the documented contractions of D with the other operand (larger shapes)."""
    cfg = MacConfig(input="e4m3", acc="e4m3", chunk_size=16)
    x, w, g = random_operands(cfg, 9, 40, 5, 3)
    got_x, got_w = gemm_backward(x, w, g, cfg, "recursive-diff")
    derivatives = np.array(
        [[dot_derivatives(x[m].numpy(), w[:, n].numpy(), cfg, "recursive-diff")[1] for n in range(5)] for m in range(9)]
    )  # (M, N, K)
    want_x = np.einsum("mn,mnk,kn->mk", g.numpy(), derivatives, w.numpy())
    want_w = np.einsum("mn,mnk,mk->kn", g.numpy(), derivatives, x.numpy())
    close = np.isclose(got_x.numpy(), want_x, rtol=1e-12, atol=1e-14).sum() + np.isclose(
        got_w.numpy(), want_w, rtol=1e-12, atol=1e-14
    ).sum()
    comparisons("gemm_backward vs einsum of per-output D", want_x.size + want_w.size, want_x.size + want_w.size - close)
    assert close == want_x.size + want_w.size


# ------------------------------------------------------------------------------------------------ bad input
def test_rejects_unknown_estimator():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown gradient estimator 'recursive'"):
        gemm_backward(x, torch.zeros(3, 2), torch.zeros(2, 2), E3M2, "recursive")


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes do not chain"):
        gemm_backward(torch.zeros(2, 3), torch.zeros(4, 2), torch.zeros(2, 2), E3M2, "immediate-of")


def test_rejects_products_binary64_cannot_hold():
    cfg = MacConfig(input="e8m30", acc="fp32")
    with pytest.raises(ConfigError, match="significand bits, more than binary64"):
        gemm_backward(torch.zeros(2, 3), torch.zeros(3, 2), torch.zeros(2, 2), cfg, "immediate-of")


def test_lba_matmul_backward_uses_the_estimator(comparisons):
    """End to end: autograd through lba_matmul hands the quantized operands to gemm_backward."""
    from lba_train.gemm import lba_matmul

    cfg = MacConfig(input="e4m3", acc="e3m3")
    generator = torch.Generator().manual_seed(5)
    x = (torch.randn(6, 20, generator=generator, dtype=torch.float64) * 3).requires_grad_(True)
    w = (torch.randn(20, 4, generator=generator, dtype=torch.float64) * 3).requires_grad_(True)
    g = torch.randn(6, 4, generator=generator, dtype=torch.float32)  # e3m3 results come back as float32
    lba_matmul(x, w, cfg, estimator="recursive-diff").backward(g)
    g = g.to(torch.float64)
    want_x, want_w = gemm_backward(quantize(x.detach(), "e4m3"), quantize(w.detach(), "e4m3"), g, cfg, "recursive-diff")
    mismatches = int((x.grad != want_x).sum() + (w.grad != want_w).sum())
    comparisons("lba_matmul backward vs gemm_backward (recursive-diff)", x.numel() + w.numel(), mismatches)
    assert mismatches == 0
    assert not torch.equal(want_x, g @ quantize(w.detach(), "e4m3").T), "the case must differ from STE"
