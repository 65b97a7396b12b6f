"""Integer and fixed-point accumulators (docs/arithmetic.md §8): lba_core against the plain-integer oracle.

The oracle (tests/oracle.py, FixedSpec functions) shares nothing with lba_core: it decodes codes by bit
arithmetic, rounds with Python's round()/math.trunc and wraps by masking. Every pair of 8-bit operand codes
is checked against boundary accumulators; the step depends on the pair only through its exact product, so
the reference runs once per distinct (product, accumulator) and every pair is mapped to its result.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from lba_core import ConfigError, FixedFormat, FloatFormat, FormatError, MacConfig, dot, fmaq, parse_format, quantize_value
from oracle import FixedSpec, fixed_decode, fixed_spec_of, oracle_fixed_dot, oracle_fixed_fma

SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "text,width,frac,mode,name",
    [
        ("int32", 32, 0, "wrap", "int32"),
        ("INT16_SAT", 16, 0, "saturate", "int16_sat"),
        ("int16_wrap", 16, 0, "wrap", "int16"),
        ("int12_saturate", 12, 0, "saturate", "int12_sat"),
        ("fx40.24", 40, 24, "wrap", "fx40.24"),
        ("fx24.12_sat", 24, 12, "saturate", "fx24.12_sat"),
    ],
)
def test_parse_spellings_round_trip(text, width, frac, mode, name):
    fmt = parse_format(text)
    assert fmt == FixedFormat(width, frac, mode)
    assert fmt.name == name and parse_format(fmt.name) == fmt


@pytest.mark.parametrize("text", ["int1", "int54", "fx40", "fx8.4_clamp", "intx", "fx.3"])
def test_malformed_fixed_formats_are_rejected(text):
    with pytest.raises(FormatError):
        parse_format(text)


def test_config_combinations():
    cfg = MacConfig("int8", "int16_sat")
    assert cfg.fixed_acc and MacConfig.from_dict(cfg.to_dict()) == cfg
    assert MacConfig("e4m3", "fx40.24").fixed_acc
    with pytest.raises(ConfigError, match="MacConfig.input=int8"):
        MacConfig("int8", "fp32")
    with pytest.raises(ConfigError, match="MacConfig.product"):
        MacConfig("e4m3", "int32", product="e4m3")
    with pytest.raises(ConfigError, match="MacConfig.acc"):
        MacConfig("int8", "int99")


@pytest.mark.parametrize("name", ["int8", "int8_sat", "fx12.5", "int2"])
def test_decode_and_encode_every_code(name, comparisons):
    fmt = parse_format(name)
    spec = fixed_spec_of(fmt)
    mismatches = 0
    for code in range(fmt.code_count):
        value = fixed_decode(spec, code)
        mismatches += (fmt.decode(code) != value) + (fmt.encode(value) != code)
    assert fmt.values() == sorted(fixed_decode(spec, code) for code in range(fmt.code_count))
    comparisons(f"decode/encode every code of {name}", 2 * fmt.code_count, mismatches)
    assert mismatches == 0


def test_operand_conversion_rounds_to_nearest_even_and_saturates():
    int8 = parse_format("int8")
    assert [quantize_value(x, int8) for x in (2.5, 3.5, -2.5, 127.4, 300, -300, float("-inf"))] == [2, 4, -2, 127, 127, -128, -128]
    fx = parse_format("fx8.2")
    assert quantize_value(0.125, fx) == 0 and quantize_value(0.375, fx) == Fraction(1, 2)
    assert quantize_value(1000, parse_format("fx8.2_sat")) == Fraction(127, 4)


def boundary_accumulators(fmt: FixedFormat, largest_product: Fraction) -> list[Fraction]:
    """Both ends and their neighbours, around zero, and one largest product inside each end."""
    q = fmt.quantum
    reach = (largest_product // q) * q
    picks = {
        fmt.min_value, fmt.min_value + q, -q, Fraction(0), q, fmt.max_value - q, fmt.max_value,
        fmt.max_value - reach + q, fmt.min_value + reach - q,
    }
    return sorted(v for v in picks if fmt.min_value <= v <= fmt.max_value)


def every_pair_against(cfg: MacConfig, comparisons) -> None:
    spec = fixed_spec_of(cfg.acc)
    if isinstance(cfg.a_format, FixedFormat):
        values = [fixed_decode(fixed_spec_of(cfg.a_format), code) for code in range(cfg.a_format.code_count)]
    else:
        values = [cfg.a_format.decode(code) for code in range(cfg.a_format.code_count)]
    pairs_by_product: dict[Fraction, tuple[Fraction, Fraction]] = {}
    pair_count = 0
    for a, b in itertools.product(values, repeat=2):
        pairs_by_product.setdefault(a * b, (a, b))
        pair_count += 1
    largest = max(abs(p) for p in pairs_by_product)
    accs = boundary_accumulators(cfg.acc, largest)
    mismatches = 0
    for (a, b), acc in itertools.product(pairs_by_product.values(), accs):
        step = fmaq(a, b, acc, cfg)
        mismatches += (step.value, step.overflow, step.underflow, step.swamp) != oracle_fixed_fma(a, b, acc, spec, cfg.rounding)
    comparisons(
        f"FMAq every 8-bit operand pair ({pair_count} pairs, {len(pairs_by_product)} products) x {len(accs)} "
        f"boundary accumulators, {cfg.name}",
        pair_count * len(accs),
        mismatches,
    )
    assert mismatches == 0


@pytest.mark.parametrize(
    "acc,rounding",
    [("int16_sat", "rne"), ("int16", "rne"), ("int32", "rne"), pytest.param("int12_sat", "rtz", marks=SLOW)],
)
def test_int8_products_exhaustive(acc, rounding, comparisons):
    every_pair_against(MacConfig("int8", acc, rounding=rounding), comparisons)


@pytest.mark.parametrize(
    "acc,rounding",
    [
        ("fx40.24", "rne"),  # F >= 18: every e4m3 product lies on the grid (exact, Kulisch-style)
        ("fx24.12_sat", "rne"),  # F < 18: products are rounded onto the grid, some to zero (underflow)
        ("fx20.8", "rtz"),
        ("fx36.18_sat", "rtz"),  # the narrowest exact grid, with wrap-free saturation at 2^17
    ],
)
def test_e4m3_products_exhaustive(acc, rounding, comparisons):
    every_pair_against(MacConfig("e4m3", acc, rounding=rounding), comparisons)


def test_e4m3_subnormal_products_exhaustive(comparisons):
    every_pair_against(MacConfig("e4m3_sub", "fx16.6_sat"), comparisons)


@pytest.mark.parametrize(
    "cfg",
    [
        MacConfig("int8", "int16_sat"),
        MacConfig("int8", "int16"),
        MacConfig("int8", "int12_sat", chunk_size=4),
        MacConfig("int8", "int14", chunk_size=3),
        MacConfig("int4", "int8_sat", weight="int8"),
        MacConfig("e4m3", "fx24.10_sat", chunk_size=5, rounding="rtz"),
        MacConfig("e5m2", "fx20.6"),
    ],
    ids=lambda cfg: cfg.name,
)
def test_dot_products_against_the_oracle(cfg, comparisons):
    """Random dot products that overflow often (large same-signed runs), with and without chunks."""
    rng = random.Random(f"fixed-dot-{cfg.name}")
    a_values, b_values = cfg.a_format.values(), cfg.b_format.values()
    a_positive, b_positive = [v for v in a_values if v >= 0], [v for v in b_values if v >= 0]
    spec = fixed_spec_of(cfg.acc)
    mismatches = trials = 0
    for trial in range(150):
        length = rng.choice([0, 1, 2, 7, 16, 33])
        sign = rng.choice([1, -1, 0])
        if sign:
            a = [rng.choice(a_positive) for _ in range(length)]
            b = [sign * rng.choice(b_positive) for _ in range(length)]
        else:
            a = [rng.choice(a_values) for _ in range(length)]
            b = [rng.choice(b_values) for _ in range(length)]
        got = dot(a, b, cfg)
        mismatches += (got.value, got.overflow, got.underflow, got.swamp) != oracle_fixed_dot(
            a, b, spec, cfg.rounding, cfg.chunk_size
        )
        trials += 1
    comparisons(f"dot products {cfg.name}", trials, mismatches)
    assert mismatches == 0


def test_saturation_is_order_dependent_and_wrap_is_not():
    """Saturation is a sequential chain: the same products in another order give another sum."""
    a, b = [127, 127, -127], [127, 127, 127]
    sat, wrap = MacConfig("int8", "int15_sat"), MacConfig("int8", "int15")
    assert dot(a, b, sat).value == 16383 - 16129 and dot(a[::-1], b[::-1], sat).value == 16129
    assert dot(a, b, wrap).value == dot(a[::-1], b[::-1], wrap).value == 16129
    assert dot(a, b, sat).overflow == 1 and dot(a, b, wrap).overflow == 2 and dot(a[::-1], b[::-1], wrap).overflow == 0
