"""The fused kernel's per-output steps (fused_numba), on the bit patterns of its lane dtype, binary32 or binary64.

Per output and group: :func:`group_start` takes the running result (the addend) and the group's largest
product exponent to e_max, the group's quantum 2^(e_max - F), the products' scale and the addend's truncated
term; :func:`round_output` rounds the group's exact sum once into the output. Both work in the lanes of the
GEMM (16 binary32 lanes per AVX-512 register with binary32 lanes, not 8 binary64 ones), on integers of the
lane's width, branch-free, so that LLVM vectorizes the loops over a tile's columns that call them. Every step
is exact under fused_plan.lane_dtype's conditions (docs/simulator.md, "Why they are exact").
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .fused_plan import FusedSpec, output_limits, scale_floor


def bits_of(value):
    """The bit pattern of a binary32 or binary64 value as an int32 or int64 (typed by :func:`_bits_of`)."""


@overload(bits_of)
def _bits_of(value):
    if value == types.float32:
        return lambda value: np.float32(value).view(np.int32)
    return lambda value: np.float64(value).view(np.int64)


def float_of(bits):
    """The binary32 or binary64 value of an int32 or int64 bit pattern (typed by :func:`_float_of`)."""


@overload(float_of)
def _float_of(bits):
    if bits == types.int32:
        return lambda bits: np.int32(bits).view(np.float32)
    return lambda bits: np.int64(bits).view(np.float64)


def lane_layout(value):
    """(mantissa bits, exponent bias, the exponent field's largest code) of a binary32 or binary64 value, as
    constants of the integer type of its width (typed by :func:`_lane_layout`: LLVM folds them)."""


@overload(lane_layout)
def _lane_layout(value):
    if value == types.float32:
        return lambda value: (np.int32(23), np.int32(127), np.int32(255))
    return lambda value: (np.int64(52), np.int64(1023), np.int64(2047))


def lane_steps(spec: FusedSpec, lane: type) -> tuple[tuple, tuple]:
    """The per-output steps' constants in lanes of ``lane`` (np.float32 or np.float64): (integers of the
    lane's width, in the order of the names below; lane values: the output's subnormal magic 2^(out_emin -
    out_frac + mantissa bits), its subnormal quantum 2^(out_emin - out_frac), 2^out_emin, the value an
    overflowing result takes). Exponents are biased as the lane's; fused_plan.lane_dtype guarantees they fit."""
    info = np.finfo(lane)
    mantissa, bias = info.nmant, info.maxexp - 1
    top = spec.out_emax + 1 + bias  # the biased exponent of 2^(out_emax + 1): an overflow from there on
    floor = math.frexp(scale_floor(spec))[1] - 1
    narrow = np.int32 if lane == np.float32 else np.int64
    ints = tuple(narrow(value) for value in (spec.out_emin + bias, spec.e_zero + bias, floor + bias, spec.fraction_bits,
                                             mantissa - spec.out_frac, min(top, 2 * bias + 1) << mantissa))
    _, _, _, _, overflow_value = output_limits(spec)
    quantum = 2.0 ** (spec.out_emin - spec.out_frac)
    floats = tuple(lane(value) for value in (quantum * 2.0**mantissa, quantum, 2.0**spec.out_emin, overflow_value))
    return ints, floats


#: The order of lane_steps' integers.
OUT_EMIN, E_ZERO, FLOOR, FRACTION_BITS, DROP, OVERFLOW_BITS = range(6)


@njit(cache=True)
def round_output(exact, total, ints, floats, rne):
    """R_out of ``exact``, the lane value of the group's integer sum ``total`` times 2^(e_max - F) (exact:
    ``total`` has at most the lane's significand bits and the quantum is a lane value); returns (result,
    overflowed, underflowed) in the lane dtype. ``ints``, ``floats`` = :func:`lane_steps`.

    From the output's smallest normal 2^out_emin up, the dropped fraction bits of the bit pattern are cleared
    (RZ) or rounded to nearest even first (a carry moves into the exponent as it should); below it the magic
    addition rounds to the subnormal quantum (to nearest even; RZ steps back one quantum where that rounded up).
    A result of 2^(out_emax + 1) or more (compared on the bit patterns: 2^128 is binary32's Inf) is +-Inf (or,
    saturating, the largest value); -0 becomes +0. No branches on the data and no library calls, so that LLVM
    vectorizes the calling loop.
    """
    narrow = type(ints[0])
    drop = ints[DROP]
    magic, quantum, register_min, overflow_value = floats[0], floats[1], floats[2], floats[3]
    dropped = narrow((narrow(1) << drop) - 1)
    bits = bits_of(exact)
    if rne:
        bits = narrow(bits + ((dropped >> 1) + ((bits >> drop) & 1)))
    normal = abs(float_of(narrow(bits & ~dropped)))
    size = abs(exact)
    small = (size + magic) - magic
    if not rne:
        small = small - quantum if small > size else small
    magnitude = small if size < register_min else normal
    overflowed = bits_of(magnitude) >= ints[OVERFLOW_BITS]
    magnitude = overflow_value if overflowed else magnitude
    sign = narrow(bits_of(exact) ^ bits_of(size)) if magnitude != 0 else narrow(0)
    return float_of(narrow(bits_of(magnitude) | sign)), overflowed, (magnitude == 0) & (total != 0)


@njit(cache=True)
def group_start(c, e, below, ints):
    """For a running result ``c`` (the addend) and the group's largest product exponent code ``e``: (2^(e_max -
    F), the products' scale 2^(F - max(e_max, floor)), the addend's truncated term), on bit patterns.

    e_max is the largest of e (where it is above ``below``: a product that is not zero) and c's own exponent
    (at least out_emin; e_zero when c is 0; 0 when c is Inf, which passes through). 2^(e_max - F) below the
    lane's normal range is built 2^64 higher and scaled down (exact: it is a lane subnormal); the scale is 0
    where it would be subnormal (every product then truncates to 0 anyway). The addend's term c * 2^(F - e_max)
    lies below 2^(F + 1) but 2^(F - e_max) need not be a lane value (e_max down to e_zero), so where e_max < 0
    c is first scaled by 2^64 (it is then below 2^64, exact); the conversion truncates toward zero.
    """
    mantissa, bias, ones = lane_layout(c)
    narrow = type(mantissa)
    fraction_bits = ints[FRACTION_BITS]
    field = narrow((bits_of(c) >> mantissa) & ones)
    infinite = field == ones  # a running result is never NaN
    c_exponent = narrow(ints[E_ZERO] if c == 0 else (bias if infinite else max(field, ints[OUT_EMIN])))
    e_max = narrow(max(c_exponent, narrow(e) + bias) if e > below else c_exponent)  # biased
    exponent = narrow(e_max - fraction_bits)  # of 2^(e_max - F), biased
    lane = type(c)
    lifted = float_of(narrow((exponent + 64) << mantissa)) * lane(2.0**-64)  # where exponent < 1
    unit = float_of(narrow(max(exponent, 1) << mantissa)) if exponent >= 1 else lifted
    scale = float_of(narrow(max(2 * bias + fraction_bits - max(e_max, ints[FLOOR]), 0) << mantissa))
    low = e_max < bias
    addend = c * lane(2.0**64) if low else c
    power = float_of(narrow((2 * bias + fraction_bits - e_max - (64 if low else 0)) << mantissa))
    return unit, scale, narrow(0) if infinite else narrow(addend * power)
