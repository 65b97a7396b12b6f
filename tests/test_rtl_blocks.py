"""Each FMAq block alone in Amaranth's simulator against its slice of the reference (docs/rtl.md, "Block
diagram"; docs/arithmetic.md §2), exhaustive over the block's inputs where they are small.

A decoded operand (sign, zero, sig, exp) stands for (-1)^sign * sig * 2^(exp - len(sig) + 1): ``exp`` is the
binade of the significand's top bit. The slices:

- multiplier: the exact product a*b of every code pair, normalized;
- product_rounder: R_prod (round once, saturate, flush, events) of every exact product, re-normalized;
- aligner: the larger-binade operand at the top of the window, the other truncated to it with a sticky bit
  that says whether anything was dropped, for every accumulator code against every rounded product;
- adder: the exact sum/difference on carry | window | sticky, for every input of a small window;
- normalizer: the same value, normalized, for every magnitude;
- rounder: step 1 of R_acc (the rounding, the subnormal binade clamp) of every normalized sum;
- range_flags: steps 2-4 (saturate, flush, +0 encoding) and the overflow/underflow/swamp events.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from lba_core import FloatFormat, MacConfig, round_to_format
from rtl import plan_datapath
from rtl.blocks import Adder, Aligner, Multiplier, Normalizer, ProductRounder, RangeFlags, Rounder
from support.simulators import simulate_combinational

OPERAND = ("sign", "zero", "sig", "exp")
SMALL = MacConfig(input="e3m2_sub", weight="e2m1", acc="e3m3", product="e3m1_sub")
CONFIGS = [
    SMALL,
    MacConfig(input="e2m1", acc="e3m2_sub", product="e2m2", rounding="rtz"),
    MacConfig(input="e3m1_sub", weight="e2m2_sub", acc="e3m2", product="e2m1_sub", rounding="rtz"),
]


def operand_value(sign: int, zero: int, sig: int, exp: int, sig_bits: int) -> Fraction:
    if zero:
        return Fraction(0)
    value = sig * Fraction(2) ** (exp - sig_bits + 1)
    return -value if sign else value


def normalized(value: Fraction, sig_bits: int) -> dict[str, int]:
    """The decoded-operand inputs of a block for an exact value that fits sig_bits significand bits."""
    if value == 0:
        return {"sign": 0, "zero": 1, "sig": 0, "exp": 0}
    exp = floor_log2(abs(value))
    sig = abs(value) / Fraction(2) ** (exp - sig_bits + 1)
    assert sig.denominator == 1 and sig.numerator >> (sig_bits - 1) == 1, (value, sig_bits)
    return {"sign": int(value < 0), "zero": 0, "sig": sig.numerator, "exp": exp}


def floor_log2(value: Fraction) -> int:
    exponent = value.numerator.bit_length() - value.denominator.bit_length()
    return exponent - 1 if Fraction(2) ** exponent > value else exponent


def check(comparisons, label: str, expected: list, got: list, rows: list) -> None:
    wrong = [(row, e, g) for row, e, g in zip(rows, expected, got) if e != g]
    comparisons(label, len(rows), len(wrong))
    assert not wrong, f"{len(wrong)} mismatches, first (inputs, expected, got): {wrong[:3]}"


def product_values(cfg: MacConfig) -> list[Fraction]:
    """Every distinct exact product of the configuration's operands."""
    a_values = {cfg.a_format.decode(code) for code in range(cfg.a_format.code_count)}
    b_values = {cfg.b_format.decode(code) for code in range(cfg.b_format.code_count)}
    return sorted({x * y for x in a_values for y in b_values})


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
def test_multiplier_every_code_pair(cfg, comparisons):
    plan = plan_datapath(cfg)
    bits = plan.multiplier_sig_bits
    pairs = list(itertools.product(range(cfg.a_format.code_count), range(cfg.b_format.code_count)))
    got = simulate_combinational(Multiplier(plan), [{"a": a, "b": b} for a, b in pairs], OPERAND)
    expected, observed = [], []
    for (a, b), (sign, zero, sig, exp) in zip(pairs, got):
        exact = cfg.a_format.decode(a) * cfg.b_format.decode(b)
        expected.append((exact, True))
        # sign and normalization are part of the contract: the sign is a's xor b's even for a zero product
        sign_ok = sign == (a >> (cfg.a_format.width - 1)) ^ (b >> (cfg.b_format.width - 1))
        observed.append((operand_value(sign, zero, sig, exp, bits), sign_ok and (zero or sig >> (bits - 1) == 1)))
    check(comparisons, f"multiplier {cfg.name} (every code pair)", expected, observed, pairs)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
