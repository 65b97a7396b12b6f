"""An independent exact model of docs/arithmetic.md on MPFR (gmpy2).

Nothing here is shared with lba_core: codes are decoded from the bit layout directly, and each rounding is
MPFR's own correctly rounded conversion of an exact rational at precision M + 1, with the exponent range set so
that MPFR emulates the subnormal step. Saturation and flush are applied afterwards, as the contract orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import gmpy2

_HUGE_EXPONENT = 1 << 20


@dataclass(frozen=True)
class Spec:
    """A format as plain numbers: exponent bits, fraction bits, bias, subnormals."""

    e: int
    m: int
    bias: int
    sub: bool

    @property
    def largest(self) -> Fraction:
        return Fraction(2 ** (self.m + 1) - 1, 2**self.m) * Fraction(2) ** (2**self.e - 1 - self.bias)

    @property
    def smallest_normal(self) -> Fraction:
        return Fraction(2) ** (1 - self.bias)


def spec_of(fmt) -> Spec:
    return Spec(fmt.exp_bits, fmt.man_bits, fmt.bias, fmt.subnormals)


def decode(spec: Spec, code: int) -> Fraction:
    sign = -1 if (code >> (spec.e + spec.m)) & 1 else 1
    biased = (code >> spec.m) & (2**spec.e - 1)
    fraction = code & (2**spec.m - 1)
    if biased == 0:
        if not spec.sub:
            return Fraction(0)
        return sign * Fraction(fraction, 2**spec.m) * Fraction(2) ** (1 - spec.bias)
    return sign * (1 + Fraction(fraction, 2**spec.m)) * Fraction(2) ** (biased - spec.bias)


def all_values(spec: Spec) -> list[Fraction]:
    return sorted({decode(spec, code) for code in range(2 ** (1 + spec.e + spec.m))})


def oracle_round(x: Fraction, spec: Spec, rounding: str, underflow: bool) -> tuple[Fraction, bool, bool]:
    """(value, overflow, underflow) of R_F(x)."""
    if x == 0:
        return Fraction(0), False, False
    context = gmpy2.context(
        precision=spec.m + 1,
        round=gmpy2.RoundToNearest if rounding == "rne" else gmpy2.RoundToZero,
        emax=_HUGE_EXPONENT,
        emin=-_HUGE_EXPONENT,
    )
    if underflow and spec.sub:
        # MPFR exponents are one above IEEE's (0.5 <= m < 1); the smallest subnormal is 2^(1 - bias - M).
        context.emin = (1 - spec.bias - spec.m) + 1
        context.subnormalize = True
    with gmpy2.context(context):
        rounded = gmpy2.mpfr(gmpy2.mpq(x.numerator, x.denominator))
    value = Fraction(*rounded.as_integer_ratio())
    overflow = abs(value) > spec.largest
    if overflow:
        value = spec.largest if value > 0 else -spec.largest
    if underflow and not spec.sub and abs(value) < spec.smallest_normal:
        value = Fraction(0)
    return value, overflow, value == 0


@dataclass(frozen=True)
class OracleConfig:
    a: Spec
    b: Spec
    acc: Spec
    product: Spec | None
    rounding: str
    underflow: bool
    chunk: int | None


def oracle_config(cfg) -> OracleConfig:
    return OracleConfig(
        spec_of(cfg.input),
        spec_of(cfg.weight or cfg.input),
        spec_of(cfg.acc),
        None if cfg.product is None else spec_of(cfg.product),
        cfg.rounding,
        cfg.underflow,
        cfg.chunk_size,
    )


def oracle_fma(a: Fraction, b: Fraction, acc: Fraction, cfg: OracleConfig) -> tuple[Fraction, bool, bool, bool]:
    """(value, overflow, underflow, swamp) of one MAC step."""
    p, p_overflow, p_underflow = a * b, False, False
    if cfg.product is not None:
        p, p_overflow, p_underflow = oracle_round(a * b, cfg.product, cfg.rounding, cfg.underflow)
    s, s_overflow, s_underflow = oracle_round(acc + p, cfg.acc, cfg.rounding, cfg.underflow)
    return s, p_overflow or s_overflow, p_underflow or s_underflow, p != 0 and s == acc


def oracle_add(acc: Fraction, c: Fraction, cfg: OracleConfig) -> tuple[Fraction, bool, bool, bool]:
    s, overflow, underflow = oracle_round(acc + c, cfg.acc, cfg.rounding, cfg.underflow)
    return s, overflow, underflow, c != 0 and s == acc


def chunked_dot(a, b, chunk: int | None, fma, add) -> tuple[Fraction, int, int, int]:
    """(value, overflow count, underflow count, swamp count) of the chunked chain of §5: ``fma(x, y, acc)`` is
    one MAC step and ``add(total, partial)`` one chunk addition, each returning (value, overflow, underflow,
    swamp); without a chunk size the whole dot product is one chunk and no addition follows."""
    events = [0, 0, 0]
    n = chunk or max(len(a), 1)
    partials = []
    for start in range(0, len(a), n):
        s = Fraction(0)
        for x, y in zip(a[start : start + n], b[start : start + n]):
            s, *flags = fma(x, y, s)
            events = [count + flag for count, flag in zip(events, flags)]
        partials.append(s)
    if chunk is None:
        return (partials[0] if partials else Fraction(0)), *events
    total = Fraction(0)
    for c in partials:
        total, *flags = add(total, c)
        events = [count + flag for count, flag in zip(events, flags)]
    return total, *events


def oracle_dot(a: list[Fraction], b: list[Fraction], cfg: OracleConfig) -> tuple[Fraction, int, int, int]:
    """(value, overflow count, underflow count, swamp count); operands must already be representable."""
    return chunked_dot(
        a, b, cfg.chunk, lambda x, y, acc: oracle_fma(x, y, acc, cfg), lambda total, c: oracle_add(total, c, cfg)
    )


# ------------------------------------------------------------------ integer and fixed-point accumulators (§8)
@dataclass(frozen=True)
class FixedSpec:
    """A two's-complement format as plain numbers: total bits, fraction bits, saturate (else wrap)."""

    w: int
    f: int
    sat: bool


