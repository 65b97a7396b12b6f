"""Validation of a MacConfig for the circuit generator, and the datapath widths derived from it.

Everything here is plain Python on lba_core objects: it runs before any Amaranth elaboration, so a bad
configuration fails with a ConfigError naming the problem instead of an Amaranth traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from lba_core import ConfigError, FloatFormat, MacConfig


def operand_exponent_range(fmt: FloatFormat) -> tuple[int, int]:
    """Binade of a non-zero value of fmt once its significand is normalized (subnormals reach below emin)."""
    low = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
    return low, fmt.emax


def signed_bits(low: int, high: int) -> int:
    """Width of a two's-complement signal that holds every integer in [low, high]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= low and high < (1 << (bits - 1))):
        bits += 1
    return bits


@dataclass(frozen=True)
class DatapathPlan:
    """Widths of the FMAq datapath for one configuration (see docs/rtl.md, "Datapath widths").

    ``window_bits`` (L) is the aligned-significand window: the larger operand sits at its top and the smaller
    one is shifted right by at most L, every bit pushed out below the window is folded into one sticky bit.
    The adder works on L + 2 bits: a carry bit above the window and the sticky bit below it.
    """

    cfg: MacConfig
    product_sig_bits: int  # significand bits of the product entering the aligner (exact, or R_prod'ed)
    window_bits: int
    exp_bits: int  # signed width of every internal (unbiased) exponent and exponent difference

    @property
    def sum_bits(self) -> int:
        return self.window_bits + 2

    @property
    def acc_sig_bits(self) -> int:
        return self.cfg.acc.man_bits + 1

    @property
    def exact_product_sig_bits(self) -> int:
        return self.cfg.a_format.man_bits + self.cfg.b_format.man_bits + 2


def plan_datapath(cfg: MacConfig) -> DatapathPlan:
    """Check that the generator can build cfg and return its widths; raises ConfigError otherwise."""
    check_config(cfg)
    exact_bits = cfg.a_format.man_bits + cfg.b_format.man_bits + 2
    product_bits = exact_bits if cfg.product is None else cfg.product.man_bits + 1
    acc_bits = cfg.acc.man_bits + 1
    # Exactness (docs/rtl.md): the window must hold either operand plus a one-bit shift of the other, and
    # leave two bits below the accumulator's rounding position for the round and sticky decision.
    window = max(acc_bits + 2, product_bits + 1)

    a_low, a_high = operand_exponent_range(cfg.a_format)
    b_low, b_high = operand_exponent_range(cfg.b_format)
    lows = [a_low + b_low, cfg.acc.emin - cfg.acc.man_bits]
    highs = [a_high + b_high + 2, cfg.acc.emax + 2]
    if cfg.product is not None:
        lows.append(cfg.product.emin - cfg.product.man_bits)
        highs.append(cfg.product.emax + 2)
    # Normalization shifts lower an exponent by up to the widest significand; the subnormal pre-shift and the
    # aligner subtract two exponents, so the span is counted twice.
    low = min(lows) - window - exact_bits - 4
    high = max(highs) + 4
    span = high - low
    return DatapathPlan(cfg, product_bits, window, signed_bits(low - span, high + span))


def check_config(cfg: MacConfig) -> None:
    """Reject what no circuit implements, before elaboration."""
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"the RTL generator needs an lba_core.MacConfig, got {type(cfg).__name__}")
    if not cfg.underflow:
        raise ConfigError(
            "MacConfig.underflow=False is a simulation-only mode (docs/arithmetic.md §6); "
            "the RTL generator always builds underflow=True"
        )
    smallest = cfg.a_format.min_positive * cfg.b_format.min_positive
    largest = cfg.a_format.max_value * cfg.b_format.max_value
    if cfg.product is not None:
        check_overlap("product format", cfg.product, smallest, largest, cfg)
        smallest = max(smallest, cfg.product.min_positive)
        largest = min(largest, cfg.product.max_value)
    check_overlap("accumulator", cfg.acc, smallest, largest, cfg)


def check_overlap(role: str, fmt: FloatFormat, smallest: Fraction, largest: Fraction, cfg: MacConfig) -> None:
    """A format that flushes every product, or saturates every product, is a configuration mistake."""
    if largest < fmt.min_positive / 2:
        raise ConfigError(
            f"{cfg.name}: the {role} {fmt.name} cannot hold any product: the largest product "
            f"{float(largest):g} is below half its smallest value {float(fmt.min_positive):g}, so every product "
            "would underflow (raise the exponent range or change the bias)"
        )
    if smallest > fmt.max_value:
        raise ConfigError(
            f"{cfg.name}: the {role} {fmt.name} cannot hold any product: the smallest product "
            f"{float(smallest):g} exceeds its maximum {float(fmt.max_value):g}, so every product would saturate"
        )
