"""The readable reference of the arithmetic contract (docs/arithmetic.md), on exact rationals.

Clarity over speed: every value is a :class:`fractions.Fraction`, every rounding is done once from the exact
real result. The fast simulator paths and the RTL are tested against these functions, and these functions are
tested against an independent MPFR oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from .config import ROUNDING_MODES, MacConfig
from .errors import ConfigError
from .formats import FixedFormat, FloatFormat, floor_log2

ZERO = Fraction(0)


@dataclass(frozen=True)
class Rounded:
    """Result of one rounding R_F: the value and what happened on the way."""

    value: Fraction
    overflow: bool  # the rounded magnitude exceeded the format's maximum and was saturated
    underflow: bool  # a non-zero exact value became zero


@dataclass(frozen=True)
class Step:
    """Result of one accumulation step (FMAq, or the chunk adder) with its three events."""

    value: Fraction
    overflow: bool
    underflow: bool
    swamp: bool  # the addend was non-zero but the accumulator did not change


@dataclass(frozen=True)
class DotResult:
    """A dot product's final accumulator value and how many steps raised each event."""

    value: Fraction
    steps: int
    overflow: int
    underflow: int
    swamp: int


def round_to_format(x: "Fraction | int | float", fmt: FloatFormat, rounding: str = "rne", underflow: bool = True) -> Rounded:
    """R_F(x): round the exact value x once to fmt's mantissa, then saturate, then flush (docs/arithmetic.md §2)."""
    if rounding not in ROUNDING_MODES:
        raise ConfigError(f"rounding must be one of {', '.join(ROUNDING_MODES)}, got {rounding!r}")
    x = to_fraction(x)
    if x == 0:
        return Rounded(ZERO, False, False)
    magnitude = abs(x)
    exponent = floor_log2(magnitude)
    if underflow and fmt.subnormals:
        exponent = max(exponent, fmt.emin)  # the quantum never goes below the subnormal step
    quantum = Fraction(2) ** (exponent - fmt.man_bits)
    steps, remainder = divmod(magnitude, quantum)  # floor, and the exact remainder in [0, quantum)
    if rounding == "rne" and (2 * remainder > quantum or (2 * remainder == quantum and steps % 2 == 1)):
        steps += 1
    rounded = steps * quantum
    overflow = rounded > fmt.max_value
    if overflow:
        rounded = fmt.max_value
    if underflow and not fmt.subnormals and rounded < fmt.min_normal:
        rounded = ZERO
    value = -rounded if x < 0 else rounded
    return Rounded(value + 0, overflow, value == 0)


def round_to_fixed(x: "Fraction | int | float", fmt: FixedFormat, rounding: str = "rne") -> Rounded:
    """Round x once onto fmt's grid 2^-F (RNE or RTZ), then wrap or saturate by fmt.overflow (docs §8).

    overflow: the rounded value lay outside [min_value, max_value]; underflow: x != 0 rounded to 0.
    """
    if rounding not in ROUNDING_MODES:
        raise ConfigError(f"rounding must be one of {', '.join(ROUNDING_MODES)}, got {rounding!r}")
    steps = on_grid(to_fraction(x), fmt, rounding)
    overflow = not fmt.min_int <= steps <= fmt.max_int
    if overflow:
        steps = out_of_range(steps, fmt)
    return Rounded(steps * fmt.quantum, overflow, x != 0 and steps == 0 and not overflow)


def on_grid(x: Fraction, fmt: FixedFormat, rounding: str) -> int:
    """x / 2^-F rounded to an integer: to nearest even, or toward zero."""
    scaled = x / fmt.quantum
    steps, remainder = divmod(abs(scaled), 1)
    if rounding == "rne" and (remainder > Fraction(1, 2) or (remainder == Fraction(1, 2) and steps % 2 == 1)):
        steps += 1
    return int(-steps if scaled < 0 else steps)


def out_of_range(steps: int, fmt: FixedFormat) -> int:
    """What fmt's accumulator keeps of an integer outside its range: the low W bits, or the nearest end."""
    if fmt.saturate:
        return min(max(steps, fmt.min_int), fmt.max_int)
    return (steps - fmt.min_int) % fmt.code_count + fmt.min_int


