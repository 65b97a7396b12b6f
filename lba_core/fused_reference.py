"""The readable reference of fused dot-product accumulation (docs/arithmetic.md §9), on exact rationals.

Written from the contract alone, for reading beside it: every operand is decoded as s * 2^e, every aligned term
is an exact :class:`fractions.Fraction`, every truncation and rounding is done once from the exact value. One output
at a time is slow (pure Python); :func:`fused_matmul_reference` runs the same steps on whole arrays where binary64
is exact (lba_core.fused_reference_arrays). The fast kernels are tested against it, it is tested against an independent oracle
(tests/test_fused_oracle.py) and against MMA-Sim (tests/test_fused_mmasim.py).

Values outside the finite range exist only in IEEE outputs (``FusedAccumulator.ieee_output``): results are
Python floats, ``inf``/``-inf``/``nan`` included; every finite result is exact in binary64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Sequence

from .config import MacConfig
from .errors import ConfigError
from .formats import FloatFormat, floor_log2
from .fused import PROMOTION_FORMAT, FusedAccumulator
from .reference import round_to_format

if TYPE_CHECKING:
    import numpy as np

ZERO = Fraction(0)


@dataclass(frozen=True)
class GroupTerms:
    """One FDPA's terms: the L products (in order) then the addend, exact and truncated to F bits below e_max."""

    e_max: int
    exact: tuple[Fraction, ...]
    truncated: tuple[Fraction, ...]

    @property
    def total(self) -> Fraction:
        """The exact sum of the truncated terms, before the one rounding into the output."""
        return sum(self.truncated, ZERO)


def decode(x: Fraction, emin: int) -> tuple[Fraction, int]:
    """x = s * 2^e with 1 <= |s| < 2; below 2^emin (a subnormal) e = emin and |s| < 1. Zero gives (0, emin)."""
    e = emin if x == 0 else max(floor_log2(abs(x)), emin)
    return x / Fraction(2) ** e, e


def fused_acc_of(cfg: MacConfig) -> FusedAccumulator:
    if not isinstance(cfg.acc, FusedAccumulator):
        raise ConfigError(f"MacConfig.acc must be a fused accumulator (e.g. hopper-fp8) here, got {cfg.acc.name}")
    return cfg.acc


def operand(x: "Fraction | float | int", fmt: FloatFormat, what: str) -> Fraction:
    """The exact value of an operand, which must be a value of its format (operands arrive as codes)."""
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"{what} {x!r} is not a finite value of {fmt.name}")
    value = Fraction(x)
    if not fmt.is_representable(value):
        raise ValueError(f"{what} {float(value)!r} is not a value of {fmt.name}")
    return value


def group_terms(a: Sequence, b: Sequence, addend: "Fraction | float", cfg: MacConfig) -> GroupTerms:
    """Decode, align and truncate one group (docs §9 steps 1-3). ``addend`` must be finite here."""
    acc = fused_acc_of(cfg)
    if len(a) != len(b) or len(a) > acc.group:
        raise ValueError(f"a group holds 1..{acc.group} products in a and b of equal length, got {len(a)} and {len(b)}")
    significands, exponents = [], []
    for x, y in zip(a, b):
        s_a, e_a = decode(operand(x, cfg.a_format, "a operand"), cfg.a_format.emin)
        s_b, e_b = decode(operand(y, cfg.b_format, "b operand"), cfg.b_format.emin)
        significand = s_a * s_b  # in [1, 4) for normal operands: not renormalized
        significands.append(significand)
        exponents.append(e_a + e_b if significand != 0 else acc.e_zero)
    s_c, e_c = decode(Fraction(addend), acc.output.emin)
    significands.append(s_c)
    exponents.append(e_c if s_c != 0 else acc.e_zero)
    e_max = max(exponents)
    quantum = Fraction(2) ** (e_max - acc.fraction_bits)
    exact = tuple(s * Fraction(2) ** e for s, e in zip(significands, exponents))
    truncated = tuple(math.trunc(t / quantum) * quantum for t in exact)  # toward zero, no guard or sticky bit
    return GroupTerms(e_max, exact, truncated)


