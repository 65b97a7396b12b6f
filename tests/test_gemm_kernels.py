"""The GEMM kernels against the exact reference: one rounding at a time, then whole products with events.

Every comparison is against lba_core (Fractions), never against another kernel. Data is built to hit what
breaks a careless float implementation: ties decided by far-away bits, sums just below a power of two,
cancellation, saturation, subnormal operands and accumulators, and wide accumulators where binary64 sums are
not exact.
"""

from __future__ import annotations

import zlib
from fractions import Fraction

import numpy as np
import pytest
import torch

from lba_core import ConfigError, FloatFormat, MacConfig, round_to_format
from lba_train.events import EventStats
from lba_train.kernels import available_kernels, gemm_values, numba_binary32, numba_gemm, plan_gemm, select_kernel
from lba_train.kernels import torch_gemm
from lba_train.kernels.dispatch import TRITON_AVAILABLE, batched_gemm_values
from lba_train.kernels.plan import STEP_EXACT_SUM, STEP_GENERAL, STEP_NATIVE, STEP_ROUND_TO_ODD, STEP_ROUND_TWICE, round_spec
from lba_train.kernels.plan import round_twice_holds
from lba_train.quantize import quantize
from support.gemm import batched_operands, operands, random_codes, reference_gemm

KERNEL_NAMES = ["numba", "torch"]


# ------------------------------------------------------------------------------------------------ data
def stable_seed(*parts) -> int:
    """A seed that is the same in every run (Python's hash() of strings is not)."""
    return zlib.crc32(repr(parts).encode())


# Each entry: configuration, expected step algorithm. Between them they cover every step, chunking, RTZ,
# subnormal operands and accumulators, product and weight formats and the underflow=False mode.
CONFIGS = [
    (MacConfig("e4m3", "e4m7"), STEP_EXACT_SUM),
    (MacConfig("e4m3", "e4m7", rounding="rtz", chunk_size=8), STEP_EXACT_SUM),
    (MacConfig("e4m3", "e5m10", chunk_size=16), STEP_EXACT_SUM),
    (MacConfig("e4m3_sub", "e4m7_sub"), STEP_EXACT_SUM),
    (MacConfig("e4m3", "e4m3", underflow=False), STEP_EXACT_SUM),
    (MacConfig("e4m3", "e6m5", product="e5m4"), STEP_EXACT_SUM),
    (MacConfig("e4m3", "e4m4", weight="e2m1", rounding="rtz"), STEP_EXACT_SUM),
    (MacConfig("e3m2", "e3m3", chunk_size=3), STEP_EXACT_SUM),
    (MacConfig("e5m2", "e5m10"), STEP_ROUND_TO_ODD),
    (MacConfig("e5m2_sub", "e5m10_sub", rounding="rtz", chunk_size=5), STEP_ROUND_TO_ODD),
    (MacConfig("e4m3", "e8m23"), STEP_ROUND_TO_ODD),
    (MacConfig("e5m10", "e8m23", rounding="rtz"), STEP_ROUND_TO_ODD),
    (MacConfig("e5m2", "e6m4", product="e6m3_sub", rounding="rtz", underflow=False), STEP_ROUND_TO_ODD),
    (MacConfig("e8m23", "e8m23", chunk_size=7), STEP_ROUND_TO_ODD),
    (MacConfig("e5m2", "e10m52"), STEP_GENERAL),
    (MacConfig("e5m2_sub", "e8m51_sub", rounding="rtz", chunk_size=4), STEP_GENERAL),
    (MacConfig("e4m3", "e5m10", product="e10m52", underflow=False), STEP_GENERAL),
    (MacConfig("e3m2", "e4m25", chunk_size=6), STEP_EXACT_SUM),  # binary64 lanes: 26 bits exceed binary32's
    (MacConfig("e4m3", "e5m10", chunk_size=5), STEP_EXACT_SUM),  # binary32 round-twice with the chunk adder
    (MacConfig("e5m2", "e5m10", underflow=False, chunk_size=9), STEP_ROUND_TO_ODD),
    (MacConfig("e4m3_sub", "e6m4", product="e5m5_sub", chunk_size=4), STEP_EXACT_SUM),
    (MacConfig("e4m3", "e3m21_sub"), STEP_EXACT_SUM),  # binary32 round-to-odd at its largest man_bits
]
CONFIG_IDS = [cfg.name for cfg, _ in CONFIGS]

