"""The binary32 fast lanes of fp32 (native step), bf16 and e4m3 (round-twice) and their range fallback.

The theorems (docs/simulator.md, "Native and round-twice steps") are checked on their own first: the
binary32 step's rounding of acc + p against the exact rounding (``torch_gemm.round_sum``, itself tested
against lba_core on Fractions in test_gemm_kernels.py), exhaustively for the e4m3 accumulator. Then whole
products against lba_core.dot on data built to hit every fallback: sums crossing 2^128, saturation at the
accumulator's max, Inf - Inf in the chunk adder, double-rounding ties. Then the new kernels against the old
ones (binary64 lanes, the plan's ``step``) on >= 10^7 MACs per format (slow; a 10^6 sample by default).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba import njit

from lba_core import FloatFormat, MacConfig
from lba_train.events import EventStats
from lba_train.kernels import gemm_values, numba_binary32, numba_gemm, plan_gemm, range_fallback, torch_gemm
from lba_train.kernels.plan import STEP_NATIVE, STEP_ROUND_TO_ODD, STEP_ROUND_TWICE, round_spec, round_twice_holds
from lba_train.quantize import quantize
from support.gemm import random_codes, reference_gemm


def all_values(fmt: FloatFormat) -> np.ndarray:
    """Every value of fmt, both signs (zero once)."""
    codes = np.arange(fmt.code_count)
    values = np.array([float(fmt.decode(int(code))) for code in codes])
    return np.unique(values + 0.0)


@njit(cache=True)
def binary32_steps(previous, addends, acc, to_odd):
    """accumulate32 over arrays: (values, overflowed, underflowed)."""
    out = np.empty_like(previous)
    overflowed = np.empty(previous.shape, np.bool_)
    underflowed = np.empty(previous.shape, np.bool_)
    for i in range(previous.shape[0]):
        out[i], overflowed[i], underflowed[i] = numba_binary32.accumulate32(previous[i], addends[i], acc, to_odd)
    return out, overflowed, underflowed


def step_mismatches(cfg: MacConfig, a: np.ndarray, b: np.ndarray, binade_rounding: bool = False) -> tuple[int, int]:
    """(mismatches, hard cases) of the plan's binary32 step on acc values a plus addends b, vs the exact rounding.

    ``binade_rounding``: the accumulator rounded by the binade constant instead of the bit pattern.

    Hard cases: for round-twice, sums whose binary32 value lies exactly on a midpoint of the accumulator's
    grid (where a careless double rounding goes wrong); for the native step, sums binary32 rounds.
    """
    plan = plan_gemm(cfg)
    step = plan.binary32_step
    acc = None if step == STEP_NATIVE else numba_binary32.binary32_spec(plan.acc, binade_rounding)
    got, got_over, got_under = binary32_steps(a.astype(np.float32), b.astype(np.float32), acc,
                                              True if step == STEP_ROUND_TO_ODD else None)
    want, want_over, want_under = torch_gemm.round_sum(torch.tensor(a), torch.tensor(b), round_spec(cfg.acc, cfg))
    finite = np.isfinite(got)  # non-finite lanes are finished on binary64 lanes
    bad = finite & ((got.astype(np.float64) != want.numpy()) | (got_over != want_over.numpy())
                    | (got_under != want_under.numpy()))
    if step == STEP_NATIVE:
        _, error = torch_gemm.two_sum(torch.tensor(a), torch.tensor(b))
        inexact = (got.astype(np.float64) != torch.tensor(a).add(torch.tensor(b)).numpy()) | (error.numpy() != 0)
        return int(bad.sum()), int(np.sum(inexact & finite))
    binary32_sum = got_sum = (a.astype(np.float32) + b.astype(np.float32)).astype(np.float64)
    quantum = np.ldexp(1.0, np.frexp(got_sum)[1] - 1 - cfg.acc.man_bits)
    ties = int(np.sum(np.isfinite(binary32_sum) & ((np.abs(binary32_sum) / quantum % 1.0) == 0.5)))
    return int(bad.sum()), ties


@pytest.mark.parametrize("binade_rounding", [False, True], ids=["bit-pattern", "binade-constant"])
def test_round_twice_on_an_e4m3_accumulator_is_exact_for_every_pair(binade_rounding, comparisons):
    """Every e4m3 accumulator value plus every distinct e4m3 x e4m3 product (0.46 M pairs): 0 mismatches,
    with either rounding of the binary32 sum."""
    cfg = MacConfig("e4m3", "e4m3")
    assert plan_gemm(cfg).binary32_step == STEP_ROUND_TWICE
    fmt = cfg.input
    values = all_values(fmt)
    products = np.unique(np.multiply.outer(values, values))
    accs = all_values(cfg.acc)
    a = np.repeat(accs, products.size)
    b = np.tile(products, accs.size)
    mismatches, ties = step_mismatches(cfg, a, b, binade_rounding)
    comparisons(f"round-twice e4m3 acc, every acc value x product ({ties} binary32 sums on a midpoint), "
                f"binade constant: {binade_rounding}", a.size, mismatches)
    assert mismatches == 0 and ties > 1000


def test_round_twice_needs_its_swamping_condition(comparisons):
    """Without flush (underflow=False) an accumulator value of 2^-18 can be swamped whole by a product that
    is a midpoint of the e4m3 grid: rounding twice then goes wrong, so the plan takes round-to-odd."""
    cfg = MacConfig("e4m3", "e4m3", underflow=False)
    assert not round_twice_holds(cfg) and plan_gemm(cfg).binary32_step == STEP_ROUND_TO_ODD
    values = all_values(cfg.input)
    products = np.unique(np.multiply.outer(values, values))
    tiny = np.ldexp(np.array([1.0, -1.0, 1.5, -1.25]), -18)
    a, b = np.repeat(tiny, products.size), np.tile(products, tiny.size)
    plan = plan_gemm(cfg)
    got, _, _ = binary32_steps(a.astype(np.float32), b.astype(np.float32), numba_binary32.binary32_spec(plan.acc),
                               None)
    want = torch_gemm.round_sum(torch.tensor(a), torch.tensor(b), round_spec(cfg.acc, cfg))[0].numpy()
    wrong = int(np.sum(got.astype(np.float64) != want))
    comparisons("round-twice outside its condition (e4m3 acc, no flush): wrong roundings", a.size, 0)
    assert wrong > 0
    assert step_mismatches(cfg, a, b)[0] == 0  # the round-to-odd step the plan picks


@pytest.mark.parametrize("acc", ["e4m7_sub", "e5m10_sub"])
def test_round_twice_with_a_subnormal_clamp_is_exact(acc, comparisons):
    """Subnormal accumulators on round-twice: every value of e4m7_sub (of e5m10_sub, every value below
    2^(emin + 3)) plus every distinct e4m3 x e4m3 product, against the exact rounding. Sums below min_normal
    are exact in binary32 (emin - q0 <= 24), so the clamp's fixed-quantum rounding is the only one there."""
    cfg = MacConfig("e4m3", acc)
    assert plan_gemm(cfg).binary32_step == STEP_ROUND_TWICE
    values = all_values(cfg.input)
    products = np.unique(np.multiply.outer(values, values))
    accs = all_values(cfg.acc)
    accs = accs[np.abs(accs) < 2.0 ** (cfg.acc.emin + 3)] if acc == "e5m10_sub" else accs
    a, b = np.repeat(accs, products.size), np.tile(products, accs.size)
    below = int(np.sum((a + b != 0) & (np.abs(a + b) < float(cfg.acc.min_normal))))
    mismatches, ties = step_mismatches(cfg, a, b)
    comparisons(f"round-twice {acc} acc, accumulator values x every product ({below} sums below min_normal, "
                f"{ties} binary32 sums on a midpoint)", a.size, mismatches)
    assert mismatches == 0 and below > 10_000 and ties > 10_000