def round_ieee(x: Fraction, fmt: FloatFormat, rounding: str) -> float:
    """Round an exact value once into fmt read as an IEEE interchange format: the all-ones exponent code is
    Inf/NaN, so the largest finite binade is emax - 1; a rounded magnitude above the largest finite value is ±Inf
    (with either rounding mode, as MMA-Sim's RZ outputs do); a zero result is +0."""
    if x == 0:
        return 0.0
    top = fmt.emax - 1
    largest = Fraction((1 << (fmt.man_bits + 1)) - 1) * Fraction(2) ** (top - fmt.man_bits)
    e = max(floor_log2(abs(x)), fmt.emin)
    quantum = Fraction(2) ** (e - fmt.man_bits)
    steps = abs(x) / quantum
    n = math.floor(steps) if rounding == "rtz" else round(steps)  # Python's round() of a Fraction: ties to even
    magnitude = n * quantum
    if magnitude > largest:
        return math.copysign(math.inf, x)
    return float(magnitude if x > 0 else -magnitude) + 0.0


def round_output(x: Fraction, acc: FusedAccumulator) -> float:
    """The one rounding of an FDPA's exact sum into the accumulator's output format (docs §9 step 5)."""
    if acc.ieee_output:
        return round_ieee(x, acc.output, acc.output_rounding)
    return float(round_to_format(x, acc.output, acc.output_rounding, underflow=True).value) + 0.0


def fdpa(a: Sequence, b: Sequence, addend: "Fraction | float", cfg: MacConfig) -> float:
    """One fused dot-product-add: sum(a[i] * b[i]) + addend over one group of at most L products, as a float.

    A NaN addend gives NaN and an infinite addend passes through unchanged (the products are finite).
    """
    if isinstance(addend, float) and not math.isfinite(addend):
        for x, y in zip(a, b):
            operand(x, cfg.a_format, "a operand"), operand(y, cfg.b_format, "b operand")
        return addend
    return round_output(group_terms(a, b, addend, cfg).total, fused_acc_of(cfg))


def promote(total: float, partial: float, scale: float = 1.0) -> float:
    """total + scale * partial with one RNE rounding into fp32 (one fused multiply-add, docs §9 step 7)."""
    if not (math.isfinite(total) and math.isfinite(partial) and math.isfinite(scale)):
        result = total + scale * partial  # IEEE special cases: Inf propagates, Inf - Inf and 0 * Inf are NaN
        return math.nan if math.isnan(result) else result
    return round_ieee(Fraction(total) + Fraction(scale) * Fraction(partial), PROMOTION_FORMAT, "rne")


def fused_chain(a: Sequence, b: Sequence, addend: "Fraction | float", cfg: MacConfig) -> float:
    """FDPAs over consecutive groups of L products (the last may be shorter), each taking the previous result."""
    group = fused_acc_of(cfg).group
    c = addend
    for start in range(0, len(a), group):
        c = fdpa(a[start:start + group], b[start:start + group], c, cfg)
    return float(c) + 0.0


def fused_dot(a: Sequence, b: Sequence, cfg: MacConfig, addend: "Fraction | float" = 0.0,
              scales: "Sequence[float] | None" = None) -> float:
    """The dot product of a and b through the fused accumulator of cfg (docs §9).

    Without promotion the chain starts from ``addend`` (the C operand of an MMA). With ``promote_every`` = N,
    each block of N products is a chain from +0 whose result r_j is added into an fp32 register that starts at
    ``addend``: total <- RNE_fp32(total + s_j * r_j), one rounding, with s_j = ``scales[j]`` (default 1).
    """
    acc = fused_acc_of(cfg)
    if len(a) != len(b):
        raise ValueError(f"a and b must have the same length, got {len(a)} and {len(b)}")
    every = acc.promote_every
    if every is None:
        if scales is not None:
            raise ConfigError(f"per-block scales need promotion: {acc.name} has promote_every=None")
        return fused_chain(a, b, addend, cfg)
    blocks = range(0, len(a), every)
    if scales is not None and len(scales) != len(blocks):
        raise ValueError(f"scales must hold one value per block of {every} products ({len(blocks)}), got {len(scales)}")
    total = float(addend)
    for j, start in enumerate(blocks):
        scale = 1.0 if scales is None else scales[j]
        if isinstance(scale, float) and math.isfinite(scale) and not PROMOTION_FORMAT.is_representable(scale):
            raise ValueError(f"scales[{j}]={scale!r} is not an fp32 value")
        partial = fused_chain(a[start:start + every], b[start:start + every], 0.0, cfg)
        total = promote(total, partial, scale)
    return total


