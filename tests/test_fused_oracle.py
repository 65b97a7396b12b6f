"""The fused reference (lba_core.fused_reference) against an independent oracle of docs/arithmetic.md §9.

The oracle shares nothing with lba_core's arithmetic: operands are drawn as codes and decoded from their bit
fields into integer significands (tests/oracle.py's ``decode``), each term is aligned by an integer shift that
drops bits toward zero, the sum is an integer count of 2^(e_max - F), and the one rounding is MPFR's (gmpy2).
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import gmpy2
import pytest

from lba_core import FUSED_PRESETS, ConfigError, FusedAccumulator, MacConfig, fdpa, fused_dot, fused_matmul_reference
from lba_core.fused_reference import promote

from oracle import Spec, oracle_round, spec_of

_HUGE = 1 << 20


def oracle_decode(spec: Spec, code: int) -> tuple[int, int, int]:
    """(signed integer significand m, exponent e, fraction bits M): the value is m * 2^(e - M), e = max(code, 1) - bias."""
    sign = -1 if (code >> (spec.e + spec.m)) & 1 else 1
    biased = (code >> spec.m) & ((1 << spec.e) - 1)
    fraction = code & ((1 << spec.m) - 1)
    if biased == 0 and not spec.sub:
        fraction = 0
    hidden = (1 << spec.m) if biased else 0
    return sign * (hidden | fraction), max(biased, 1) - spec.bias, spec.m


def addend_terms(value: Fraction, out: Spec) -> tuple[int, int, int]:
    """An output-register value as (m, e, M) with e bounded below at the output's smallest normal exponent."""
    if value == 0:
        return 0, 0, 0
    e = 1 - out.bias
    while Fraction(2) ** (e + 1) <= abs(value):
        e += 1
    scaled = value / Fraction(2) ** (e - 60)  # 60 fraction bits hold any output value used here exactly
    assert scaled.denominator == 1
    return scaled.numerator, e, 60


def ieee_round(x: Fraction, out: Spec, rnd: str) -> float:
    """MPFR rounding at precision M + 1 with the IEEE subnormal step; beyond the largest finite value: ±Inf."""
    if x == 0:
        return 0.0
    context = gmpy2.context(precision=out.m + 1, round=gmpy2.RoundToNearest if rnd == "rne" else gmpy2.RoundToZero,
                            emax=_HUGE, emin=(1 - out.bias - out.m) + 1, subnormalize=True)
    with gmpy2.context(context):
        rounded = Fraction(*gmpy2.mpfr(gmpy2.mpq(x.numerator, x.denominator)).as_integer_ratio())
    largest = Fraction(2 ** (out.m + 1) - 1, 2**out.m) * Fraction(2) ** (2**out.e - 2 - out.bias)
    if abs(rounded) > largest:
        return math.copysign(math.inf, x)
    return float(rounded)


def oracle_fdpa(a_codes, b_codes, addend: float, cfg: MacConfig) -> float:
    acc, out = cfg.acc, spec_of(cfg.acc.output)
    if math.isinf(addend):
        return addend
    terms = []  # (m, exponent of the term, fraction bits of m)
    for x, y in zip(a_codes, b_codes):
        ma, ea, fa = oracle_decode(spec_of(cfg.a_format), x)
        mb, eb, fb = oracle_decode(spec_of(cfg.b_format), y)
        terms.append((ma * mb, ea + eb if ma * mb else acc.e_zero, fa + fb))
    m, e, f = addend_terms(Fraction(addend), out)
    terms.append((m, e if m else acc.e_zero, f))
    e_max = max(e for _, e, _ in terms)
    total = 0
    for m, e, f in terms:
        shift = (e - f) - (e_max - acc.fraction_bits)  # m * 2^(e - f) in units of 2^(e_max - F)
        magnitude = abs(m) << shift if shift >= 0 else abs(m) >> -shift  # dropping bits: toward zero
        total += magnitude if m >= 0 else -magnitude
    exact = total * Fraction(2) ** (e_max - acc.fraction_bits)
    if acc.ieee_output:
        return ieee_round(exact, out, acc.output_rounding) + 0.0
    return float(oracle_round(exact, out, acc.output_rounding, True)[0]) + 0.0


