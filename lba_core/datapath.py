"""The datapath of a MacConfig, derived once: exponent ranges, significand widths, the alignment window.

The RTL generator sizes its signals from :class:`DatapathPlan`, the simulator's kernel plan reads the
products' grid and the sums' range from it, the bias rule takes the largest product from it and the area cost
model its bit widths, so a change here reaches all of them (docs/rtl.md, "Datapath widths").
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import MacConfig
from .errors import ConfigError
from .formats import FloatFormat, floor_log2
from .reference import round_to_format


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


def window_bits_for(acc_sig_bits: int, addend_sig_bits: int) -> int:
    """The alignment window L for an accumulator and an addend of these significand widths.

    Exactness (docs/rtl.md): the window holds either operand plus a one-bit shift of the other, and leaves two
    bits below the accumulator's rounding position for the round and sticky decision.
    """
    return max(acc_sig_bits + 2, addend_sig_bits + 1)


@dataclass(frozen=True)
class DatapathPlan:
    """Widths and exponent ranges of the MAC datapath of one configuration.

    Significands count their hidden bit. ``window_bits`` (L) is the aligned-significand window: the larger
    operand sits at its top and the smaller one is shifted right by at most L, every bit pushed out below
    the window folded into one sticky bit; the adder works on L + 2 bits (a carry above, the sticky below).
    The chunk adder adds two accumulator values, so its window is that of an accumulator-wide addend.
    """

    cfg: MacConfig
    a_sig_bits: int
    b_sig_bits: int
    multiplier_sig_bits: int  # the exact product a*b: a_sig_bits + b_sig_bits
    product_sig_bits: int  # the product entering the aligner (exact, or after R_prod)
    acc_sig_bits: int
    window_bits: int
    chunk_window_bits: int
    exp_bits: int  # signed width of every internal (unbiased) exponent and exponent difference
    exact_product_exponent_range: tuple[int, int]  # binades of a non-zero exact product
    product_quantum_exponent: int  # every product, accumulator and chunk value is a multiple of 2^this
    product_bound_exponent: int  # |R_prod(a*b)| < 2^this
    sum_bound_exponent: int  # |acc + p| and |total + c| < 2^this
    largest_product_exponent: int | None  # floor(log2) of the largest product after R_prod; None: all flush

    @property
    def sum_bits(self) -> int:
        """Width of the adder, normalizer and rounder input: carry | window | sticky."""
        return self.window_bits + 2

    @property
    def chunk_sum_bits(self) -> int:
        return self.chunk_window_bits + 2

    @property
    def multiplier_array_bits(self) -> int:
        """Partial products of the significand multiplier: a_sig_bits x b_sig_bits."""
        return self.a_sig_bits * self.b_sig_bits


def derive_datapath(cfg: MacConfig) -> DatapathPlan:
    """The datapath of cfg. Pure arithmetic on the formats: whether a circuit or a kernel can be built for cfg
    is checked by ``rtl.check_config`` and ``lba_train.kernels.plan_gemm``. Raises ConfigError for an
    integer/fixed-point accumulator or operand: that datapath has no alignment (docs/arithmetic.md §8)."""
    if cfg.fixed_acc or not all(isinstance(fmt, FloatFormat) for fmt in (cfg.a_format, cfg.b_format)):
        raise ConfigError(f"{cfg.name}: the floating-point datapath needs floating-point operands and accumulator")
    a, b, acc, product = cfg.a_format, cfg.b_format, cfg.acc, cfg.product
    a_sig, b_sig, acc_sig = a.man_bits + 1, b.man_bits + 1, acc.man_bits + 1
    exact_sig = a_sig + b_sig
    product_sig = exact_sig if product is None else product.man_bits + 1
    window = window_bits_for(acc_sig, product_sig)

    a_low, a_high = operand_exponent_range(a)
    b_low, b_high = operand_exponent_range(b)
    # 1.x * 1.y < 4: the exact product's top bit is at most one binade above a_high + b_high.
    exact_range = (a_low + b_low, a_high + b_high + 1)
    product_bound = product.emax + 1 if product is not None else exact_range[1] + 1
    largest = a.max_value * b.max_value
    if product is not None:  # R_prod is monotonic, so it maps the largest product to the largest result
        largest = round_to_format(largest, product, cfg.rounding, cfg.underflow).value

    lows = [exact_range[0], acc.emin - acc.man_bits]
    highs = [exact_range[1] + 1, acc.emax + 2]
    if product is not None:
        lows.append(product.emin - product.man_bits)
        highs.append(product.emax + 2)
    # Normalization shifts lower an exponent by up to the widest significand; the subnormal pre-shift and the
    # aligner subtract two exponents, so the span is counted twice.
    low = min(lows) - window - exact_sig - 4
    high = max(highs) + 4
    span = high - low
    return DatapathPlan(
        cfg=cfg,
        a_sig_bits=a_sig,
        b_sig_bits=b_sig,
        multiplier_sig_bits=exact_sig,
        product_sig_bits=product_sig,
        acc_sig_bits=acc_sig,
        window_bits=window,
        chunk_window_bits=window_bits_for(acc_sig, acc_sig),
        exp_bits=signed_bits(low - span, high + span),
        exact_product_exponent_range=exact_range,
        product_quantum_exponent=(a.emin - a.man_bits) + (b.emin - b.man_bits),
        product_bound_exponent=product_bound,
        sum_bound_exponent=max(acc.emax + 1, product_bound) + 1,
        largest_product_exponent=floor_log2(largest) if largest else None,
    )