def test_product_rounder_every_exact_product(cfg, comparisons):
    plan = plan_datapath(cfg)
    fmt = cfg.product
    products = [value for magnitude in product_values(cfg) for value in {magnitude, -magnitude}]
    rows = [{f"exact.{name}": value for name, value in normalized(p, plan.multiplier_sig_bits).items()} for p in products]
    got = simulate_combinational(ProductRounder(plan), rows, (*OPERAND, "overflow", "underflow"))
    expected, observed = [], []
    for product, (sign, zero, sig, exp, overflow, underflow) in zip(products, got):
        rounded = round_to_format(product, fmt, cfg.rounding)
        expected.append((rounded.value, rounded.overflow, rounded.underflow, True))
        observed.append((operand_value(sign, zero, sig, exp, plan.product_sig_bits), bool(overflow), bool(underflow),
                         bool(zero) or sig >> (plan.product_sig_bits - 1) == 1))
    check(comparisons, f"product_rounder {cfg.name} (every exact product, both signs)", expected, observed, products)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
def test_aligner_every_accumulator_against_every_product(cfg, comparisons):
    plan = plan_datapath(cfg)
    window, acc = plan.window_bits, cfg.acc
    addends = sorted({round_to_format(p, cfg.product, cfg.rounding).value for p in product_values(cfg)})
    addends = [value for magnitude in addends for value in {magnitude, -magnitude}]
    cases = list(itertools.product(range(acc.code_count), addends))
    rows = [
        {"acc": code, **{f"addend.{name}": value for name, value in normalized(addend, plan.product_sig_bits).items()}}
        for code, addend in cases
    ]
    outputs = ("acc_zero", "x_sig", "y_sig", "sticky", "x_exp", "x_sign", "subtract")
    got = simulate_combinational(Aligner(acc, plan.product_sig_bits, window, plan.exp_bits), rows, outputs)
    expected, observed = [], []
    for (code, addend), (acc_zero, x_sig, y_sig, sticky, x_exp, x_sign, subtract) in zip(cases, got):
        acc_value = acc.decode(code)
        # X: the operand of the larger binade (a zero operand counts as the smallest), the other is Y.
        acc_larger = addend == 0 or (acc_value != 0 and floor_log2(abs(acc_value)) >= floor_log2(abs(addend)))
        x, y = (acc_value, addend) if acc_larger else (addend, acc_value)
        unit = Fraction(2) ** (x_exp - window + 1)  # weight of the window's last bit
        kept = abs(y) // unit if x != 0 else 0
        acc_sign = code >> (acc.width - 1)
        addend_sign = int(addend < 0)
        expected.append((acc_value == 0, abs(x), kept, abs(y) != kept * unit, acc_sign ^ addend_sign))
        observed.append((bool(acc_zero), x_sig * unit, y_sig, bool(sticky), subtract))
        if x != 0:  # the sign of a zero X is the code's sign bit, which nothing downstream reads
            expected[-1] += (int(x < 0), floor_log2(abs(x)))
            observed[-1] += (x_sign, x_exp)
    check(comparisons, f"aligner {cfg.name} (every acc code x every rounded product)", expected, observed, cases)


@pytest.mark.parametrize("window", [3, 5])
def test_adder_every_input(window, comparisons):
    cases = list(itertools.product(range(1 << window), range(1 << window), (0, 1), (0, 1), (0, 1)))
    rows = [dict(zip(("x_sig", "y_sig", "sticky", "x_sign", "subtract"), case)) for case in cases]
    got = simulate_combinational(Adder(window), rows, ("magnitude", "sign"))
    expected = []
    for x_sig, y_sig, sticky, x_sign, subtract in cases:
        # carry | window | sticky: x has no sticky bit, y's sticky stands for a non-zero tail below the window
        x, y = 2 * x_sig, 2 * y_sig + sticky
        total = x - y if subtract else x + y
        expected.append((abs(total), x_sign ^ int(total < 0)))
    check(comparisons, f"adder (window {window}, every input)", expected, got, cases)