def quantize_value(x: "Fraction | int | float", fmt: "FloatFormat | FixedFormat", rounding: str = "rne", underflow: bool = True) -> Fraction:
    """A scalar into a format: R_F, with +-Inf saturating to +-max. NaN is an error.

    Into a fixed-point format this is the operand conversion of docs §8: round onto the grid, then saturate
    to [min_value, max_value] whatever fmt.overflow says (``underflow`` has no effect there).
    """
    if not isinstance(x, (Fraction, int)):
        value = float(x)
        if math.isnan(value):
            raise ValueError("cannot quantize NaN: the formats have no NaN code")
        if math.isinf(value):
            return fmt.max_value if value > 0 else (-fmt.max_value if isinstance(fmt, FloatFormat) else fmt.min_value)
    if isinstance(fmt, FixedFormat):
        steps = on_grid(to_fraction(x), fmt, rounding)
        return min(max(steps, fmt.min_int), fmt.max_int) * fmt.quantum
    return round_to_format(x, fmt, rounding, underflow).value


def product(a: Fraction, b: Fraction, cfg: MacConfig) -> Rounded:
    """R_prod(a * b); the identity (never an event) when the configuration has no product format.

    With a fixed-point accumulator the product is rounded onto the accumulator's grid without a range
    check (the adder is wide enough for any product, docs §8): only its underflow event can be raised.
    """
    exact = a * b
    if cfg.fixed_acc:
        steps = on_grid(exact, cfg.acc, cfg.rounding)
        return Rounded(steps * cfg.acc.quantum, False, exact != 0 and steps == 0)
    if cfg.product is None:
        return Rounded(exact, False, False)
    return round_to_format(exact, cfg.product, cfg.rounding, cfg.underflow)


def accumulate(acc: Fraction, addend: Fraction, cfg: MacConfig) -> Step:
    """acc <- R_acc(acc + addend): one step of the chain, also the chunk adder."""
    if cfg.fixed_acc:
        rounded = round_to_fixed(acc + addend, cfg.acc, cfg.rounding)
    else:
        rounded = round_to_format(acc + addend, cfg.acc, cfg.rounding, cfg.underflow)
    return Step(rounded.value, rounded.overflow, rounded.underflow, addend != 0 and rounded.value == acc)


def fmaq(a: Fraction, b: Fraction, acc: Fraction, cfg: MacConfig) -> Step:
    """FMAq(a, b, acc) = R_acc(acc + R_prod(a * b)); events of both roundings are reported (docs §4)."""
    prod = product(a, b, cfg)
    step = accumulate(acc, prod.value, cfg)
    return Step(step.value, step.overflow or prod.overflow, step.underflow or prod.underflow, step.swamp)


def dot(a: Sequence, b: Sequence, cfg: MacConfig) -> DotResult:
    """The dot product of two equally long sequences as the MAC computes it (docs §5).

    Operands are taken as values of the input formats: representable values pass unchanged, others are
    rounded to nearest-even into the format (as hardware conversion would). Index 0 is accumulated first.
    """
    if len(a) != len(b):
        raise ValueError(f"dot product operands differ in length: {len(a)} and {len(b)}")
    a_values = [quantize_value(x, cfg.a_format) for x in a]
    b_values = [quantize_value(x, cfg.b_format) for x in b]
    chunk = cfg.chunk_size or max(len(a_values), 1)
    counts = {"overflow": 0, "underflow": 0, "swamp": 0}
    steps = 0

    def tally(step: Step) -> Fraction:
        nonlocal steps
        steps += 1
        for event in counts:
            counts[event] += getattr(step, event)
        return step.value

    total = ZERO
    for start in range(0, len(a_values), chunk):
        partial = ZERO
        for x, y in zip(a_values[start : start + chunk], b_values[start : start + chunk]):
            partial = tally(fmaq(x, y, partial, cfg))
        total = tally(accumulate(total, partial, cfg)) if cfg.chunk_size is not None else partial
    return DotResult(total, steps, **counts)


def to_fraction(x: "Fraction | int | float") -> Fraction:
    """Exact rational value of a Python or NumPy number; NaN and Inf are rejected."""
    if isinstance(x, (Fraction, int)):
        return Fraction(x)
    value = float(x)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"expected a finite number, got {x!r}")
    return Fraction(value)

