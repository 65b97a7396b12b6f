"""Custom floating-point formats: every code finite, optional subnormals, MSB-first sign|exponent|mantissa.

The limits below are those of the simulator: every value of a format (and every intermediate the contract
produces) must be exactly representable in an IEEE binary64 double, because the PyTorch simulator and
:func:`lba_train.reference_dot` hand values around as doubles. That allows exponents up to 11 bits and
mantissas up to 52 bits, as long as the largest value stays below 2^1024 and the smallest above 2^-1074.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from fractions import Fraction
from typing import Iterator

from .errors import FormatError

#: Binary64 limits that bound what the simulator can hold exactly.
FLOAT64_MAX_EXPONENT = 1023
FLOAT64_MIN_QUANTUM_EXPONENT = -1074
FLOAT64_MAN_BITS = 52

ALIASES = {
    "fp32": (8, 23),
    "fp16": (5, 10),
    "bf16": (8, 7),
}

_EXP_FIRST = re.compile(r"^e(?P<e>\d+)m(?P<m>\d+)(?P<rest>.*)$")
_MAN_FIRST = re.compile(r"^m(?P<m>\d+)e(?P<e>\d+)(?P<rest>.*)$")
_SUFFIX = re.compile(r"^(?:_b(?P<bias>-?\d+))?(?P<sub>_sub)?$")


class _CodedFormat:
    """What every number format derives from its ``width``-bit codes and its ``encode``: the code count, the
    code check of ``decode`` and ``is_representable``."""

    @property
    def code_count(self) -> int:
        return 1 << self.width

    def _check_code(self, code: int) -> None:
        """Raise FormatError unless ``code`` is one of the format's ``width``-bit codes."""
        if not isinstance(code, int) or not 0 <= code < self.code_count:
            raise FormatError(f"{code!r} is not a {self.width}-bit code of {self.name}")

    def is_representable(self, value: "Fraction | float | int") -> bool:
        try:
            self.encode(value)
        except FormatError:
            return False
        return True