@pytest.mark.parametrize("window", [3, 6])
def test_normalizer_every_magnitude(window, comparisons):
    plan_exp_bits = 8
    cases = list(itertools.product(range(1 << (window + 2)), (-7, 0, 5)))
    rows = [{"magnitude": magnitude, "x_exp": x_exp} for magnitude, x_exp in cases]
    got = simulate_combinational(Normalizer(window, plan_exp_bits), rows, ("sig", "exp", "nonzero"))
    expected, observed = [], []
    for (magnitude, x_exp), (sig, exp, nonzero) in zip(cases, got):
        # the sum's top (carry) bit sits one binade above X's top bit
        value = magnitude * Fraction(2) ** (x_exp + 1 - (window + 1))
        expected.append((value, magnitude != 0, True))
        normalized_ok = magnitude == 0 or sig >> (window + 1) == 1
        observed.append((operand_value(0, 0, sig, exp, window + 2), bool(nonzero), normalized_ok))
    check(comparisons, f"normalizer (window {window}, every magnitude)", expected, observed, cases)


def unbounded(fmt: FloatFormat) -> FloatFormat:
    """fmt with the same mantissa, emin and subnormals but so many exponent codes that nothing saturates:
    rounding it is step 1 of R_fmt alone."""
    return FloatFormat(fmt.exp_bits + 3, fmt.man_bits, bias=fmt.bias, subnormals=fmt.subnormals)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
def test_rounder_every_normalized_sum(cfg, comparisons):
    plan = plan_datapath(cfg)
    acc, width = cfg.acc, plan.sum_bits
    sigs = range(1 << (width - 1), 1 << width)
    exps = range(acc.emin - acc.man_bits - 3, acc.emax + 2)
    cases = list(itertools.product(sigs, exps))
    got = simulate_combinational(
        Rounder(plan.window_bits, acc, cfg.rounding, plan.exp_bits),
        [{"in_sig": sig, "in_exp": exp} for sig, exp in cases],
        ("sig", "exp"),
    )
    wide = unbounded(acc)
    expected, observed = [], []
    for (sig, exp), (out_sig, out_exp) in zip(cases, got):
        exact = operand_value(0, 0, sig, exp, width)
        # no flush in step 1: without subnormals the unbounded format keeps every binade (underflow=False)
        expected.append(round_to_format(exact, wide, cfg.rounding, underflow=acc.subnormals).value)
        observed.append(operand_value(0, 0, out_sig, out_exp, acc.man_bits + 1))
    check(comparisons, f"rounder {cfg.name} (every normalized sum over the binades)", expected, observed, cases)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
def test_range_flags_every_rounded_value(cfg, comparisons):
    plan = plan_datapath(cfg)
    acc = cfg.acc
    rng = random.Random(7)
    top = 1 << acc.man_bits
    sigs = [0, *range(1 if acc.subnormals else top, 2 * top)]
    cases = []
    for sig, exp, sign, exact_nonzero, addend_nonzero in itertools.product(
        sigs, range(acc.emin - 2, acc.emax + 3), (0, 1), (0, 1), (0, 1)
    ):
        if sig and ((sig < top and exp != acc.emin) or (acc.subnormals and exp < acc.emin)):
            continue  # the rounder's outputs: a subnormal significand only in the emin binade, none below it
        # the accumulator either equals the expected result (swamp) or is any code
        cases.append((sig, exp, sign, exact_nonzero, addend_nonzero, rng.randrange(acc.code_count)))
        cases.append((sig, exp, sign, exact_nonzero, addend_nonzero, None))
    expected, rows = [], []
    for index, (sig, exp, sign, exact_nonzero, addend_nonzero, acc_code) in enumerate(cases):
        value = operand_value(sign, 0, sig, exp, acc.man_bits + 1)
        rounded = round_to_format(value, acc, cfg.rounding)  # exact in acc's precision: steps 2-4 only
        result_code = acc.encode(rounded.value)
        if acc_code is None:
            acc_code = result_code if rng.random() < 0.5 else result_code | (1 << (acc.width - 1))  # also -x / -0
            cases[index] = (*cases[index][:5], acc_code)
        acc_value = acc.decode(acc_code)
        rows.append({"sig": sig, "exp": exp, "sign": sign, "exact_nonzero": exact_nonzero,
                     "addend_nonzero": addend_nonzero, "acc": acc_code, "acc_zero": int(acc_value == 0)})
        expected.append((result_code, int(rounded.overflow), int(exact_nonzero and rounded.value == 0),
                         int(addend_nonzero and rounded.value == acc_value)))
    got = simulate_combinational(RangeFlags(acc, plan.exp_bits), rows, ("acc_out", "overflow", "underflow", "swamp"))
    check(comparisons, f"range_flags {cfg.name} (every rounded value x flags)", expected, got, cases)
