"""Each block of the FDPA unit (rtl/fdpa_blocks.py) alone in Amaranth's simulator, against its slice of the fused
contract (docs/arithmetic.md §9), exhaustive where the inputs are small: a 3-term unit with e2m1_sub x e3m1
operands, F = 4 and an IEEE e3m2_sub output."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import pytest

from lba_core import FloatFormat
from rtl.fdpa_blocks import (
    AddendTerm,
    CompressorTree,
    ExponentMax,
    FdpaOutput,
    ProductTerm,
    SumNormalizer,
    TermAligner,
)
from rtl.fdpa_plan import plan_fdpa
from support.simulators import simulate_combinational

PLAN = plan_fdpa(
    group=3, fraction_bits=4, a_format="e2m1_sub", b_format="e3m1", output="e3m2_sub", rounding="rne", ieee=True, e_zero=-9
)


def signed(value: int, bits: int) -> int:
    """A signed port's value (Amaranth already returns signed ints; raw bit patterns are converted)."""
    return value - (1 << bits) if value >= 0 and value >> (bits - 1) else value


def binade(fmt: FloatFormat, code: int) -> int:
    """The contract's e of a non-zero operand: floor(log2 |x|), and emin for a subnormal."""
    return max(fmt.emin, math.floor(math.log2(abs(fmt.decode(code)))))


def test_product_term_every_code_pair(comparisons):
    pairs = list(itertools.product(range(1 << PLAN.a_format.width), range(1 << PLAN.b_format.width)))
    got = simulate_combinational(ProductTerm(PLAN), [{"a": a, "b": b} for a, b in pairs], ["sign", "sig", "exp"])
    wrong = 0
    for (a, b), (sign, sig, exp) in zip(pairs, got):
        exp = signed(exp, PLAN.exp_bits)
        product = PLAN.a_format.decode(a) * PLAN.b_format.decode(b)
        value = Fraction(sig) * Fraction(2) ** (exp - PLAN.product_frac_bits) * (-1) ** sign
        expected_exp = PLAN.e_zero if product == 0 else binade(PLAN.a_format, a) + binade(PLAN.b_format, b)
        wrong += value != product or exp != expected_exp or (product != 0 and sign != (product < 0))
    comparisons("fdpa product_term, every code pair", len(pairs), wrong)
    assert wrong == 0


def test_addend_term_every_code(comparisons):
    out = PLAN.output
    codes = list(range(1 << out.width))
    got = simulate_combinational(AddendTerm(PLAN), [{"c": c} for c in codes], ["sign", "sig", "exp", "nan", "inf"])
    wrong = 0
    for code, (sign, sig, exp, nan, inf) in zip(codes, got):
        special = (code >> out.man_bits) & 7 == 7
        wrong += nan != (special and code & 3 != 0) or inf != (special and code & 3 == 0)
        if special:
            continue
        value = out.decode(code)
        exp = signed(exp, PLAN.exp_bits)
        wrong += Fraction(sig) * Fraction(2) ** (exp - out.man_bits) * (-1) ** sign != value
        wrong += exp != (PLAN.e_zero if value == 0 else binade(out, code))
    comparisons("fdpa addend_term, every code", len(codes), wrong)
    assert wrong == 0


def test_exponent_max(comparisons):
    rng = random.Random(1)
    count, bits = 5, PLAN.exp_bits
    rows = [[rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)) for _ in range(count)] for _ in range(500)]
    got = simulate_combinational(ExponentMax(count, bits), [{f"exp_{i}": e for i, e in enumerate(r)} for r in rows], ["e_max"])
    wrong = sum(signed(out, bits) != max(row) for row, (out,) in zip(rows, got))
    comparisons("fdpa exponent_max, 5 inputs", len(rows), wrong)
    assert wrong == 0


@pytest.mark.parametrize("frac_bits,sig_bits", [(PLAN.product_frac_bits, PLAN.product_sig_bits), (PLAN.output.man_bits, PLAN.addend_sig_bits), (6, 8)])
def test_term_aligner_truncates_toward_zero(frac_bits, sig_bits, comparisons):
    """Every significand at every distance e_max - e from 0 to past the shift clamp: floor(s * 2^(F - d))."""
    rows = [{"sig": s, "exp": -d, "e_max": 0} for s in range(1 << sig_bits) for d in range(PLAN.shift_limit(frac_bits) + 3)]
    got = simulate_combinational(TermAligner(PLAN, sig_bits, frac_bits), rows, ["term"])
    wrong = sum(
        term != math.floor(Fraction(row["sig"], 1 << frac_bits) * Fraction(2) ** (PLAN.fraction_bits + row["exp"]))
        for row, (term,) in zip(rows, got)
    )
    comparisons(f"fdpa term_aligner, {frac_bits} fraction bits", len(rows), wrong)
    assert wrong == 0


