"""The datapath of a MacConfig, derived once: exponent ranges, significand widths, the alignment window.

The RTL generator sizes its signals from :class:`DatapathPlan`, the simulator's kernel plan reads the
products' grid and the sums' range from it, the bias rule takes the largest product from it and the area cost
model its bit widths, so a change here reaches all of them (docs/rtl.md, "Datapath widths").
:class:`FixedDatapathPlan` is the same for integer and fixed-point accumulators (docs/arithmetic.md §8): the
fixed-point MAC circuit (rtl.intmac) and the simulator's int_gemm kernel both read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import MacConfig
from .errors import ConfigError
from .formats import FixedFormat, FloatFormat, floor_log2
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


def operand_grid(fmt: FloatFormat | FixedFormat) -> tuple[int, int, int]:
    """(quantum exponent q, significand bits, exponent of 2 above the largest magnitude) of an operand format.

    Every value is an integer of at most ``significand bits`` bits times a power of two >= 2^q.
    """
    if isinstance(fmt, FixedFormat):
        return -fmt.frac_bits, fmt.width, fmt.width - 1 - fmt.frac_bits
    return fmt.emin - fmt.man_bits, fmt.man_bits + 1, fmt.emax + 1


def operand_exponent_span(fmt: FloatFormat) -> int:
    """Largest exponent code above the smallest binade: codes 1 .. 2^E - 1 (0 counts as 1)."""
    return (1 << fmt.exp_bits) - 2


@dataclass(frozen=True)
class FixedDatapathPlan:
    """The datapath of a MAC with an integer/fixed-point accumulator of F fraction bits (docs/arithmetic.md §8).

    Every exact product a*b is an integer number of units 2^-G, G = ``grid_exponent`` = -(qa + qb); the
    product moves onto the accumulator's grid 2^-F by ``grid_shift`` = F - G (left when >= 0, else a
    rounding right shift). Widths are those of the circuit: multiplier output, exponent-code sum, the
    magnitude in units of 2^-G after the exponent shift, the product on the grid, the signed adder.
    """

    cfg: MacConfig
    float_operands: bool
    a_grid: tuple[int, int, int]  # operand_grid of the input format
    b_grid: tuple[int, int, int]  # operand_grid of the weight format
    sig_bits: int  # multiplier output magnitude (significand or integer product)
    exp_bits: int  # exponent-sum width (0 for integer operands)
    exact_bits: int  # magnitude in units of 2^-G after the exponent shift
    grid_exponent: int  # G: exact products are integers times 2^-G
    grid_shift: int  # F - G: left (> 0) or rounding right (< 0) shift onto the grid
    product_bits: int  # magnitude of the product on the grid
    sum_bits: int  # signed adder width

    @property
    def aligned(self) -> bool:
        return self.float_operands or self.grid_shift != 0

    @property
    def grid_exact(self) -> bool:
        """Every exact product lies on the accumulator's grid (no product rounds)."""
        return self.grid_shift >= 0

    @property
    def exact_product_sig_bits(self) -> int:
        """Significant bits of an exact product as integer times power of two."""
        return self.a_grid[1] + self.b_grid[1]

    @property
    def product_top_exponent(self) -> int:
        """|a*b| < 2^this."""
        return self.a_grid[2] + self.b_grid[2]


def derive_fixed_datapath(cfg: MacConfig) -> FixedDatapathPlan:
    """The datapath of cfg with an integer/fixed-point accumulator. Pure arithmetic on the formats: whether a
    circuit or a kernel exists is checked by ``rtl.check_fixed_config`` and ``lba_train.kernels.int_gemm``.
    Raises ConfigError for a floating-point accumulator. With one floating-point and one integer operand (which
    the simulator takes and no circuit builds) the integer operand counts as one binade."""
    a, b, acc = cfg.a_format, cfg.b_format, cfg.acc
    if not cfg.fixed_acc:
        raise ConfigError(f"{cfg.name}: the fixed-point datapath needs an integer or fixed-point accumulator")
    a_grid, b_grid = operand_grid(a), operand_grid(b)
    grid = -(a_grid[0] + b_grid[0])
    if isinstance(a, FixedFormat) and isinstance(b, FixedFormat):
        sig_bits, exp_bits = a.width + b.width - 1, 0
        exact_bits = sig_bits
    else:
        sig_bits = a_grid[1] + b_grid[1]
        span = sum(operand_exponent_span(fmt) for fmt in (a, b) if isinstance(fmt, FloatFormat))
        exp_bits = max(1, span.bit_length())
        exact_bits = sig_bits + span
    shift = acc.frac_bits - grid
    product_bits = max(exact_bits + shift if shift >= 0 else exact_bits + shift + 1, 1)
    return FixedDatapathPlan(
        cfg=cfg,
        float_operands=isinstance(a, FloatFormat) and isinstance(b, FloatFormat),
        a_grid=a_grid,
        b_grid=b_grid,
        sig_bits=sig_bits,
        exp_bits=exp_bits,
        exact_bits=exact_bits,
        grid_exponent=grid,
        grid_shift=shift,
        product_bits=product_bits,
        sum_bits=max(acc.width, product_bits + 1) + 1,
    )
