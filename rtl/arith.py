"""Elaboration helpers shared by the blocks: decoding, leading-zero normalization, sticky shifts, R_F pieces.

Each helper adds combinational logic to the Amaranth module it is given and returns the resulting signals,
so that the multiplier path, the product rounder and the accumulate path share one implementation of each
operation (docs/arithmetic.md §2 is implemented once, in :func:`round_significand` and :func:`range_check`).
Significands are unsigned integers whose top bit is the binade 2^exp ("normalized" when that bit is set).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.hdl import Value

from lba_core import FloatFormat


@dataclass(frozen=True)
class Operand:
    """A decoded floating-point operand: value = (-1)^sign * sig * 2^(exp - len(sig) + 1), or 0 when zero."""

    sign: Value
    zero: Value
    sig: Value
    exp: Value


def decode(m: Module, code: Value, fmt: FloatFormat, exp_bits: int, name: str) -> Operand:
    """Split a code into fields; subnormal significands keep their leading zeros (binade emin).

    Zero codes (either sign, and exponent-0 codes when subnormals are off) get an all-zero significand so that
    downstream arithmetic needs no special case for them.
    """
    man = code[: fmt.man_bits]
    exp_code = code[fmt.man_bits : fmt.man_bits + fmt.exp_bits]
    exp_zero = exp_code == 0
    zero = Signal(name=f"{name}_zero")
    sig = Signal(fmt.man_bits + 1, name=f"{name}_sig")
    exp = Signal(signed(exp_bits), name=f"{name}_exp")
    m.d.comb += [
        zero.eq(exp_zero & (man == 0) if fmt.subnormals else exp_zero),
        sig.eq(Mux(zero, 0, Cat(man, ~exp_zero))),
        exp.eq(Mux(exp_zero, fmt.emin, exp_code - fmt.bias)),
    ]
    return Operand(code[fmt.width - 1], zero, sig, exp)


def decode_normalized(m: Module, code: Value, fmt: FloatFormat, exp_bits: int, name: str) -> Operand:
    """:func:`decode`, then shift a subnormal's leading zeros out (only built when fmt has subnormals)."""
    operand = decode(m, code, fmt, exp_bits, name)
    if not fmt.subnormals:
        return operand
    sig, exp = normalize(m, operand.sig, operand.exp, fmt.man_bits, exp_bits, name)
    return Operand(operand.sign, operand.zero, sig, exp)


def leading_zeros(m: Module, value: Value, max_count: int, name: str) -> Signal:
    """Leading zeros of value, saturated at max_count (an all-zero value gives max_count)."""
    count = Const(max_count)
    for position in reversed(range(min(max_count, len(value)))):
        count = Mux(value[len(value) - 1 - position], position, count)
    result = Signal(range(max_count + 1), name=f"{name}_lz")
    m.d.comb += result.eq(count)
    return result


def normalize(m: Module, sig: Value, exp: Value, max_shift: int, exp_bits: int, name: str) -> tuple[Signal, Signal]:
    """Shift sig left until its top bit is set (at most max_shift places), lowering exp to match."""
    shift = leading_zeros(m, sig, max_shift, name)
    normalized = Signal(len(sig), name=f"{name}_norm_sig")
    normalized_exp = Signal(signed(exp_bits), name=f"{name}_norm_exp")
    m.d.comb += [normalized.eq(sig << shift), normalized_exp.eq(exp - shift)]
    return normalized, normalized_exp


def clamped_shift(m: Module, amount: Value, limit: int, name: str) -> Signal:
    """A signed shift amount clamped to [0, limit]: shifting by more than the datapath is never built."""
    clamped = Signal(range(limit + 1), name=f"{name}_shift")
    m.d.comb += clamped.eq(Mux(amount < 0, 0, Mux(amount > limit, limit, amount)))
    return clamped


def shift_right_sticky(m: Module, value: Value, amount: Value, name: str) -> tuple[Signal, Signal]:
    """value >> amount (amount <= len(value)), and the OR of every bit shifted out (the sticky bit)."""
    width = len(value)
    shifted = Cat(Const(0, width), value) >> amount
    kept = Signal(width, name=f"{name}_kept")
    sticky = Signal(name=f"{name}_sticky")
    m.d.comb += [kept.eq(shifted[width:]), sticky.eq(shifted[:width].any())]
    return kept, sticky


