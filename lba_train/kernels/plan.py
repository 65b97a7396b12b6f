"""What a GEMM kernel needs to know about a MacConfig, worked out once per call in plain numbers.

Every kernel carries values as IEEE binary64. That is exact for every format value (FloatFormat limits), and
:func:`plan_gemm` also checks that the *exact product* of two operands fits in binary64, so the only rounding
that needs care is the accumulator's ``acc + p`` (and the chunk adder's ``total + c``): that sum is carried as
an error-free pair (TwoSum) and rounded once from the exact value (docs/simulator.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

from lba_core import ConfigError, DatapathPlan, FloatFormat, MacConfig, derive_datapath

BINARY64_SIGNIFICAND_BITS = 53
BINARY64_MIN_NORMAL_EXPONENT = -1022
BINARY64_MIN_QUANTUM_EXPONENT = -1074
BINARY64_MAX_EXPONENT = 1023
BINARY32_SIGNIFICAND_BITS = 24
BINARY32_MIN_NORMAL_EXPONENT = -126
BINARY32_MIN_QUANTUM_EXPONENT = -149
BINARY32_MAX_EXPONENT = 127

# Round-to-odd at binary64's 53 bits followed by a rounding to man_bits + 1 bits equals one rounding of the
# exact value only when 53 >= man_bits + 1 + 2 (Boldo & Melquiond, "Emulation of FMA and correctly rounded
# sums: proved algorithms using rounding to odd", IEEE TC 2008).
FAST_MAX_MAN_BITS = BINARY64_SIGNIFICAND_BITS - 3
BINARY32_MAX_MAN_BITS = BINARY32_SIGNIFICAND_BITS - 3  # the same theorem at binary32's 24 bits


class RoundSpec(NamedTuple):
    """R_F of one format under a configuration's rounding mode and underflow switch.

    A NamedTuple (not a dataclass) because the Numba kernels take it as an argument. The first seven
    fields are in the order of the ``RoundSpec`` tuples of ``lba_train.estimators``.
    """

    man_bits: int
    emin: int
    max_value: float
    min_normal: float
    clamp: bool  # the quantum stops shrinking at emin (subnormals, underflow on)
    flush: bool  # a non-zero rounded magnitude below min_normal becomes 0 (no subnormals, underflow on)
    toward_zero: bool
    subnormal_quantum: float  # 2^(emin - man_bits), or 0.0 where its inverse would overflow binary64
    inverse_subnormal_quantum: float


# R_prod of a configuration without a product format, for callers that prefer one code path: truncating
# to 52 fraction bits with no bounds keeps every binary64 value, in every rounding algorithm of numba_gemm.
IDENTITY_PRODUCT = RoundSpec(52, 0, float("inf"), 0.0, False, False, True, 0.0, 0.0)


def round_spec(fmt: FloatFormat, cfg: MacConfig) -> RoundSpec:
    return round_spec_of(fmt, cfg.rounding, cfg.underflow)


@functools.lru_cache(maxsize=1024)
def round_spec_of(fmt: FloatFormat, rounding: str, underflow: bool) -> RoundSpec:
    """R_F of ``fmt`` under a rounding mode and underflow switch, as plain numbers (memoized: pure)."""
    quantum_exponent = fmt.emin - fmt.man_bits
    usable_quantum = quantum_exponent >= BINARY64_MIN_NORMAL_EXPONENT
    return RoundSpec(
        man_bits=fmt.man_bits,
        emin=fmt.emin,
        max_value=float(fmt.max_value),
        min_normal=float(fmt.min_normal),
        clamp=underflow and fmt.subnormals,
        flush=underflow and not fmt.subnormals,
        toward_zero=rounding == "rtz",
        subnormal_quantum=2.0**quantum_exponent if usable_quantum else 0.0,
        inverse_subnormal_quantum=2.0**-quantum_exponent if usable_quantum else 0.0,
    )


STEP_EXACT_SUM = "exact-sum"
STEP_ROUND_TO_ODD = "round-to-odd"
STEP_GENERAL = "general"
# Binary32 lanes only: the binary32 sum, rounded once more to the accumulator, with no TwoSum (RNE only).
STEP_ROUND_TWICE = "round-twice"
# Binary32 lanes only: the binary32 sum is the accumulator's rounding (23 fraction bits, RNE, no flush).
STEP_NATIVE = "native"


@dataclass(frozen=True)
class GemmPlan:
    """The kernels' view of a MacConfig, and the accumulation step that is exact for it.

    ``step`` is the algorithm of one rounding R(acc + p), from the fastest to the most general:

    - STEP_EXACT_SUM: binary64 holds every sum ``acc + p`` exactly (the chain's values span at most 53
      bits, e.g. e4m3 operands with an e4m7 or e5m10 accumulator); round that sum directly.
    - STEP_ROUND_TO_ODD: TwoSum, round the sum to odd at 53 bits, then round once to the format.
    - STEP_GENERAL: TwoSum, then decide the rounding from both parts with explicit tests.

    The first two round by integer operations on the bit pattern; they need every format's man_bits <= 50,
    every non-zero value of the chain to be a normal binary64 number and no sum to reach 2^1024.

    ``binary32_step`` is the algorithm for kernels that carry values in binary32 lanes (twice the SIMD
    width), None where :func:`binary32_lanes_hold` is false: STEP_EXACT_SUM when binary32 holds every sum,
    STEP_ROUND_TWICE when rounding the binary32 sum once more equals one rounding (:func:`round_twice_holds`),
    STEP_NATIVE when the binary32 sum is the rounding (:func:`native_sum_holds`), else STEP_ROUND_TO_ODD at
    binary32's 24 bits.

    ``binary32_fallback``: sums may leave binary32's range (accumulators with emax >= 127, e8m23 and bf16);
    such lanes end as Inf or NaN and the kernel recomputes them on binary64 lanes (docs/simulator.md).
    """

    product: RoundSpec | None
    acc: RoundSpec
    chunk_size: int | None
    step: str
    #: |R_prod(a*b)| < 2^this for operands in their formats (DatapathPlan.product_bound_exponent).
    product_bound_exponent: int
    binary32_step: str | None = None
    binary32_fallback: bool = False

    def steps_per_output(self, length: int) -> int:
        """Roundings R_acc per dot product of ``length`` products: the MACs plus the chunk-adder steps."""
        if self.chunk_size is None:
            return length
        return length + -(-length // self.chunk_size)


def check_exact_products(cfg: MacConfig, datapath: DatapathPlan) -> None:
    """Refuse operand formats whose exact product binary64 cannot hold (the kernels form a*b in binary64)."""
    a, b = cfg.a_format, cfg.b_format
    if datapath.multiplier_sig_bits > BINARY64_SIGNIFICAND_BITS:
        raise ConfigError(
            f"lba_matmul: exact products of {a.name} x {b.name} operands need {datapath.multiplier_sig_bits} "
            f"significand bits, more than binary64's {BINARY64_SIGNIFICAND_BITS}; use operand formats with "
            "man_bits summing to at most 51"
        )
    too_small = datapath.product_quantum_exponent < BINARY64_MIN_QUANTUM_EXPONENT
    if too_small or datapath.exact_product_exponent_range[1] + 1 > BINARY64_MAX_EXPONENT + 1:
        raise ConfigError(f"lba_matmul: exact products of {a.name} x {b.name} operands leave the binary64 range")


def plan_gemm(cfg: MacConfig, datapath: DatapathPlan | None = None) -> GemmPlan:
    """Check that cfg can be simulated exactly and choose the step algorithm.

    ``datapath``: ``derive_datapath(cfg)`` where the caller has it already (derived here otherwise).
    """
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"lba_matmul: cfg must be a lba_core.MacConfig, got {type(cfg).__name__}")
    if cfg.fixed_acc:
        raise ConfigError(
            f"{cfg.name}: the floating-point GEMM plan does not apply to the {cfg.acc.name} accumulator "
            "(lba_train.kernels.int_gemm simulates it; the fine-grained estimators need a floating-point one)"
        )
    # Every product, accumulator and chunk value is a multiple of 2^grid (roundings only coarsen a value's grid)
    # and below 2^top in magnitude.
    datapath = derive_datapath(cfg) if datapath is None else datapath
    check_exact_products(cfg, datapath)
    grid, top = datapath.product_quantum_exponent, datapath.sum_bound_exponent
    rounded_formats = [cfg.acc] + ([cfg.product] if cfg.product is not None else [])
    specs = [round_spec(fmt, cfg) for fmt in rounded_formats]
    bit_pattern_rounding = (
        all(fmt.man_bits <= FAST_MAX_MAN_BITS for fmt in rounded_formats)
        and grid >= BINARY64_MIN_NORMAL_EXPONENT
        and top <= BINARY64_MAX_EXPONENT
        and all(spec.subnormal_quantum > 0.0 or not spec.clamp for spec in specs)
    )
    if not bit_pattern_rounding:
        step = STEP_GENERAL
    elif top - grid <= BINARY64_SIGNIFICAND_BITS:
        step = STEP_EXACT_SUM
    else:
        step = STEP_ROUND_TO_ODD
    lane_step = binary32_step(cfg, datapath) if binary32_lanes_hold(cfg, datapath) else None
    return GemmPlan(
        product=specs[1] if cfg.product is not None else None,
        acc=specs[0],
        chunk_size=cfg.chunk_size,
        step=step,
        binary32_step=lane_step,
        binary32_fallback=lane_step is not None and datapath.sum_bound_exponent > BINARY32_MAX_EXPONENT,
        product_bound_exponent=datapath.product_bound_exponent,
    )


def binary32_lanes_hold(cfg: MacConfig, datapath: DatapathPlan) -> bool:
    """Whether the exact-sum or round-to-odd step is exact when carried out in binary32 (docs/simulator.md).

    Operand values and exact products must be binary32 numbers, every non-zero value of the chain a normal
    one (all are multiples of 2^product_quantum_exponent), every rounded format has at most 21 fraction bits
    (round to odd at 24 bits, then once more) or the accumulator is the native 23-bit one, and, with a
    subnormal clamp, the magic constant 2^(emin - man_bits + 23) of the fixed-quantum rounding is a normal
    binary32 number. No sum may reach 2^128, unless the step is native or round-twice (whose lanes that do
    end as Inf or NaN and are finished on binary64 lanes, :func:`range_fallback_holds`).
    """
    a, b = cfg.a_format, cfg.b_format
    rounded_formats = [cfg.acc] + ([cfg.product] if cfg.product is not None else [])
    clamped = [fmt for fmt in rounded_formats if cfg.underflow and fmt.subnormals]
    magic_exponent = BINARY32_SIGNIFICAND_BITS - 1
    operands_hold = (
        all(isinstance(fmt, FloatFormat) for fmt in (a, b))
        and datapath.multiplier_sig_bits <= BINARY32_SIGNIFICAND_BITS
        and all(fmt.emax < BINARY32_MAX_EXPONENT and fmt.emin - fmt.man_bits >= BINARY32_MIN_QUANTUM_EXPONENT
                for fmt in (a, b))
        and datapath.product_quantum_exponent >= BINARY32_MIN_NORMAL_EXPONENT
        and datapath.exact_product_exponent_range[1] < BINARY32_MAX_EXPONENT  # exact products below 2^128
    )
    if not operands_hold:
        return False
    native = native_sum_holds(cfg, datapath)
    return (
        (native or cfg.acc.man_bits <= BINARY32_MAX_MAN_BITS)
        and (cfg.product is None or cfg.product.man_bits <= BINARY32_MAX_MAN_BITS)
        and (datapath.sum_bound_exponent <= BINARY32_MAX_EXPONENT or range_fallback_holds(cfg, datapath))
        and all(BINARY32_MIN_NORMAL_EXPONENT <= fmt.emin - fmt.man_bits + magic_exponent < BINARY32_MAX_EXPONENT
                for fmt in clamped)
    )


def binary32_step(cfg: MacConfig, datapath: DatapathPlan) -> str:
    """The binary32-lane step for a configuration where binary32_lanes_hold (docs/simulator.md)."""
    if native_sum_holds(cfg, datapath):
        return STEP_NATIVE
    if datapath.sum_bound_exponent - datapath.product_quantum_exponent <= BINARY32_SIGNIFICAND_BITS:
        return STEP_EXACT_SUM
    return STEP_ROUND_TWICE if round_twice_holds(cfg, datapath) else STEP_ROUND_TO_ODD


def native_sum_holds(cfg: MacConfig, datapath: DatapathPlan) -> bool:
    """Whether the binary32 sum fl32(acc + p) is R_acc(acc + p) wherever it is finite (docs/simulator.md).

    The accumulator has binary32's 24 significant bits, rounds to nearest even, its saturation lies at or
    beyond binary32's overflow threshold (emax >= 127: a sum that saturates overflows binary32, and the lane
    is finished on binary64 lanes), and no non-zero sum lies below its min_normal (every value is a multiple
    of 2^product_quantum_exponent >= 2^emin), so neither flush nor subnormal clamp ever acts.
    """
    acc = cfg.acc
    return (
        acc.man_bits == BINARY32_SIGNIFICAND_BITS - 1
        and cfg.rounding == "rne"
        and acc.emax >= BINARY32_MAX_EXPONENT
        and datapath.product_quantum_exponent >= max(acc.emin, BINARY32_MIN_NORMAL_EXPONENT)
    )


def range_fallback_holds(cfg: MacConfig, datapath: DatapathPlan) -> bool:
    """Whether lanes whose sums leave binary32's range can be detected at the end (as Inf or NaN).

    For the native and round-twice steps only: a binary32 sum at or past 2^128 is +-Inf, and Inf or NaN
    stays non-finite through every later step (the bit-pattern rounding of an Inf or NaN with at least one
    kept fraction bit does not leave the all-ones exponent, and max_value is Inf in binary32 for emax >= 128;
    for emax = 127 the saturation clamps it to max_value, which is then R_acc of the sum). Round-to-odd's
    TwoSum of an Inf could produce a finite neighbour, so it keeps the 2^128 bound.
    """
    precision = cfg.acc.man_bits + 1
    return (
        cfg.acc.man_bits >= 1
        and (precision == BINARY32_SIGNIFICAND_BITS and native_sum_holds(cfg, datapath)
             or round_twice_holds(cfg, datapath))
    )


def round_twice_holds(cfg: MacConfig, datapath: DatapathPlan | None = None) -> bool:
    """Whether R_acc(fl32(acc + p)) = R_acc(acc + p) for every step (docs/simulator.md, "Round-twice").

    Rounding to nearest (RNE; saturation and flush act on the rounded value afterwards), binary32 neither
    underflows (binary32_lanes_hold) nor overflows (or the lane is finished on binary64 lanes), and with
    P = acc.man_bits + 1 and Pp the products' significant bits:

    - Pp <= P (products and chunk sums no wider than the accumulator): P + P <= 23 (Figueroa's theorem,
      24 >= 2P + 1);
    - Pp > P: P + Pp <= 23, and no accumulator value is swamped whole by a product that is a midpoint of the
      accumulator's grid: every non-zero accumulator value exceeds 2^(B - 25), B = product_bound_exponent.

    Both theorems are about a relative rounding (at the sum's binade); a subnormal clamp rounds sums below
    min_normal to a fixed quantum instead. Such sums are exact in binary32 where emin - q0 <= 24 (every
    value is a multiple of 2^q0, q0 = product_quantum_exponent), so the second rounding is the only one.
    """
    datapath = derive_datapath(cfg) if datapath is None else datapath
    precision = cfg.acc.man_bits + 1
    product_bits = datapath.product_sig_bits
    clamped = cfg.underflow and cfg.acc.subnormals
    if cfg.rounding != "rne":
        return False
    if clamped and cfg.acc.emin - datapath.product_quantum_exponent > BINARY32_SIGNIFICAND_BITS:
        return False
    if product_bits <= precision:
        return 2 * precision <= BINARY32_SIGNIFICAND_BITS - 1
    # The smallest non-zero accumulator value: min_normal with flush, the subnormal quantum with a clamp,
    # else (and at least) the chain's grid 2^q0.
    smallest = datapath.product_quantum_exponent
    if cfg.underflow:
        smallest = max(smallest, cfg.acc.emin - (cfg.acc.man_bits if cfg.acc.subnormals else 0))
    return (
        precision + product_bits <= BINARY32_SIGNIFICAND_BITS - 1
        and smallest > datapath.product_bound_exponent - BINARY32_SIGNIFICAND_BITS - 1
    )