def fixed_spec_of(fmt) -> FixedSpec:
    return FixedSpec(fmt.width, fmt.frac_bits, fmt.overflow == "saturate")


def fixed_decode(spec: FixedSpec, code: int) -> Fraction:
    """Sign-extend the W-bit code by bit arithmetic, then scale by 2^-F."""
    signed = (code ^ (1 << (spec.w - 1))) - (1 << (spec.w - 1))
    return Fraction(signed, 2**spec.f)


def _to_grid(x: Fraction, spec: FixedSpec, rounding: str) -> int:
    """Python's own round() (half to even) or math.trunc of x * 2^F."""
    scaled = x * 2**spec.f
    return round(scaled) if rounding == "rne" else math.trunc(scaled)


def _keep(n: int, spec: FixedSpec) -> tuple[int, bool]:
    """(kept integer, overflowed): clamp, or the low W bits sign-extended."""
    top = 2 ** (spec.w - 1)
    if -top <= n < top:
        return n, False
    if spec.sat:
        return (top - 1 if n > 0 else -top), True
    low = n & (2**spec.w - 1)
    return (low - 2**spec.w if low >= top else low), True


def oracle_fixed_fma(a: Fraction, b: Fraction, acc: Fraction, spec: FixedSpec, rounding: str):
    """(value, overflow, underflow, swamp) of acc <- keep(acc + grid(a*b))."""
    p = _to_grid(a * b, spec, rounding)
    acc_n = acc * 2**spec.f
    assert acc_n.denominator == 1, "the accumulator must lie on its grid"
    s, overflow = _keep(int(acc_n) + p, spec)
    return Fraction(s, 2**spec.f), overflow, a * b != 0 and p == 0, p != 0 and s == acc_n


def oracle_fixed_add(total: Fraction, c: Fraction, spec: FixedSpec):
    s, overflow = _keep(int(total * 2**spec.f) + int(c * 2**spec.f), spec)
    value = Fraction(s, 2**spec.f)
    return value, overflow, False, c != 0 and value == total


def oracle_fixed_dot(a, b, spec: FixedSpec, rounding: str, chunk: int | None):
    """(value, overflow count, underflow count, swamp count) of the chunked chain of §5 on a fixed accumulator."""
    return chunked_dot(
        a,
        b,
        chunk,
        lambda x, y, acc: oracle_fixed_fma(x, y, acc, spec, rounding),
        lambda total, c: oracle_fixed_add(total, c, spec),
    )