def round_significand(
    m: Module, sig: Value, exp: Value, fmt: FloatFormat, rounding: str, exp_bits: int, name: str
) -> tuple[Signal, Signal]:
    """Step 1 of R_F: round a normalized sig (binade exp) to fmt.man_bits fraction bits, RNE or RTZ.

    The bits of sig below the kept ones are exact or end in a sticky bit that stands for a non-zero tail (the
    caller guarantees that the sticky position lies below the round bit). With subnormals, a value below
    emin is first shifted to the emin binade, folding what falls out into the sticky. Returns the rounded
    significand (man_bits + 1 bits; top bit clear only for a subnormal or zero result) and its binade.
    """
    man_bits = fmt.man_bits
    pad = max(0, man_bits + 2 - len(sig))
    work = Cat(Const(0, pad), sig) if pad else sig
    width = len(work)
    binade = exp
    extra_sticky = Const(0, 1)
    if fmt.subnormals:
        amount = clamped_shift(m, fmt.emin - exp, width, f"{name}_subnormal")
        work, extra_sticky = shift_right_sticky(m, work, amount, f"{name}_subnormal")
        binade = Mux(exp < fmt.emin, fmt.emin, exp)
    kept = work[width - man_bits - 1 :]
    round_bit = work[width - man_bits - 2]
    below = work[: width - man_bits - 2]
    sticky = (below.any() if len(below) else Const(0, 1)) | extra_sticky
    increment = round_bit & (sticky | kept[0]) if rounding == "rne" else Const(0, 1)
    total = Signal(man_bits + 2, name=f"{name}_rounded")
    rounded = Signal(man_bits + 1, name=f"{name}_sig")
    rounded_exp = Signal(signed(exp_bits), name=f"{name}_exp")
    carry = total[man_bits + 1]  # 1.11..1 rounded up to 10.00..0: the next binade
    m.d.comb += [
        total.eq(kept + increment),
        rounded.eq(Mux(carry, total[1:], total[: man_bits + 1])),
        rounded_exp.eq(binade + carry),
    ]
    return rounded, rounded_exp


@dataclass(frozen=True)
class RangeChecked:
    """Steps 2-3 of R_F: the saturated/flushed significand and binade, and what happened."""

    sig: Signal
    exp: Signal
    zero: Signal
    overflow: Signal


def range_check(m: Module, sig: Value, exp: Value, fmt: FloatFormat, exp_bits: int, name: str) -> RangeChecked:
    """Saturate a rounded value above max to max; flush a non-zero value below min_normal (no subnormals)."""
    nonzero = sig.any()
    overflow = Signal(name=f"{name}_overflow")
    zero = Signal(name=f"{name}_zero")
    out_sig = Signal(fmt.man_bits + 1, name=f"{name}_sig")
    out_exp = Signal(signed(exp_bits), name=f"{name}_exp")
    # The largest significand of a binade is below max's, so "exceeds max" is "binade above emax".
    m.d.comb += [
        overflow.eq(nonzero & (exp > fmt.emax)),
        zero.eq(~nonzero if fmt.subnormals else ~nonzero | (exp < fmt.emin)),
        out_sig.eq(Mux(overflow, (1 << (fmt.man_bits + 1)) - 1, Mux(zero, 0, sig))),
        out_exp.eq(Mux(overflow, fmt.emax, exp)),
    ]
    return RangeChecked(out_sig, out_exp, zero, overflow)


def encode(fmt: FloatFormat, checked: RangeChecked, sign: Value) -> Value:
    """The code of a range-checked value; zero is always +0 and a clear top bit means a subnormal code."""
    exp_code = Mux(checked.sig[fmt.man_bits], checked.exp + fmt.bias, 0)
    return Cat(checked.sig[: fmt.man_bits], exp_code[: fmt.exp_bits], sign & ~checked.zero)