# The binary32-lane step (None: binary64 lanes) of each entry of CONFIGS, in order (the fourth, a subnormal
# accumulator, takes round-twice since its sums below min_normal are exact in binary32).
BINARY32_STEPS = [
    STEP_ROUND_TWICE, STEP_ROUND_TO_ODD, STEP_ROUND_TWICE, STEP_ROUND_TWICE, STEP_ROUND_TO_ODD, STEP_ROUND_TWICE,
    STEP_EXACT_SUM, STEP_EXACT_SUM, STEP_ROUND_TWICE, STEP_ROUND_TO_ODD, STEP_NATIVE, None, STEP_ROUND_TO_ODD,
    None, None, None, None, None, STEP_ROUND_TWICE, STEP_ROUND_TWICE, STEP_ROUND_TO_ODD, STEP_ROUND_TO_ODD,
]


def test_plan_picks_the_expected_step():
    for (cfg, step), lane_step in zip(CONFIGS, BINARY32_STEPS, strict=True):
        assert plan_gemm(cfg).step == step, cfg.name
        assert plan_gemm(cfg).binary32_step == lane_step, cfg.name


def test_plan_rejects_products_binary64_cannot_hold():
    with pytest.raises(ConfigError, match="significand bits"):
        plan_gemm(MacConfig("e8m26", "e8m23"))
    with pytest.raises(ConfigError, match="binary64 range"):
        plan_gemm(MacConfig("e10m3", "e10m52"))


