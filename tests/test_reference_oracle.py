"""The readable reference (lba_core) against the independent MPFR oracle (tests/oracle.py)."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from lba_core import FloatFormat, MacConfig, accumulate, dot, fmaq, round_to_format
from oracle import (
    Spec,
    all_values,
    decode,
    oracle_add,
    oracle_config,
    oracle_dot,
    oracle_fma,
    oracle_round,
    spec_of,
)

MODES = [(rounding, underflow) for rounding in ("rne", "rtz") for underflow in (True, False)]


def step_tuple(step):
    return step.value, step.overflow, step.underflow, step.swamp


@pytest.mark.parametrize("name", ["e2m1", "e2m1_sub", "e3m2", "e3m2_sub", "e4m3", "e4m3_sub", "e5m2_b20_sub", "e3m0"])
def test_decode_and_encode_every_code(name, comparisons):
    fmt = FloatFormat.parse(name)
    spec = spec_of(fmt)
    mismatches = 0
    for code in range(fmt.code_count):
        value = decode(spec, code)
        mismatches += fmt.decode(code) != value
        mismatches += fmt.decode(fmt.encode(value)) != value
    assert fmt.values() == all_values(spec)
    comparisons(f"decode/encode every code of {name}", 2 * fmt.code_count, mismatches)
    assert mismatches == 0


SLOW = pytest.mark.slow


@pytest.mark.parametrize("name", ["e2m1", "e3m2_sub", "e4m3", pytest.param("e3m4_sub", marks=SLOW), pytest.param("e5m2", marks=SLOW)])
@pytest.mark.parametrize("rounding,underflow", MODES)
def test_round_every_pair_sum_and_midpoint(name, rounding, underflow, comparisons):
    """R_F of every sum of two values of a small format, of every midpoint, and of points just beside them."""
    fmt = FloatFormat.parse(name)
    spec = spec_of(fmt)
    values = all_values(spec)
    probes = {x + y for x, y in itertools.product(values, repeat=2)}
    eps = fmt.min_positive / 64
    probes |= {v + d for v in probes for d in (eps, -eps)}
    probes |= {(x + y) / 2 for x, y in zip(values, values[1:])}
    probes |= {v * 3 / 4 for v in values} | {v * 33 / 64 for v in values}
    mismatches = 0
    for x in probes:
        got = round_to_format(x, fmt, rounding, underflow)
        mismatches += (got.value, got.overflow, got.underflow) != oracle_round(x, spec, rounding, underflow)
    comparisons(f"R_F {name} {rounding} underflow={underflow}", len(probes), mismatches)
    assert mismatches == 0


@pytest.mark.parametrize(
    "in_name,acc_name,product",
    [
        ("e2m1", "e3m2", None),
        ("e2m1_sub", "e3m2_sub", None),
        ("e2m1", "e4m3", "e3m1"),
        pytest.param("e3m1_sub", "e3m3", None, marks=SLOW),
    ],
)
@pytest.mark.parametrize("rounding,underflow", MODES)
def test_fmaq_all_inputs_of_a_small_format(in_name, acc_name, product, rounding, underflow, comparisons):
    """Every a, every b, every accumulator value: the whole FMAq table of a small configuration."""
    cfg = MacConfig(in_name, acc_name, product=product, rounding=rounding, underflow=underflow)
    ocfg = oracle_config(cfg)
    inputs = all_values(ocfg.a)
    accs = all_values(ocfg.acc)
    mismatches = compared = 0
    for a, b, acc in itertools.product(inputs, inputs, accs):
        compared += 1
        mismatches += step_tuple(fmaq(a, b, acc, cfg)) != oracle_fma(a, b, acc, ocfg)
    comparisons(f"FMAq exhaustive {cfg.name}", compared, mismatches)
    assert mismatches == 0


@pytest.mark.parametrize(
    "acc_name,rounding",
    [("e4m7", "rne"), ("e5m6", "rtz")] + [pytest.param(*p, marks=SLOW) for p in [("e4m7", "rtz"), ("e5m6", "rne"), ("e3m8", "rne"), ("e3m8", "rtz")]],
)
def test_every_e4m3_product_against_sampled_accumulators(acc_name, rounding, comparisons):
    """All 241 x 241 distinct e4m3 products, each against accumulators drawn across every binade."""
    cfg = MacConfig("e4m3", acc_name, rounding=rounding)
    ocfg = oracle_config(cfg)
    inputs = all_values(ocfg.a)
    accs = all_values(ocfg.acc)
    boundary = [v for v in accs if abs(v) in (0, cfg.acc.max_value, cfg.acc.min_normal)]
    rng = random.Random(f"e4m3-products-{acc_name}-{rounding}")
    mismatches = compared = 0
    for index, (a, b) in enumerate(itertools.product(inputs, inputs)):
        acc = boundary[index % len(boundary)] if index % 5 == 0 else rng.choice(accs)
        compared += 1
        mismatches += step_tuple(fmaq(a, b, acc, cfg)) != oracle_fma(a, b, acc, ocfg)
    comparisons(f"every e4m3 product vs sampled acc, {cfg.name}", compared, mismatches)
    assert mismatches == 0


DOT_CONFIGS = [
    MacConfig("e4m3", "e4m7"),
    MacConfig("e4m3", "e5m6", rounding="rtz"),
    MacConfig("e5m2", "e3m8", chunk_size=4),
    MacConfig("e4m3_sub", "e4m3", chunk_size=3, rounding="rtz"),
    MacConfig("e4m3", "e5m10", product="e5m4"),
    MacConfig("e2m1_sub", "e3m2", weight="e4m3"),
    MacConfig("e4m3", "e4m7", underflow=False, chunk_size=5),
    MacConfig("e4m3", "e8m23"),
    MacConfig("e3m4", "e4m7_b4_sub", chunk_size=2),
]


@pytest.mark.parametrize("cfg", DOT_CONFIGS, ids=lambda c: c.name)
def test_random_dot_products(cfg, comparisons):
    ocfg = oracle_config(cfg)
    a_values, b_values = all_values(ocfg.a), all_values(ocfg.b)
    rng = random.Random(cfg.name)
    mismatches = 0
    trials = 300
    for _ in range(trials):
        k = rng.randrange(0, 40)
        # Mix wide-range and narrow-range draws so that overflow, cancellation and swamping all occur.
        pool_a = a_values if rng.random() < 0.5 else a_values[len(a_values) // 3 : 2 * len(a_values) // 3]
        a = [rng.choice(pool_a) for _ in range(k)]
        b = [rng.choice(b_values) for _ in range(k)]
        got = dot(a, b, cfg)
        mismatches += (got.value, got.overflow, got.underflow, got.swamp) != oracle_dot(a, b, ocfg)
    comparisons(f"random dot products {cfg.name}", trials, mismatches)
    assert mismatches == 0


def test_chunk_adder_matches_oracle(comparisons):
    cfg = MacConfig("e4m3", "e3m4", rounding="rtz")
    ocfg = oracle_config(cfg)
    accs = all_values(ocfg.acc)
    mismatches = sum(step_tuple(accumulate(x, y, cfg)) != oracle_add(x, y, ocfg) for x in accs for y in accs)
    comparisons("chunk adder, every pair of e3m4", len(accs) ** 2, mismatches)
    assert mismatches == 0


def test_oracle_spec_agrees_with_format_limits():
    for name in ["e4m3", "e5m2_sub", "fp16", "bf16", "fp32"]:
        fmt = FloatFormat.parse(name)
        assert Spec(fmt.exp_bits, fmt.man_bits, fmt.bias, fmt.subnormals).largest == fmt.max_value


# ------------------------------------------------------------------------------------------ directed cases
# Hand-computed expectations (not the oracle): each line states the arithmetic it checks.

E4M3 = FloatFormat.parse("e4m3")  # max 480 = 1.875 * 2^8, min_normal 2^-6, ulp at 1.0 is 1/8
E4M7 = FloatFormat.parse("e4m7")  # max 510 = (2 - 2^-7) * 2^8


@pytest.mark.parametrize(
    "x,rounding,expected,overflow,underflow",
    [
        (Fraction(17, 16), "rne", Fraction(1), False, False),  # 1 + ulp/2: tie, 1.000 is even
        (Fraction(19, 16), "rne", Fraction(5, 4), False, False),  # 1.125 + ulp/2: tie, 1.010 is even
        (Fraction(-19, 16), "rne", Fraction(-5, 4), False, False),  # ties are symmetric
        (Fraction(19, 16), "rtz", Fraction(9, 8), False, False),
        (Fraction(-19, 16), "rtz", Fraction(-9, 8), False, False),  # toward zero, not toward -inf
        (Fraction(31, 16), "rne", Fraction(2), False, False),  # 1.9375 rounds up into the next binade
        (Fraction(495), "rne", Fraction(480), False, False),  # below max + ulp/2 (496): rounds to max, no saturation
        (Fraction(496), "rne", Fraction(480), True, False),  # tie at max + ulp/2 rounds to even 512 > max: saturate
        (Fraction(511), "rtz", Fraction(480), False, False),  # RTZ truncates to max without saturating
        (Fraction(512), "rtz", Fraction(480), True, False),  # 512 itself exceeds max
        (Fraction(-10**6), "rne", Fraction(-480), True, False),
        (Fraction(1, 64), "rne", Fraction(1, 64), False, False),  # min_normal exactly
        (Fraction(31, 2048), "rne", Fraction(1, 64), False, False),  # 0.96875*min_normal: rounds up, survives
        (Fraction(31, 2048), "rtz", Fraction(0), False, True),  # truncates to 0.9375*min_normal, then flushed
        (Fraction(15, 1024), "rne", Fraction(0), False, True),  # 0.9375*min_normal is exact at its binade: flushed
        (Fraction(1, 2**40), "rne", Fraction(0), False, True),
    ],
)
def test_directed_rounding_e4m3(x, rounding, expected, overflow, underflow):
    result = round_to_format(x, E4M3, rounding)
    assert (result.value, result.overflow, result.underflow) == (expected, overflow, underflow)


def test_subnormal_rounding_and_no_flush_mode():
    sub = FloatFormat.parse("e4m3_sub")  # subnormal step 2^-9
    assert round_to_format(Fraction(3, 2**11), sub).value == Fraction(1, 2**9)  # 0.75 step -> 1 step
    assert round_to_format(Fraction(1, 2**10), sub).value == 0  # half a step: tie to even zero
    assert round_to_format(Fraction(3, 2**10), sub).value == Fraction(2, 2**9)  # 1.5 steps: tie to even 2
    assert round_to_format(Fraction(3, 2**10), sub, "rtz").value == Fraction(1, 2**9)
    # underflow=False: no flush, no lower exponent bound; still M fraction bits.
    assert round_to_format(Fraction(15, 1024), E4M3, underflow=False).value == Fraction(15, 1024)
    assert round_to_format(Fraction(17, 2**60), E4M3, underflow=False).value == Fraction(1, 2**56)


def test_fmaq_directed_events():
    cfg = MacConfig(E4M3, E4M7)
    # Cancellation to exact zero gives +0, no underflow (the exact result is zero).
    step = fmaq(Fraction(2), Fraction(-3), Fraction(6), cfg)
    assert (step.value, step.overflow, step.underflow, step.swamp) == (0, False, False, False)
    # Swamping: 256 + 0.5 needs 9 fraction bits; 0.5 is half an ulp (2) -> tie to even keeps 256.
    step = fmaq(Fraction(1, 2), Fraction(1), Fraction(256), cfg)
    assert (step.value, step.swamp) == (256, True)
    # Saturated accumulator stays at max: overflow and swamp together.
    step = fmaq(Fraction(4), Fraction(4), E4M7.max_value, cfg)
    assert (step.value, step.overflow, step.swamp) == (E4M7.max_value, True, True)
    # Underflow of the sum: 2^-6 - 2^-6*(1 - 2^-4) leaves 2^-10, below min_normal: flushed.
    step = fmaq(Fraction(-15, 16), Fraction(1, 64), Fraction(1, 64), cfg)
    assert (step.value, step.underflow, step.swamp) == (0, True, False)
    # RTZ with cancellation: 1 - 2^-12 truncates to the largest value below 1 (1 - 2^-8), not up to 1.
    rtz = MacConfig(E4M3, E4M7, rounding="rtz")
    step = fmaq(Fraction(-1, 64), Fraction(1, 64), Fraction(1), rtz)
    assert step.value == 1 - Fraction(1, 256)
    # RNE of the same rounds back to 1 and the product is swamped.
    step = fmaq(Fraction(-1, 64), Fraction(1, 64), Fraction(1), cfg)
    assert (step.value, step.swamp) == (1, True)


def test_fmaq_subnormal_inputs_and_product_format():
    cfg = MacConfig("e4m3_sub", "e5m6", product="e5m2")
    # Smallest subnormal e4m3 (2^-9) squared is 2^-18: below e5m2's min_normal 2^-14: product flushed.
    step = fmaq(Fraction(1, 2**9), Fraction(1, 2**9), Fraction(0), cfg)
    assert (step.value, step.underflow, step.swamp) == (0, True, False)  # p = R_prod(a*b) = 0: not a swamp
    # 3*2^-9 * 7*2^-9 = 21*2^-18 rounds (e5m6 acc, exact product) without a product format.
    plain = MacConfig("e4m3_sub", "e5m6")
    assert fmaq(Fraction(3, 2**9), Fraction(7, 2**9), Fraction(1, 2**10), plain).value == Fraction(1, 2**10) + Fraction(20, 2**18)
    # Product format e5m2 rounds 1.875*1.875 = 3.515625 to 3.5 before accumulating.
    assert fmaq(Fraction(15, 8), Fraction(15, 8), Fraction(0), cfg).value == Fraction(7, 2)


def test_chunked_dot_order_and_empty():
    cfg = MacConfig(E4M3, "e4m3", chunk_size=2)
    # Chunks (256+16) and (16+16): 272 rounds to even 256 in e4m3 (ulp 32); 32; total 288 -> 288 (ulp 32).
    result = dot([256, 16, 16, 16], [1, 1, 1, 1], cfg)
    assert result.value == 288
    # Sequentially (no chunks) each 16 is swamped by 256.
    assert dot([256, 16, 16, 16], [1, 1, 1, 1], MacConfig(E4M3, "e4m3")).value == 256
    assert dot([], [], cfg).value == 0