FP32 = Spec(8, 23, 127, True)


def oracle_dot(a_codes, b_codes, cfg: MacConfig, scales=None) -> float:
    acc = cfg.acc
    every = acc.promote_every or max(len(a_codes), 1)
    total = 0.0
    for j, start in enumerate(range(0, len(a_codes), every)):
        c = 0.0
        for g in range(start, min(start + every, len(a_codes)), acc.group):
            end = min(g + acc.group, start + every, len(a_codes))
            c = oracle_fdpa(a_codes[g:end], b_codes[g:end], c, cfg)
        if acc.promote_every is None:
            return c
        s = 1.0 if scales is None else scales[j]
        if math.isfinite(total) and math.isfinite(c):
            total = ieee_round(Fraction(total) + Fraction(s) * Fraction(c), FP32, "rne") + 0.0
        else:
            total = total + s * c
    return total


def random_code(rng: random.Random, fmt, band: bool) -> int:
    """Any code (dead codes such as -0 included), or one with an exponent within 2 binades of 1."""
    if not band:
        return rng.randrange(fmt.code_count)
    biased = rng.randint(max(fmt.bias - 1, 1), min(fmt.bias + 1, (1 << fmt.exp_bits) - 1))
    return (rng.randrange(2) << (fmt.width - 1)) | (biased << fmt.man_bits) | rng.randrange(1 << fmt.man_bits)


def values(fmt, codes):
    return [float(fmt.decode(code)) for code in codes]


CONFIGS = [
    ("e4m3", "e4m3", "hopper-fp8"),  # the toolkit's e4m3: no subnormals, 480 in its top binade
    ("e4m3_sub", "e5m2_sub", "hopper-fp8"),
    ("e5m2", "e5m2_sub", "hopper-fp8-f16"),
    ("e5m10_sub", "e5m10_sub", "hopper-fp16"),
    ("e8m7_sub", "e8m7_sub", "hopper-bf16"),
    ("e4m3_sub", "e4m3_sub", "blackwell-fp8+promote64"),
    ("e5m2_sub", "e4m3_sub", "hopper-fp8-f16+promote32"),
    ("e3m2_sub", "e2m1_sub", "fdpa4f3-e5m7_sub-rne"),  # general fields: tiny F, odd output
    ("e4m3_sub", "e4m3_sub", "fdpa8f40-e8m23_sub-rtz-z-5+promote16"),  # F wider than the output, e_zero moved
    ("e4m3", "e5m2", "fdpa8f6-e4m7-rne-sat"),  # the contract's saturating output, no subnormals
]


@pytest.mark.parametrize("a_fmt,b_fmt,acc", CONFIGS)
def test_reference_matches_oracle_random(a_fmt, b_fmt, acc):
    cfg = MacConfig(input=a_fmt, weight=b_fmt, acc=acc)
    rng = random.Random(f"{a_fmt}{b_fmt}{acc}")
    for trial in range(40):
        k = rng.randint(0, 3 * cfg.acc.group + 3)
        band = trial % 4 == 0  # a narrow exponent band: cancellation and exact ties are common
        a = [random_code(rng, cfg.a_format, band) for _ in range(k)]
        b = [random_code(rng, cfg.b_format, False) for _ in range(k)]
        if trial % 5 == 1 and k:  # whole zero groups
            a[: cfg.acc.group] = [0] * min(k, cfg.acc.group)
        want = oracle_dot(a, b, cfg)
        got = fused_dot(values(cfg.a_format, a), values(cfg.b_format, b), cfg)
        assert math.isnan(want) and math.isnan(got) or got == want and math.copysign(1, got) == math.copysign(1, want), (a, b, want, got)