def test_round_twice_with_a_clamp_keeps_both_conditions():
    """The clamp's extra condition (emin - q0 <= 24) and the swamping condition (smallest value 2^(emin - M)
    with a clamp) each send a configuration to round-to-odd: e5m2 products reach down to 2^-32, 30 binades
    below e3m10_sub's min_normal (e3m10 with flush takes round-twice); e4m3_sub's smallest value 2^-9 is not
    above 2^(B - 25) = 2^-7."""
    assert plan_gemm(MacConfig("e5m2", "e3m10")).binary32_step == STEP_ROUND_TWICE
    assert plan_gemm(MacConfig("e5m2", "e3m10_sub")).binary32_step == STEP_ROUND_TO_ODD
    assert not round_twice_holds(MacConfig("e4m3", "e4m3_sub"))
    assert plan_gemm(MacConfig("e4m3", "e4m3_sub")).binary32_step == STEP_ROUND_TO_ODD


@pytest.mark.parametrize("acc", ["e8m23", "e8m7"])
def test_fp32_and_bf16_steps_on_adversarial_sums(acc, comparisons):
    """Random accumulator values (every binade) plus products of e4m3 and of e5m2 operands, and sums built
    to land on midpoints: native (fp32) and round-twice (bf16) against the exact rounding."""
    rng = np.random.default_rng(28)
    total = 0
    for operand in ["e4m3", "e5m2"]:
        cfg = MacConfig(operand, acc)
        fmt = FloatFormat.parse(acc)
        products = random_codes(cfg.input, 60000, rng) * random_codes(cfg.input, 60000, rng)
        a = random_codes(fmt, 60000, rng)
        near = quantize(products * (1 + rng.integers(-3, 4, 60000) * 2.0 ** (-fmt.man_bits - 1)), fmt, "rtz", False)
        a = np.where(rng.random(60000) < 0.5, a, near)  # a close to the product: cancellation, midpoints
        a = np.where(rng.random(60000) < 0.5, -a, a)
        a = a[np.abs(a) <= float(np.finfo(np.float32).max)]  # larger accumulator values live on binary64 lanes
        products = products[: a.size]
        mismatches, ties = step_mismatches(cfg, a, products)
        comparisons(f"{plan_gemm(cfg).binary32_step} {cfg.name}: acc + product ({ties} hard cases)", a.size,
                    mismatches)
        assert mismatches == 0
        total += ties
    assert total > 0