def fused_matmul_reference(A, B, cfg: MacConfig, addend=None, scales_a=None, scales_b=None) -> np.ndarray:
    """Y[i, j] = fused_dot(A[i, :], B[:, j]) for A of shape (M, K) and B of shape (K, N), as float64 (M, N).

    ``addend`` (M, N) is the C operand. ``scales_a`` (M, blocks) and ``scales_b`` (blocks, N) are per-block
    scales (with promotion only); block j of output (i, k) is scaled by RNE_fp32(scales_a[i, j] * scales_b[j, k]).
    The same steps run on all outputs at once in binary64 (lba_core.fused_reference_arrays) wherever binary64
    holds every value exactly (all presets), and output by output on Fractions (fused_dot) elsewhere.
    """
    import numpy as np  # here, not at the top: lba_core (and so rtl) loads no numerical stack (docs/rtl.md)

    from . import fused_reference_arrays as arrays

    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"A must be (M, K) and B (K, N), got {A.shape} and {B.shape}")
    rows, cols = A.shape[0], B.shape[1]
    C = np.zeros((rows, cols)) if addend is None else np.broadcast_to(np.asarray(addend, dtype=np.float64), (rows, cols))
    if (scales_a is None) != (scales_b is None):
        raise ValueError("give both scales_a and scales_b, or neither")
    acc = fused_acc_of(cfg)
    if scales_a is not None and acc.promote_every is None:
        raise ConfigError(f"per-block scales need promotion: {acc.name} has promote_every=None")

    def block_scale(i: int, k: int, j: int) -> float:
        return round_ieee(Fraction(float(scales_a[i][j])) * Fraction(float(scales_b[j][k])), PROMOTION_FORMAT, "rne")

    if not arrays.exact_in_binary64(cfg, acc):
        Y = np.empty((rows, cols))
        blocks = 0 if acc.promote_every is None else len(range(0, A.shape[1], acc.promote_every))
        for i in range(rows):
            a = A[i].tolist()
            for k in range(cols):
                scales = None if scales_a is None else [block_scale(i, k, j) for j in range(blocks)]
                Y[i, k] = fused_dot(a, B[:, k].tolist(), cfg, float(C[i, k]), scales)
        return Y
    arrays.check_operands(A, cfg.a_format, "a operand")
    arrays.check_operands(B, cfg.b_format, "b operand")
    if acc.promote_every is None:
        return arrays.chain(A, B, C, cfg, acc)
    total, zeros = np.array(C), np.zeros((rows, cols))
    for j, start in enumerate(range(0, A.shape[1], acc.promote_every)):
        stop = start + acc.promote_every
        partial = arrays.chain(A[:, start:stop], B[start:stop], zeros, cfg, acc)
        scale = np.ones((rows, cols)) if scales_a is None else np.array(
            [[block_scale(i, k, j) for k in range(cols)] for i in range(rows)])
        promoted, done = arrays.promote(total, partial, scale)
        for i, k in zip(*np.nonzero(~done)):  # sums binary64 does not hold exactly: on Fractions
            promoted[i, k] = promote(float(total[i, k]), float(partial[i, k]), float(scale[i, k]))
        total = promoted
    return total