def test_fdpa_directed():
    cfg = MacConfig(input="e4m3_sub", acc="hopper-fp8")
    # A term far below the maximum is truncated to zero; truncation is toward zero for negative terms too.
    assert fdpa([256.0, 2.0**-9], [256.0, 1.0], 0.0, cfg) == 65536.0
    assert fdpa([256.0, -(2.0**-9)], [256.0, 1.0], 0.0, cfg) == 65536.0
    x = 1.5 * 2.0**-7  # an e4m3 subnormal; 2^-6 * x = 1.5 * 2^-13
    assert fdpa([1.0, -(2.0**-6)], [1.0, x], 0.0, cfg) == 1 - 2.0**-13  # -1.5 units of 2^-13 truncate to -1
    # Products are not renormalized: 1.875 * 1.875 = 3.515625 sets e_max = 0 (not 1), so the truncation unit is
    # 2^-13 and two terms of 1.5 * 2^-13 keep 2^-12 between them (renormalized: unit 2^-12, both lost).
    assert fdpa([1.875, 2.0**-6, 2.0**-6], [1.875, x, x], 0.0, cfg) == 3.515625 + 2.0**-12
    # Exact cancellation gives +0, never -0.
    result = fdpa([3.0, -3.0], [5.0, 5.0], 0.0, cfg)
    assert result == 0.0 and math.copysign(1, result) == 1.0
    # An infinite addend passes through; the output rounds toward zero to 13 bits.
    assert fdpa([1.0], [1.0], -math.inf, cfg) == -math.inf
    assert fdpa([], [], 1 + 2.0**-20, cfg) == 1.0
    fp16 = MacConfig(input="e5m2_sub", acc="hopper-fp8-f16")
    assert fdpa([57344.0], [57344.0], 0.0, fp16) == math.inf  # out of fp16 range: IEEE Inf, not a saturation
    assert fdpa([1024.0, 0.5], [1.0, 1.0], 0.0, fp16) == 1024.0  # a tie rounds to even
    assert fdpa([1024.0, 1.5], [1.0, 1.0], 0.0, fp16) == 1026.0
    # A zero addend sits at e_zero (-21 with an fp16 output) and sets e_max above a product at 2^-22: with F = 0
    # the product (0.75 units of 2^-21) truncates to 0; with e_zero = -30 it keeps its 2^-22.
    f0 = MacConfig(input="e5m2_sub", acc="fdpa4f0-e5m10_sub-rne")
    assert f0.acc.e_zero == -21 and fdpa([1.5 * 2.0**-11], [2.0**-11], 0.0, f0) == 0.0
    low = MacConfig(input="e5m2_sub", acc="fdpa4f0-e5m10_sub-rne-z-30")
    assert fdpa([1.5 * 2.0**-11], [2.0**-11], 0.0, low) == 2.0**-22
    assert FUSED_PRESETS["hopper-fp8-f16"].e_zero == -21 and FUSED_PRESETS["hopper-fp8"].e_zero == -133


def test_short_last_group_and_promotion():
    cfg = MacConfig(input="e4m3_sub", acc="hopper-fp8")
    a = [1.0] * 33 + [2.0**-9]
    # 33 ones then a tiny term: the second group [1, tiny] with addend 32 truncates the tiny term away.
    assert fused_dot(a, [1.0] * 34, cfg) == 34.0 - 1
    promoted = MacConfig(input="e4m3_sub", acc="hopper-fp8+promote32")
    ones, small = [1.0] * 32, [2.0**-9] * 32  # block 2 alone keeps its bits; then added into fp32 with RNE
    assert fused_dot(ones + small, [1.0] * 64, promoted) == 32 + 2.0**-4
    assert fused_dot(ones + small, [1.0] * 64, cfg) == 32.0  # unpromoted: aligned to the addend 32, truncated


def test_scale_is_one_fused_multiply_add():
    """total <- RNE_fp32(total + s * r) in one rounding: a case where rounding s * r first would differ."""
    s, r, total = 1 + 2.0**-23, 1 - 2.0**-24, 2.0**24
    assert promote(total, r, s) == 2.0**24 + 2  # exact 2^24 + 1 + 2^-24 - 2^-47 is above the tie
    rounded_first = float(gmpy2.mpfr(s * r, 24))  # two roundings: s * r -> 1, then 2^24 + 1 is a tie -> 2^24
    assert rounded_first == 1.0 and float(gmpy2.mpfr(total + rounded_first, 24)) == 2.0**24
    cfg = MacConfig(input="e4m3_sub", acc="hopper-fp8+promote32")
    rng = random.Random(5)
    for _ in range(10):
        a = [random_code(rng, cfg.a_format, False) for _ in range(70)]
        b = [random_code(rng, cfg.b_format, False) for _ in range(70)]
        scales = [float(gmpy2.mpfr(rng.uniform(0.01, 100), 24)) for _ in range(3)]
        want = oracle_dot(a, b, cfg, scales)
        assert fused_dot(values(cfg.a_format, a), values(cfg.b_format, b), cfg, scales=scales) == want