# ------------------------------------------------------------------------------------------------ products
BIG = "e6m2_b1"  # values up to 2^62.8: products reach 2^125.6, a few of them sum past 2^128


def big_operands(rows: int, length: int, columns: int, rng: np.random.Generator, signs: str = "mixed"):
    """Products of 2^124 .. 2^125.6 in the odd rows (their sums pass 2^128), of every binade in the even rows.

    "positive": every product positive (saturation); "mixed": the first half positive, the second half
    negative (sums cross 2^128 and come back), with random signs in a third of the columns.
    """
    fmt = FloatFormat.parse(BIG)
    x = np.abs(random_codes(fmt, rows * length, rng, top_binades=1)).reshape(rows, length)
    x[::2] = random_codes(fmt, x[::2].size, rng).reshape(x[::2].shape)
    w = np.abs(random_codes(fmt, length * columns, rng, top_binades=1)).reshape(length, columns)
    if signs == "mixed":
        w[length // 2 :] *= -1.0
        w[:, ::3] *= rng.choice([-1.0, 1.0], size=(length, 1))
    return torch.tensor(x), torch.tensor(w)


FALLBACK_CASES = [
    (MacConfig(BIG, "e8m23"), "mixed"),  # sums cross 2^128 and come back; saturation at max
    (MacConfig(BIG, "e8m23"), "positive"),  # saturation
    (MacConfig(BIG, "e8m23", chunk_size=8), "mixed"),  # Inf - Inf (NaN) in the chunk adder
    (MacConfig(BIG, "e8m7"), "mixed"),
    (MacConfig(BIG, "e8m7", chunk_size=4), "positive"),
    (MacConfig(BIG, "e8m7_b128"), "mixed"),  # emax = 127: saturation clamps in binary32, no fallback needed
    (MacConfig(BIG, "e8m7_sub"), "mixed"),  # round-twice with a subnormal clamp: Inf passes the clamp's test
]


@pytest.mark.parametrize("cfg,signs", FALLBACK_CASES, ids=[f"{c.name}-{s}" for c, s in FALLBACK_CASES])
def test_lanes_leaving_binary32_are_finished_exactly(cfg, signs, comparisons):
    """Values and events vs lba_core.dot where sums cross 2^128; counts the lanes the fallback finished."""
    plan = plan_gemm(cfg)
    assert plan.binary32_step in (STEP_NATIVE, STEP_ROUND_TWICE)
    rng = np.random.default_rng(len(cfg.name) + len(signs))
    x, w = big_operands(4, 24, 36, rng, signs)
    expected, expected_stats = reference_gemm(x, w, cfg)
    values, events = numba_binary32.gemm(x.float()[None].numpy(), w.float()[None].numpy(), plan.product, plan.acc,
                                         plan.chunk_size or 0, plan.binary32_step, True)
    nans = int(np.isnan(values).sum())
    _, _, finished = range_fallback.finish(values, events, x.float()[None].numpy(), w.float()[None].numpy(), plan,
                                           True)
    stats = EventStats()
    got = gemm_values(x, w, cfg, stats=stats).numpy()
    mismatches = int(np.sum(got != expected)) + (stats != expected_stats)
    comparisons(f"{cfg.name} {signs}: {finished} lanes finished on binary64 ({nans} NaN), overflow events "
                f"{expected_stats.overflow}", expected.size, mismatches)
    assert mismatches == 0
    assert expected_stats.swamp > 0
    assert expected_stats.overflow > 0 or signs == "mixed"
    assert nans > 0 or cfg.chunk_size != 8
    if cfg.acc.emax == 127:
        assert finished == 0  # saturation clamps every lane to max_value, a binary32 number
    else:
        assert finished > 0


def test_fp32_plan_and_narrow_sums_never_fall_back():
    """e4m3 operands cannot reach 2^128 in practice: the fallback finds nothing, values match the old kernel."""
    cfg = MacConfig("e4m3", "fp32")
    plan = plan_gemm(cfg)
    assert plan.binary32_step == STEP_NATIVE and plan.binary32_fallback
    assert plan_gemm(MacConfig("e4m3", "e8m23", rounding="rtz")).binary32_step is None  # RTZ: binary64 lanes


# ------------------------------------------------------------------------------------------------ new vs old
def new_vs_old(acc: str, rows: int, length: int, columns: int, seed: int) -> tuple[int, int]:
    """(MACs, mismatches) of the binary32 kernel against the binary64 kernel (plan.step), values and events."""
    cfg = MacConfig("e4m3", acc)
    plan = plan_gemm(cfg)
    generator = torch.Generator().manual_seed(seed)
    x = quantize(torch.randn(1, rows, length, generator=generator) * 4, "e4m3").numpy()
    w = quantize(torch.randn(1, length, columns, generator=generator) * 4, "e4m3").numpy()
    w[:, ::7] *= -1.0
    new, new_events = numba_binary32.gemm(x, w, plan.product, plan.acc, 0, plan.binary32_step, True)
    old, old_events = numba_gemm.gemm(x.astype(np.float64), w.astype(np.float64), plan.product, plan.acc, 0,
                                      plan.step, True)
    mismatches = int(np.sum(new.astype(np.float64) != old)) + int(np.any(new_events != old_events))
    return rows * length * columns, mismatches


NEW_VS_OLD = ["e8m23", "e8m7", "e4m3", "e4m7_sub", "e5m10_sub"]


@pytest.mark.parametrize("acc", NEW_VS_OLD)
def test_new_kernels_match_the_old_on_a_sample(acc, comparisons):
    macs, mismatches = new_vs_old(acc, 64, 256, 64, 1)
    comparisons(f"binary32 {plan_gemm(MacConfig('e4m3', acc)).binary32_step} vs binary64 lanes, {acc}", macs,
                mismatches)
    assert mismatches == 0


@pytest.mark.slow
@pytest.mark.parametrize("acc", NEW_VS_OLD)
def test_new_kernels_match_the_old_on_ten_million_macs(acc, comparisons):
    macs, mismatches = new_vs_old(acc, 256, 1024, 48, 2)
    comparisons(f"binary32 vs binary64 lanes, {acc}, 256x1024x48", macs, mismatches)
    assert macs >= 10**7 and mismatches == 0


NEW_STEP_CONFIGS = [
    MacConfig("e4m3", "e8m23", product="e5m10"),  # native accumulator after a rounded product
    MacConfig("e4m3", "e8m23", chunk_size=5),
    MacConfig("e5m2", "bf16", chunk_size=3),
    MacConfig("e4m3", "e4m3", chunk_size=4),  # round-twice with 8-bit products into a 4-bit accumulator
    MacConfig("e4m3", "e4m3", product="e5m6"),
    MacConfig("e4m3", "e4m7_sub", chunk_size=5),  # round-twice with a subnormal clamp, and its chunk adder
    MacConfig("e5m2", "e5m7_sub"),
]


@pytest.mark.parametrize("cfg", NEW_STEP_CONFIGS, ids=[cfg.name for cfg in NEW_STEP_CONFIGS])
def test_new_steps_match_the_reference_element_by_element(cfg, comparisons):
    """Products, chunking and product formats on the new steps, four data kinds, values and events."""
    from support.gemm import operands

    assert plan_gemm(cfg).binary32_step in (STEP_NATIVE, STEP_ROUND_TWICE)
    rng = np.random.default_rng(len(cfg.name))
    mismatches = compared = 0
    for kind in ["codes", "saturation", "cancellation", "gaussian"]:
        x, w = operands(cfg, 3, 17, 24, kind, rng)
        expected, expected_stats = reference_gemm(x, w, cfg)
        stats = EventStats()
        got = gemm_values(x, w, cfg, stats=stats).numpy()
        mismatches += int(np.sum(got != expected)) + (stats != expected_stats)
        compared += expected.size
    comparisons(f"{plan_gemm(cfg).binary32_step} {cfg.name} vs lba_core.dot", compared, mismatches)
    assert mismatches == 0


# ------------------------------------------------------------------------------------------------ event counts
def binary32_vs_binary64_events(cfg: MacConfig, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(binary32 kernel's events, binary64 kernel's events, value mismatches) on float32 (B, M, K), (B, K, N)."""
    plan = plan_gemm(cfg)
    assert plan.binary32_step is not None
    new, new_events = numba_binary32.gemm(x, w, plan.product, plan.acc, plan.chunk_size or 0, plan.binary32_step,
                                          True)
    old, old_events = numba_gemm.gemm(x.astype(np.float64), w.astype(np.float64), plan.product, plan.acc,
                                      plan.chunk_size or 0, plan.step, True)
    return new_events, old_events, int(np.sum(new.astype(np.float64) != old))


def test_packed_event_counters_hold_the_most_events_a_block_can_bring(comparisons):
    """Every step an event: the packed 10-bit lane fields take their largest increment (8 per k step) over
    COUNT_BLOCK steps and are flushed in time, over several blocks and a partial one (K = 200)."""
    cfg = MacConfig("e4m3", "e4m3", chunk_size=1)  # a MAC and a chunk-adder step per k, both overflowing
    x = np.full((1, 5, 200), 448.0, np.float32)
    w = np.full((1, 200, 70), 448.0, np.float32)
    new_events, old_events, mismatches = binary32_vs_binary64_events(cfg, x, w)
    assert numba_binary32.COUNT_BLOCK * 2 * numba_binary32.TILE_ROWS < numba_binary32.UNDERFLOW_UNIT
    # every MAC overflows; every chunk-adder step but the first (0 + 448) overflows and swamps at max
    assert new_events.tolist() == [5 * 200 * 70 + 5 * 199 * 70, 0, 5 * 199 * 70] == old_events.tolist()
    comparisons("packed event counters at their largest increments vs binary64 lanes", x.size * 70, mismatches)
    assert mismatches == 0


@pytest.mark.parametrize("cfg", [MacConfig("e4m3", "e4m7"), MacConfig("e4m3", "fp32"),
                                 MacConfig("e4m3", "e4m7", product="e4m3"), MacConfig("e4m3", "e5m10", chunk_size=6)],
                         ids=lambda cfg: cfg.name)
def test_zero_products_are_taken_off_the_swamp_count(cfg, comparisons):
    """Sparse operands (zero rows, columns and entries; padded tiles): the binary32 kernel counts a zero product
    as an unchanged lane and gemm() takes the zero products off again; a product format keeps the direct test
    (it can round a non-zero a*w to zero)."""
    rng = np.random.default_rng(7)
    # e4m3 values over its whole range (2^-9 .. 448), so that even an fp32 accumulator swamps
    x = quantize(torch.tensor(rng.normal(1, 0.5, (3, 9, 150)) * 2.0 ** rng.integers(-9, 9, (3, 9, 150))),
                 "e4m3").numpy().astype(np.float32)
    w = quantize(torch.tensor(rng.normal(1, 0.5, (3, 150, 37)) * 2.0 ** rng.integers(-9, 9, (3, 150, 37))),
                 "e4m3").numpy().astype(np.float32)
    x[rng.random(x.shape) < 0.6] = 0.0
    w[rng.random(w.shape) < 0.3] = 0.0
    x[:, 2] = 0.0
    w[:, :, 5] = -0.0
    assert numba_binary32.zero_products(x, w) > x.size * 37 // 2
    new_events, old_events, mismatches = binary32_vs_binary64_events(cfg, x, w)
    comparisons(f"{cfg.name}: events on sparse operands vs binary64 lanes {old_events.tolist()}", x.size * 37,
                mismatches + int(np.any(new_events != old_events)))
    assert mismatches == 0 and new_events.tolist() == old_events.tolist()
    assert old_events[2] > 0


def test_binade_rounding_takes_the_formats_bound_before_reading_the_operands():
    """The plan's bound on |product| (from the operand formats) proves the binade condition without a pass over
    the operands; a bound too weak to prove it leaves the decision to the operands' largest magnitudes."""
    plan = plan_gemm(MacConfig("e4m3", "e5m10"))
    x = np.full((1, 4, 8), 3e38, np.float32)  # no e4m3 operand is this large: only a pass over x sees it
    w = np.ones((1, 8, 4), np.float32)
    assert not numba_binary32.binade_rounding_holds(plan.acc, x, w, False, 0)
    assert numba_binary32.binade_rounding_holds(plan.acc, x, w, False, 0, 2.0**plan.product_bound_exponent)
    assert not numba_binary32.binade_rounding_holds(plan.acc, x, w, False, 0, 2.0**200)
    assert numba_binary32.binade_rounding_holds(plan.acc, x / 3e38, w, False, 0, 2.0**200)