# ------------------------------------------------------------------------------------------------ roundings
def adversarial_sums(acc: FloatFormat, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b): a an accumulator value, b pushing a + b onto or next to a rounding boundary of acc.

    b = (boundary - a) + tiny, where the boundary is a midpoint or grid point of acc near a (or a power of
    two, where the quantum changes) and tiny is 0 or a far-away bit of either sign: binary64 cannot hold
    such a sum, so only an exact step gets its rounding right.
    """
    a = random_codes(acc, count, rng)
    exponent = np.floor(np.log2(np.maximum(np.abs(a), float(acc.min_positive))))
    quantum = np.ldexp(1.0, (np.maximum(exponent, acc.emin) - acc.man_bits).astype(int))
    offsets = rng.integers(-4, 5, size=count) * 0.5 * quantum  # grid points and midpoints around a
    to_power = np.ldexp(1.0, (exponent + 1).astype(int)) * np.sign(a) - a  # onto the next binade edge
    boundary_step = np.where(rng.random(count) < 0.25, to_power, offsets)
    tiny_exponent = (exponent - acc.man_bits - rng.integers(2, 60, size=count)).astype(int)
    tiny = rng.choice([-1.0, 0.0, 1.0], size=count) * np.ldexp(1.0, tiny_exponent)
    return a, boundary_step + tiny


def rounding_cases():
    for name in ["e4m7", "e5m10", "e4m3_sub", "e8m23", "e6m50", "e5m10_b3_sub"]:
        for rounding in ["rne", "rtz"]:
            for underflow in [True, False]:
                yield FloatFormat.parse(name), rounding, underflow


@pytest.mark.parametrize("fmt,rounding,underflow", list(rounding_cases()), ids=lambda v: str(v))
def test_every_rounding_of_a_sum_matches_the_reference(fmt, rounding, underflow, comparisons):
    """round_sum of each step algorithm (and the torch kernel's) against round_to_format of the exact sum."""
    rng = np.random.default_rng(stable_seed(fmt.name, rounding, underflow))
    cfg = MacConfig("e2m1", fmt, rounding=rounding, underflow=underflow)
    spec = round_spec(fmt, cfg)
    a, b = adversarial_sums(fmt, 600, rng)
    expected = [round_to_format(Fraction(x) + Fraction(y), fmt, rounding, underflow) for x, y in zip(a, b)]
    mismatches = 0
    for round_sum in (numba_gemm.round_sum_general, numba_gemm.round_sum_odd):
        for x, y, want in zip(a, b, expected):
            value, overflowed, underflowed = round_sum(x, y, spec)
            mismatches += (Fraction(value), overflowed, underflowed) != (want.value, want.overflow, want.underflow)
    values, overflowed, underflowed = torch_gemm.round_sum(torch.tensor(a), torch.tensor(b), spec)
    for value, over, under, want in zip(values.tolist(), overflowed.tolist(), underflowed.tolist(), expected):
        mismatches += (Fraction(value), over, under) != (want.value, want.overflow, want.underflow)
    comparisons(f"round(a+b) {fmt.name} {rounding} uf={underflow}: numba x2 + torch", 3 * len(expected), mismatches)
    assert mismatches == 0


def test_exact_sum_rounding_matches_the_reference(comparisons):
    """round_sum_exact on sums that binary64 holds exactly (its precondition), every acc value x products."""
    cfg = MacConfig("e4m3", "e4m7_sub", rounding="rne")
    rng = np.random.default_rng(5)
    mismatches = compared = 0
    for rounding in ["rne", "rtz"]:
        spec = round_spec(cfg.acc, cfg.replace(rounding=rounding))
        a = random_codes(cfg.acc, 3000, rng)
        b = random_codes(cfg.input, 3000, rng) * random_codes(cfg.input, 3000, rng)
        for x, y in zip(a, b):
            want = round_to_format(Fraction(x) + Fraction(y), cfg.acc, rounding)
            got = numba_gemm.round_sum_exact(x, y, spec)
            mismatches += (Fraction(got[0]), got[1], got[2]) != (want.value, want.overflow, want.underflow)
            compared += 1
    comparisons("round_sum_exact e4m7_sub", compared, mismatches)
    assert mismatches == 0


def binary32_rounding_cases():
    for name, rounding, underflow, addend in [
        ("e4m7", "rne", True, "e4m7"),  # round-twice: addends with at most the accumulator's bits
        ("e5m10", "rne", True, "e5m10"),
        ("e5m10", "rne", False, "e5m10"),
        ("e3m11", "rne", True, "e3m11"),  # 2 * 12 + 1 > 24: round to odd
        ("e4m7_sub", "rne", True, "e4m10_sub"),
        ("e5m10_sub", "rtz", True, "e5m10_sub"),
        ("e4m7", "rtz", False, "e4m10"),
        ("e6m21_sub", "rne", True, "e6m21_sub"),
        ("e6m21", "rtz", True, "e6m21"),
    ]:
        yield FloatFormat.parse(name), rounding, underflow, FloatFormat.parse(addend)


def binary32_step_mismatches(fmt, rounding, underflow, addend, to_odd, binade_rounding=False) -> tuple[int, int]:
    """(compared, mismatches) of accumulate32 on adversarial sums a + b, b rounded into ``addend``; the
    accumulator rounded by the bit pattern or (``binade_rounding``) by the binade constant."""
    rng = np.random.default_rng(stable_seed("binary32", fmt.name, rounding, underflow))
    cfg = MacConfig("e2m1", fmt, rounding=rounding, underflow=underflow, product=addend)
    a, b = adversarial_sums(fmt, 3000, rng)
    b = quantize(b, addend, "rtz", False)  # a product or chunk sum can only have the addend format's bits
    keep = (np.abs(a + b) < 2.0**100) & (np.abs(b) <= float(addend.max_value))
    a, b = a[keep], b[keep]
    spec = numba_binary32.binary32_spec(plan_gemm(cfg).acc, binade_rounding)
    mismatches = 0
    for x, y in zip(a, b):
        want = round_to_format(Fraction(x) + Fraction(y), fmt, rounding, underflow)
        value, overflowed, underflowed = numba_binary32.accumulate32(np.float32(x), np.float32(y), spec, to_odd)
        mismatches += (Fraction(float(value)), bool(overflowed), bool(underflowed)) != (
            want.value, want.overflow, want.underflow)
    return len(a), mismatches


def binary32_step_cases():
    """Each rounding case with the bit-pattern rounding, and with the binade constant where it applies."""
    for fmt, rounding, underflow, addend in binary32_rounding_cases():
        yield fmt, rounding, underflow, addend, False
        if rounding == "rne" and not (underflow and fmt.subnormals):
            yield fmt, rounding, underflow, addend, True


@pytest.mark.parametrize("fmt,rounding,underflow,addend,binade_rounding", list(binary32_step_cases()),
                         ids=lambda v: str(v))
def test_binary32_steps_round_sums_like_the_reference(fmt, rounding, underflow, addend, binade_rounding,
                                                      comparisons):
    """The binary32 lanes' round-twice or round-to-odd step (as the plan would pick it), on adversarial sums.

    b pushes a + b onto or next to a boundary of acc plus a far-away bit; the exact-sum step is not
    exercised here (this data needs more than 24 bits), it is covered by the whole-product tests. Where
    the binade constant applies (RNE, no subnormal clamp) it rounds the same sums.
    """
    cfg = MacConfig("e2m1", fmt, rounding=rounding, underflow=underflow, product=addend)
    assert plan_gemm(cfg).binary32_step is not None
    step = STEP_ROUND_TWICE if round_twice_holds(cfg) else STEP_ROUND_TO_ODD
    compared, mismatches = binary32_step_mismatches(
        fmt, rounding, underflow, addend, True if step == STEP_ROUND_TO_ODD else None, binade_rounding
    )
    comparisons(f"binary32 {step} {fmt.name} {rounding} uf={underflow} binade={binade_rounding}", compared,
                mismatches)
    assert mismatches == 0


def test_round_twice_fails_just_outside_its_theorem():
    """With 2P + 1 = 25 > 24 (e3m11) rounding the binary32 sum twice does go wrong: the bound is needed."""
    fmt = FloatFormat.parse("e3m11")
    assert not round_twice_holds(MacConfig("e2m1", fmt, product=fmt))
    _, mismatches = binary32_step_mismatches(fmt, "rne", True, fmt, None)
    assert mismatches > 0


# ------------------------------------------------------------------------------------------------ products
@pytest.mark.parametrize("cfg,step", CONFIGS, ids=CONFIG_IDS)
def test_kernels_match_the_reference_element_by_element(cfg, step, comparisons):
    """Both kernels on random shapes (partial tiles included), values and event counts vs lba_core.dot."""
    rng = np.random.default_rng(stable_seed(cfg.name))
    kinds = ["codes", "saturation", "cancellation", "gaussian"]
    mismatches = compared = 0
    for case, kind in enumerate(kinds):
        rows, length, columns = int(rng.integers(1, 6)), int(rng.integers(0, 24)), int(rng.integers(1, 70))
        if case == 0:
            length = 0  # an empty dot product is +0 with no steps
        x, w = operands(cfg, rows, length, columns, kind, rng)
        expected, expected_stats = reference_gemm(x, w, cfg)
        for kernel in KERNEL_NAMES:
            stats = EventStats()
            got = gemm_values(x, w, cfg, stats=stats, kernel=kernel).numpy()
            bad = int(np.sum(got != expected)) + int(np.sum(np.signbit(got) & (got == 0)))  # values; never -0
            mismatches += bad + (stats != expected_stats)
            compared += expected.size
            assert bad == 0, f"{kernel} {kind}: {bad} elements differ"
            assert stats == expected_stats, f"{kernel} {kind}: events {stats} vs reference {expected_stats}"
    comparisons(f"gemm elements {cfg.name} ({step}), numba + torch", compared, mismatches)


def test_event_counts_are_exercised(comparisons):
    """The data above does raise every event: saturation, underflow and swamping all occur."""
    cfg = MacConfig("e4m3", "e4m4", chunk_size=4)
    rng = np.random.default_rng(11)
    totals = EventStats()
    for kind in ["codes", "saturation", "cancellation"]:
        x, w = operands(cfg, 3, 20, 9, kind, rng)
        expected, expected_stats = reference_gemm(x, w, cfg)
        stats = EventStats()
        got = gemm_values(x, w, cfg, stats=stats).numpy()
        assert np.array_equal(got, expected) and stats == expected_stats
        totals.merge(stats)
    comparisons("event-heavy e4m3/e4m4 c4", 3 * 27, 0)
    assert totals.overflow > 0 and totals.underflow > 0 and totals.swamp > 0


def test_results_do_not_depend_on_the_tiling():
    """More outputs than one tile in both directions: tiles are independent chains."""
    cfg = MacConfig("e5m2", "e5m7", chunk_size=8)
    rng = np.random.default_rng(3)
    x, w = operands(cfg, 9, 40, 150, "gaussian", rng)
    whole = gemm_values(x, w, cfg)
    for rows in [slice(0, 1), slice(4, 9)]:
        for columns in [slice(0, 1), slice(63, 130)]:
            part = gemm_values(x[rows].contiguous(), w[:, columns].contiguous(), cfg)
            assert torch.equal(part, whole[rows, columns])


# ------------------------------------------------------------------------------------------------ dispatch
def test_one_call_runs_a_whole_batch_like_separate_products():
    cfg = MacConfig("e4m3", "e5m10", chunk_size=8)
    rng = np.random.default_rng(17)
    x, w = batched_operands(cfg, 4, 3, 21, 70, "codes", rng)
    for kernel in KERNEL_NAMES:
        batch_stats, loop_stats = EventStats(), EventStats()
        together = batched_gemm_values(x, w, cfg, stats=batch_stats, kernel=kernel).double()
        for b, (xb, wb) in enumerate(zip(x, w)):
            assert torch.equal(together[b], gemm_values(xb, wb, cfg, stats=loop_stats, kernel=kernel)), kernel
        assert batch_stats == loop_stats


def test_dispatch_picks_numba_on_cpu_triton_on_cuda_and_the_torch_path_elsewhere():
    assert available_kernels("cpu") == ["numba", "torch"]
    assert select_kernel(torch.device("cpu")).name == "numba"
    assert select_kernel(torch.device("cuda")).name == ("triton" if TRITON_AVAILABLE else "torch")
    assert select_kernel(torch.device("mps")).name == "torch"
    with pytest.raises(ValueError, match="cannot run on device"):
        select_kernel(torch.device("cuda"), "numba")
    with pytest.raises(ValueError, match="unknown GEMM kernel"):
        select_kernel(torch.device("cpu"), "cuda-cores")


def test_gemm_values_checks_its_operands():
    cfg = MacConfig("e4m3", "e4m7")
    with pytest.raises(ValueError, match="float32 or float64"):
        gemm_values(torch.zeros(2, 3, dtype=torch.int32), torch.zeros(3, 4), cfg)
    with pytest.raises(ValueError, match=r"X \(M, K\)"):
        gemm_values(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64), cfg)