def test_promotion_specials_and_bad_input():
    assert math.isnan(promote(math.inf, -math.inf))
    assert promote(2.0**127 * 1.5, 2.0**127 * 1.5) == math.inf  # fp32 overflow in the promotion register
    cfg = MacConfig(input="e4m3", acc="hopper-fp8")
    with pytest.raises(ValueError, match="not a value of e4m3"):
        fdpa([0.1], [1.0], 0.0, cfg)
    with pytest.raises(ConfigError, match="need promotion"):
        fused_dot([1.0], [1.0], cfg, scales=[1.0])
    with pytest.raises(ValueError, match="1..32 products"):
        fdpa([1.0] * 33, [1.0] * 33, 0.0, cfg)
    assert isinstance(cfg.acc, FusedAccumulator)


def test_matmul_per_operand_scales():
    """fused_matmul_reference forms each block's scale as RNE_fp32(s_a * s_b), then one FMA per block."""
    import numpy as np

    from lba_core import fused_matmul_reference

    cfg = MacConfig(input="e4m3_sub", acc="hopper-fp8+promote32")
    rng = random.Random(11)
    A = np.array([[float(cfg.a_format.decode(random_code(rng, cfg.a_format, True))) for _ in range(40)] for _ in range(2)])
    B = np.array([[float(cfg.b_format.decode(random_code(rng, cfg.b_format, True))) for _ in range(3)] for _ in range(40)])
    sa = np.array([[1.1, 3.0], [0.7, 1 / 3]])
    sb = np.array([[0.9, 1.3, 2.0], [5.0, 0.1, 1.0]])
    Y = fused_matmul_reference(A, B, cfg, scales_a=sa, scales_b=sb)
    for i in range(2):
        for k in range(3):
            scales = [float(gmpy2.mpfr(gmpy2.mpq(Fraction(sa[i, j]) * Fraction(sb[j, k])), 24)) for j in range(2)]
            assert Y[i, k] == fused_dot(A[i].tolist(), B[:, k].tolist(), cfg, scales=scales)
    with pytest.raises(ValueError, match="both scales_a and scales_b"):
        fused_matmul_reference(A, B, cfg, scales_a=sa)


@pytest.mark.parametrize("a_fmt,b_fmt,acc", CONFIGS)
def test_matmul_reference_matches_oracle(a_fmt, b_fmt, acc):
    """fused_matmul_reference (all outputs at once in binary64, lba_core.fused_reference_arrays, where binary64 is
    exact) gives the oracle's value on every output, the addend C included."""
    import numpy as np

    from lba_core.fused_reference_arrays import exact_in_binary64

    cfg = MacConfig(input=a_fmt, weight=b_fmt, acc=acc)
    assert exact_in_binary64(cfg, cfg.acc)  # every configuration here takes the array path
    rng = random.Random(f"matmul{a_fmt}{b_fmt}{acc}")
    for trial in range(4):
        k, rows, cols = rng.randint(1, 3 * cfg.acc.group + 3), 3, 4
        band = trial % 2 == 0
        a = [[random_code(rng, cfg.a_format, band) for _ in range(k)] for _ in range(rows)]
        b = [[random_code(rng, cfg.b_format, False) for _ in range(cols)] for _ in range(k)]
        if trial == 3:
            a[0][: cfg.acc.group] = [0] * min(k, cfg.acc.group)  # a whole zero group
        A = np.array([values(cfg.a_format, row) for row in a])
        B = np.array([values(cfg.b_format, row) for row in b])
        Y = fused_matmul_reference(A, B, cfg)
        for i in range(rows):
            for j in range(cols):
                want = oracle_dot(a[i], [row[j] for row in b], cfg)
                assert math.isnan(want) and math.isnan(Y[i, j]) or Y[i, j] == want and math.copysign(1, Y[i, j]) == math.copysign(1, want), (trial, i, j)