def test_compressor_tree_exact_sum(comparisons):
    rng = random.Random(2)
    for count in (1, 2, 3, 4, 7):
        term_bits = 5
        sum_bits = term_bits + count.bit_length() + 1
        rows = []
        for _ in range(300):
            row = {}
            for i in range(count):
                row[f"sign_{i}"] = rng.randrange(2)
                row[f"term_{i}"] = rng.choice([0, (1 << term_bits) - 1, rng.randrange(1 << term_bits)])
            rows.append(row)
        got = simulate_combinational(CompressorTree(count, term_bits, sum_bits), rows, ["total"])
        wrong = sum(
            signed(total, sum_bits) != sum((-1) ** row[f"sign_{i}"] * row[f"term_{i}"] for i in range(count))
            for row, (total,) in zip(rows, got)
        )
        comparisons(f"fdpa compressor_tree, {count} terms", len(rows), wrong)
        assert wrong == 0


def test_sum_normalizer_every_sum(comparisons):
    bits = PLAN.sum_bits
    rows = [{"total": t & ((1 << bits) - 1), "e_max": e} for t in range(-(1 << (bits - 1)) + 1, 1 << (bits - 1)) for e in (-3, 2)]
    got = simulate_combinational(SumNormalizer(PLAN), rows, ["sign", "sig", "exp", "nonzero"])
    wrong = 0
    width = PLAN.magnitude_bits
    for row, (sign, sig, exp, nonzero) in zip(rows, got):
        total = signed(row["total"], bits)
        value = Fraction(total) * Fraction(2) ** (row["e_max"] - PLAN.fraction_bits)
        exp = signed(exp, PLAN.exp_bits)
        normalized = Fraction(sig) * Fraction(2) ** (exp - width + 1) * (-1) ** sign
        wrong += nonzero != (total != 0) or sign != (total < 0)
        if total:
            wrong += normalized != value or not sig >> (width - 1)
    comparisons("fdpa sum_normalizer, every sum", len(rows), wrong)
    assert wrong == 0


def test_fdpa_output_specials_and_range(comparisons):
    """Every rounded significand x binade x sign, and the NaN/Inf addend overrides (IEEE e3m2_sub, and the
    saturating variant)."""
    for ieee in (True, False):
        plan = plan_fdpa(group=3, fraction_bits=4, a_format="e2m1_sub", b_format="e3m1", output="e3m2_sub", ieee=ieee, e_zero=-9)
        fmt: FloatFormat = plan.output
        rows = [
            {"sig": s, "exp": e, "sign": sign, "nan": nan, "inf": inf, "inf_sign": inf_sign}
            for s in range(1 << (fmt.man_bits + 1))
            for e in range(fmt.emin, fmt.emax + 3)
            for sign in (0, 1)
            for nan, inf, inf_sign in ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 1, 1))
            if ieee or not (nan or inf)
            if s >> fmt.man_bits or e == fmt.emin  # normalized, or a subnormal at emin
        ]
        got = simulate_combinational(FdpaOutput(plan), rows, ["out"])
        ones = (1 << fmt.exp_bits) - 1
        wrong = 0
        for row, (out,) in zip(rows, got):
            value = Fraction(row["sig"]) * Fraction(2) ** (row["exp"] - fmt.man_bits) * (-1) ** row["sign"]
            if row["nan"]:
                expected = (1 << (fmt.width - 1)) - 1
            elif row["inf"]:
                expected = (row["inf_sign"] << (fmt.width - 1)) | (ones << fmt.man_bits)
            elif ieee and value != 0 and row["exp"] > fmt.emax - 1:
                expected = (row["sign"] << (fmt.width - 1)) | (ones << fmt.man_bits)
            elif not ieee and abs(value) > fmt.max_value:
                expected = fmt.encode(fmt.max_value if value > 0 else -fmt.max_value)
            else:
                expected = fmt.encode(value)  # zero -> +0
            wrong += out != expected
        comparisons(f"fdpa fdpa_output ({'ieee' if ieee else 'saturating'})", len(rows), wrong)
        assert wrong == 0