@dataclass(frozen=True)
class FloatFormat(_CodedFormat):
    """A binary floating-point format with ``exp_bits`` exponent and ``man_bits`` fraction bits.

    ``bias`` defaults to 2^(E-1)-1. Exponent code 0 encodes zero, or a subnormal 0.m * 2^(1-bias) when
    ``subnormals`` is set; every other code is a normal number (there are no Inf or NaN codes), so the
    largest value is (2 - 2^-M) * 2^(2^E - 1 - bias).
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    subnormals: bool = False

    def __post_init__(self) -> None:
        for name in ("exp_bits", "man_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise FormatError(f"{name} must be an integer, got {value!r}")
        if self.bias is not None and (not isinstance(self.bias, int) or isinstance(self.bias, bool)):
            raise FormatError(f"bias must be an integer or None, got {self.bias!r}")
        if not isinstance(self.subnormals, bool):
            raise FormatError(f"subnormals must be True or False, got {self.subnormals!r}")
        if self.man_bits < 0:
            raise FormatError(f"man_bits must be >= 0, got {self.man_bits}")
        if self.exp_bits < 2:
            raise FormatError(f"exp_bits must be >= 2 (one exponent code is reserved for zero), got {self.exp_bits}")
        if self.man_bits > FLOAT64_MAN_BITS:
            raise FormatError(
                f"man_bits={self.man_bits} exceeds the simulator's limit of {FLOAT64_MAN_BITS} "
                "(values must be exact in binary64)"
            )
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.exp_bits - 1)) - 1)
        if self.emax > FLOAT64_MAX_EXPONENT:
            raise FormatError(
                f"{self.name}: largest exponent 2^{self.emax} exceeds the simulator's limit 2^{FLOAT64_MAX_EXPONENT} "
                "(raise the bias or use fewer exponent bits)"
            )
        if self.emin - self.man_bits < FLOAT64_MIN_QUANTUM_EXPONENT:
            raise FormatError(
                f"{self.name}: smallest quantum 2^{self.emin - self.man_bits} is below the simulator's limit "
                f"2^{FLOAT64_MIN_QUANTUM_EXPONENT} (lower the bias or use fewer exponent bits)"
            )

    # ----------------------------------------------------------------------------------------------- parsing
    @classmethod
    def parse(cls, spec: "str | FloatFormat") -> "FloatFormat":
        """Parse ``e4m3``/``E4M3``, mantissa-first ``M3E4``/``m3e4``, or ``fp32``/``fp16``/``bf16``.

        The canonical :attr:`name` round-trips: an optional ``_b<bias>`` suffix sets a non-default bias and
        ``_sub`` enables subnormals (``e4m3_b10_sub``).
        """
        if isinstance(spec, FloatFormat):
            return spec
        if not isinstance(spec, str):
            raise FormatError(f"a float format must be a string such as 'e4m3', got {spec!r}")
        text = spec.strip().lower()
        if text in ALIASES:
            return cls(*ALIASES[text])
        match = _EXP_FIRST.match(text) or _MAN_FIRST.match(text)
        suffix = _SUFFIX.match(match.group("rest")) if match else None
        if match is None or suffix is None:
            raise FormatError(
                f"malformed float format {spec!r}: expected e<E>m<M> (e4m3), m<M>e<E> (M3E4), "
                f"fp32, fp16 or bf16, optionally followed by _b<bias> and/or _sub"
            )
        bias = suffix.group("bias")
        return cls(
            int(match.group("e")),
            int(match.group("m")),
            bias=None if bias is None else int(bias),
            subnormals=suffix.group("sub") is not None,
        )

    @property
    def default_bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def name(self) -> str:
        """Canonical spelling, accepted by :meth:`parse`."""
        text = f"e{self.exp_bits}m{self.man_bits}"
        if self.bias != self.default_bias:
            text += f"_b{self.bias}"
        if self.subnormals:
            text += "_sub"
        return text

    def __str__(self) -> str:
        return self.name

    # ----------------------------------------------------------------------------------------------- range
    @property
    def width(self) -> int:
        """Total bits: sign, exponent and mantissa."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest binade (the all-ones exponent code is a normal binade)."""
        return (1 << self.exp_bits) - 1 - self.bias

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade (exponent code 1)."""
        return 1 - self.bias

    # The exact range values are cached per format object (formats are frozen): the simulator asks for them on
    # every GEMM call, and building the Fractions was a third of lba_matmul's fixed Python cost.
    @cached_property
    def max_value(self) -> Fraction:
        return Fraction((1 << (self.man_bits + 1)) - 1) * Fraction(2) ** (self.emax - self.man_bits)

    @cached_property
    def min_normal(self) -> Fraction:
        return Fraction(2) ** self.emin

    @cached_property
    def min_positive(self) -> Fraction:
        """Smallest positive value: the subnormal step when subnormals are on, else the smallest normal."""
        return Fraction(2) ** (self.emin - self.man_bits) if self.subnormals else self.min_normal

    # ----------------------------------------------------------------------------------------------- codes
    def decode(self, code: int) -> Fraction:
        """Value of a bit pattern (sign | exponent | mantissa). Both zero codes decode to 0."""
        self._check_code(code)
        mantissa = code & ((1 << self.man_bits) - 1)
        exponent_code = (code >> self.man_bits) & ((1 << self.exp_bits) - 1)
        negative = code >> (self.width - 1)
        if exponent_code == 0:
            if not self.subnormals:
                return Fraction(0)
            magnitude = Fraction(mantissa) * Fraction(2) ** (self.emin - self.man_bits)
        else:
            significand = (1 << self.man_bits) | mantissa
            magnitude = Fraction(significand) * Fraction(2) ** (exponent_code - self.bias - self.man_bits)
        return -magnitude if negative else magnitude

    def encode(self, value: "Fraction | float | int") -> int:
        """Bit pattern of an exactly representable value; zero encodes as +0 (code 0)."""
        value = Fraction(value)
        if value == 0:
            return 0
        sign = 1 if value < 0 else 0
        magnitude = abs(value)
        if magnitude > self.max_value or magnitude < self.min_positive:
            raise FormatError(f"{float(value)!r} is outside the range of {self.name}")
        exponent = max(floor_log2(magnitude), self.emin)
        scaled = magnitude / Fraction(2) ** (exponent - self.man_bits)
        if scaled.denominator != 1:
            raise FormatError(f"{float(value)!r} is not representable in {self.name}")
        significand = scaled.numerator
        if significand >> self.man_bits:
            exponent_code = exponent + self.bias
        else:
            exponent_code = 0  # subnormal: only reachable when subnormals are on (min_positive check above)
        mantissa = significand & ((1 << self.man_bits) - 1)
        return (sign << (self.width - 1)) | (exponent_code << self.man_bits) | mantissa

    def codes(self) -> Iterator[int]:
        """Every code whose value is distinct: -0 and (without subnormals) the dead subnormal codes are skipped."""
        for code in range(self.code_count):
            if self.encode(self.decode(code)) == code:
                yield code

    def values(self) -> list[Fraction]:
        """Every representable value, ascending."""
        return sorted(self.decode(code) for code in self.codes())


def floor_log2(magnitude: Fraction) -> int:
    """floor(log2(x)) for a positive rational x, exactly."""
    if magnitude <= 0:
        raise ValueError("floor_log2 needs a positive value")
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    return exponent


OVERFLOW_MODES = ("wrap", "saturate")

_FIXED = re.compile(r"^(?:int(?P<iw>\d+)|fx(?P<fw>\d+)\.(?P<f>\d+))(?:_(?P<mode>sat|saturate|wrap))?$")

#: The widest fixed-point format: every value is an integer times 2^-F below 2^53, exact in binary64.
FIXED_MAX_WIDTH = FLOAT64_MAN_BITS + 1


@dataclass(frozen=True)
class FixedFormat(_CodedFormat):
    """A two's-complement fixed-point format: ``width`` bits, ``frac_bits`` of them below the binary point.

    A code is the W-bit two's-complement integer n; its value is n * 2^-F, from -2^(W-1) * 2^-F to
    (2^(W-1) - 1) * 2^-F. ``frac_bits=0`` is a W-bit integer. ``overflow`` says what an accumulator of this
    format does with a sum outside that range: ``"wrap"`` keeps the low W bits (modulo 2^W, what a plain
    two's-complement adder does), ``"saturate"`` clamps to the nearest end. Operand conversion (§3) always
    saturates. See docs/arithmetic.md §8.
    """

    width: int
    frac_bits: int = 0
    overflow: str = "wrap"

    def __post_init__(self) -> None:
        for name in ("width", "frac_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise FormatError(f"{name} must be an integer, got {value!r}")
        if not 2 <= self.width <= FIXED_MAX_WIDTH:
            raise FormatError(
                f"fixed-point width must be 2..{FIXED_MAX_WIDTH} bits (values must be exact in binary64), got {self.width}"
            )
        if not 0 <= self.frac_bits <= -FLOAT64_MIN_QUANTUM_EXPONENT - FLOAT64_MAN_BITS:
            raise FormatError(f"frac_bits must be 0..{-FLOAT64_MIN_QUANTUM_EXPONENT - FLOAT64_MAN_BITS}, got {self.frac_bits}")
        if self.overflow not in OVERFLOW_MODES:
            raise FormatError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}, got {self.overflow!r}")

    @classmethod
    def parse(cls, spec: "str | FixedFormat") -> "FixedFormat":
        """Parse ``int<W>`` or ``fx<W>.<F>``, optionally followed by ``_sat`` (or ``_saturate``) or ``_wrap``.

        Without a suffix the format wraps. The canonical :attr:`name` (``int32``, ``int16_sat``,
        ``fx40.24``, ``fx40.24_sat``) parses back to the same format.
        """
        if isinstance(spec, FixedFormat):
            return spec
        match = _FIXED.match(spec.strip().lower()) if isinstance(spec, str) else None
        if match is None:
            raise FormatError(
                f"malformed fixed-point format {spec!r}: expected int<W> (int32) or fx<W>.<F> (fx40.24), "
                "optionally followed by _sat or _wrap"
            )
        mode = "saturate" if match.group("mode") in ("sat", "saturate") else "wrap"
        if match.group("iw") is not None:
            return cls(int(match.group("iw")), 0, mode)
        return cls(int(match.group("fw")), int(match.group("f")), mode)

    @property
    def name(self) -> str:
        text = f"int{self.width}" if self.frac_bits == 0 else f"fx{self.width}.{self.frac_bits}"
        return text + ("_sat" if self.saturate else "")

    def __str__(self) -> str:
        return self.name

    @property
    def saturate(self) -> bool:
        return self.overflow == "saturate"

    @property
    def is_integer(self) -> bool:
        return self.frac_bits == 0

    @cached_property
    def quantum(self) -> Fraction:
        """The grid step 2^-F: every value is an integer multiple of it."""
        return Fraction(1, 1 << self.frac_bits)

    @property
    def min_int(self) -> int:
        return -(1 << (self.width - 1))

    @property
    def max_int(self) -> int:
        return (1 << (self.width - 1)) - 1

    @cached_property
    def max_value(self) -> Fraction:
        return self.max_int * self.quantum

    @cached_property
    def min_value(self) -> Fraction:
        """The most negative value, -2^(W-1) * 2^-F (one step beyond -max_value)."""
        return self.min_int * self.quantum

    @cached_property
    def min_positive(self) -> Fraction:
        return self.quantum

    def decode(self, code: int) -> Fraction:
        """Value of a W-bit two's-complement code."""
        self._check_code(code)
        signed = code - self.code_count if code >> (self.width - 1) else code
        return signed * self.quantum

    def encode(self, value: "Fraction | float | int") -> int:
        """Code of an exactly representable value."""
        steps = Fraction(value) / self.quantum
        if steps.denominator != 1 or not self.min_int <= steps.numerator <= self.max_int:
            raise FormatError(f"{float(value)!r} is not representable in {self.name}")
        return steps.numerator % self.code_count

    def codes(self) -> Iterator[int]:
        return iter(range(self.code_count))

    def values(self) -> list[Fraction]:
        """Every representable value, ascending."""
        return [n * self.quantum for n in range(self.min_int, self.max_int + 1)]


#: Any number format of the contract.
NumberFormat = FloatFormat | FixedFormat


def parse_format(spec: "str | FloatFormat | FixedFormat") -> "FloatFormat | FixedFormat":
    """The one parse of a format spelling: ``int8``, ``int16_sat``, ``fx40.24`` -> FixedFormat; else FloatFormat."""
    if isinstance(spec, (FloatFormat, FixedFormat)):
        return spec
    if isinstance(spec, str) and spec.strip().lower().startswith(("int", "fx")):
        return FixedFormat.parse(spec)
    try:
        return FloatFormat.parse(spec)
    except FormatError as error:
        if not isinstance(spec, str):
            raise
        raise FormatError(f"{error}; or a fixed-point int<W> / fx<W>.<F> with optional _sat/_wrap") from None


def standard_name(spec: "str | FloatFormat | FixedFormat") -> str:
    """The name people know a format by, for reports: ``fp32``, ``fp16`` or ``bf16`` for those exponent and
    mantissa widths with the standard bias (and, as everywhere in the toolkit, no subnormals unless asked),
    otherwise the canonical :attr:`name` (``e4m7``, ``e4m7_b11``, ``int32``)."""
    fmt = parse_format(spec)
    if isinstance(fmt, FloatFormat) and fmt.bias == fmt.default_bias and not fmt.subnormals:
        for alias, widths in ALIASES.items():
            if widths == (fmt.exp_bits, fmt.man_bits):
                return alias
    return fmt.name