def test_matmul_reference_addend_promotion_fallback_and_specials():
    """The array path against fused_dot on what the random codes rarely reach: a non-zero addend C (chain start,
    and the fp32 total's start with promotion), -0 in C, Inf in C, and promoted sums binary64 cannot hold
    (total 2^36 and a block of 2^-32: the Fraction promote does those entries)."""
    import numpy as np

    e5m2 = MacConfig(input="e5m2_sub", acc="hopper-fp8+promote32")
    A = np.array([[57344.0] * 32 + [2.0**-16] * 32, [-57344.0] * 32 + [2.0**-16] * 32, [1.0] * 64])
    B = np.array([[57344.0], [2.0**-16]])[[0] * 32 + [1] * 32].reshape(64, 1)
    C = np.array([[0.0], [-0.0], [2.0**-40]])
    Y = fused_matmul_reference(A, B, e5m2, C)
    for i in range(3):
        want = fused_dot(A[i].tolist(), B[:, 0].tolist(), e5m2, float(C[i, 0]))
        assert Y[i, 0] == want and math.copysign(1, Y[i, 0]) == math.copysign(1, want)
    assert Y[0, 0] == 32 * 57344.0**2  # RNE of 1.53125 * 2^36 + 2^-27: the tiny block rounds away
    from lba_core.fused_reference_arrays import promote as promote_all

    assert not promote_all(np.array([32 * 57344.0**2]), np.array([2.0**-27]), np.ones(1))[1][0]  # left to Fractions
    plain = MacConfig(input="e4m3_sub", acc="hopper-fp8")
    A = np.array([[1.5, -2.0, 0.0], [448.0, 448.0, 0.0]])
    B = np.array([[1.0, 0.5], [0.25, 2.0], [1.0, 0.0]])
    C = np.array([[-0.0, 1.0 + 2.0**-13], [math.inf, math.nan]])
    Y = fused_matmul_reference(A, B, plain, C)
    for i in range(2):
        for j in range(2):
            want = fused_dot(A[i].tolist(), B[:, j].tolist(), plain, float(C[i, j]))
            assert math.isnan(want) and math.isnan(Y[i, j]) or Y[i, j] == want and math.copysign(1, Y[i, j]) == math.copysign(1, want)
    with pytest.raises(ValueError, match="not a value of e4m3_sub"):
        fused_matmul_reference(np.array([[0.1]]), np.array([[1.0]]), plain)


@pytest.mark.parametrize("fmt", ["e4m3", "e4m3_sub", "e5m2_sub", "e3m2_sub", "e5m10_sub", "e8m7_sub", "e4m7"])
def test_array_operand_check_agrees_with_the_format(fmt):
    """fused_reference_arrays.check_operands accepts exactly the values FloatFormat.is_representable does: every
    code's value, and nothing between two of them, beyond the largest or (without subnormals) below 2^emin."""
    import numpy as np

    from lba_core import FloatFormat
    from lba_core.fused_reference_arrays import check_operands

    f = FloatFormat.parse(fmt)
    chosen = range(f.code_count) if f.code_count <= 4096 else random.Random(fmt).sample(range(f.code_count), 1500)
    codes = [float(f.decode(code)) for code in chosen] + [float(f.max_value), float(f.decode(1)), float(f.decode(1 << f.man_bits))]
    check_operands(np.array(codes), f, "x")
    positive = sorted({abs(v) for v in codes} | {0.0})
    candidates = [(x + y) / 2 for x, y in zip(positive, positive[1:])] + [positive[-1] * 1.25, positive[1] / 2,
                                                                          math.inf, math.nan]
    for value in candidates:
        representable = math.isfinite(value) and f.is_representable(Fraction(value))
        try:
            check_operands(np.array([value, -value]), f, "x")
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == representable, value