# ------------------------------------------------------------------------------------------------ slow sweep
def random_config(rng: np.random.Generator) -> MacConfig:
    """A random valid configuration: formats, product format, chunking, rounding and underflow mode."""

    def fmt(exp_bits: tuple[int, int], man_bits: tuple[int, int]) -> FloatFormat:
        return FloatFormat(int(rng.integers(*exp_bits)), int(rng.integers(*man_bits)), subnormals=bool(rng.random() < 0.3))

    return MacConfig(
        input=fmt((2, 6), (0, 5)),
        weight=fmt((2, 6), (0, 5)) if rng.random() < 0.3 else None,
        acc=fmt((3, 9), (1, 53)),
        product=fmt((3, 9), (1, 30)) if rng.random() < 0.3 else None,
        rounding=str(rng.choice(["rne", "rtz"])),
        chunk_size=int(rng.integers(1, 20)) if rng.random() < 0.5 else None,
        underflow=bool(rng.random() < 0.7),
    )


@pytest.mark.slow
def test_random_configurations_sweep(comparisons):
    """120 random configurations, both kernels, every element and the event totals vs lba_core.dot."""
    rng = np.random.default_rng(2026)
    mismatches = compared = 0
    steps_seen = set()
    for _ in range(120):
        cfg = random_config(rng)
        steps_seen.add(plan_gemm(cfg).step)
        kind = str(rng.choice(["codes", "saturation", "cancellation", "gaussian"]))
        x, w = operands(cfg, int(rng.integers(1, 7)), int(rng.integers(1, 60)), int(rng.integers(1, 100)), kind, rng)
        expected, expected_stats = reference_gemm(x, w, cfg)
        for kernel in KERNEL_NAMES:
            stats = EventStats()
            got = gemm_values(x, w, cfg, stats=stats, kernel=kernel).numpy()
            bad = int(np.sum(got != expected)) + (stats != expected_stats)
            assert bad == 0, f"{kernel} {kind} {cfg}: {bad} mismatches"
            mismatches += bad
            compared += expected.size
    comparisons("random configurations x 2 kernels", compared, mismatches)
    assert steps_seen == {STEP_EXACT_SUM, STEP_ROUND_TO_ODD, STEP_GENERAL}
