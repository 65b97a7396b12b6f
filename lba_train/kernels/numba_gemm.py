"""The CPU GEMM kernel: every output's accumulation chain, bit-true, in parallel tiles (Numba).

Outputs are cut into tiles of TILE_ROWS x TILE_COLS; tiles run in parallel (``prange``) and each walks
k = 0 .. K-1 in order, updating its rows of accumulators from a contiguous row of W, which lets LLVM vectorize
the branch-free steps across outputs. The order of the steps inside one chain is the contract's; tiles are
independent, so the result does not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .plan import STEP_EXACT_SUM, STEP_GENERAL, STEP_ROUND_TO_ODD

# Numba branches on integers, not on the plan's strings.
EXACT_SUM_CODE, ROUND_TO_ODD_CODE, GENERAL_CODE = 0, 1, 2
STEP_CODES = {STEP_EXACT_SUM: EXACT_SUM_CODE, STEP_ROUND_TO_ODD: ROUND_TO_ODD_CODE, STEP_GENERAL: GENERAL_CODE}

TILE_ROWS = 4
TILE_COLS = 64
TWO_POW_52 = 2.0**52  # adding and subtracting it rounds a value in [0, 2^52) to an integer, ties to even


@njit(cache=True)
def round_binary64(value, spec):
    """R_F of a binary64 ``value`` that stands for the exact real; returns (result, overflowed, underflowed).

    ``value`` is either the exact value itself or its rounding to odd at 53 bits (see round_sum_odd);
    both round to F as the exact value does. The rounding adds half a unit (less one, plus the kept bit
    for ties to even) to the bit pattern and clears the dropped bits; a carry moves into the exponent as it
    should. No branches on the data (masks and selects only), so that LLVM vectorizes the calling loop.
    Needs man_bits <= 50 and a normal (or zero) binary64 value, which GemmPlan.step guarantees.
    """
    man_bits, _, max_value, min_normal, clamp, flush, toward_zero, quantum, inverse_quantum = spec
    bits = np.float64(value).view(np.int64)
    shift = 52 - man_bits
    dropped = (np.int64(1) << shift) - 1
    if not toward_zero:
        bits += (dropped >> 1) + ((bits >> shift) & 1)
    magnitude = abs(np.int64(bits & ~dropped).view(np.float64))
    if clamp:
        # Below min_normal the quantum is fixed at the subnormal step: round the scaled value to an integer.
        scaled = abs(value) * inverse_quantum
        nearest = (scaled + TWO_POW_52) - TWO_POW_52
        steps = nearest - (nearest > scaled) if toward_zero else nearest
        magnitude = steps * quantum if abs(value) < min_normal else magnitude
    overflowed = magnitude > max_value
    magnitude = max_value if overflowed else magnitude
    if flush:
        magnitude = 0.0 if magnitude < min_normal else magnitude
    return math.copysign(magnitude, value) + 0.0, overflowed, (magnitude == 0.0) & (value != 0.0)


@njit(cache=True)
def round_sum_exact(a, b, spec):
    """R_F(a + b) where the plan proved that binary64 holds every such sum exactly (STEP_EXACT_SUM)."""
    return round_binary64(a + b, spec)


@njit(cache=True)
def round_sum_odd(a, b, spec):
    """R_F(a + b) of the exact sum via rounding to odd (STEP_ROUND_TO_ODD); (value, overflowed, underflowed).

    TwoSum gives the exact sum as high + low. Where low != 0, replacing high by its odd neighbour on the
    side of the exact sum rounds the sum to odd at 53 bits: it then lies strictly between the same
    even 53-bit grid points as the exact value, and rounding it once more to man_bits + 1 <= 51 bits equals
    one rounding of the exact sum (Boldo & Melquiond; docs/simulator.md).
    """
    high = a + b
    b_virtual = high - a
    low = (a - (high - b_virtual)) + (b - b_virtual)
    bits = np.float64(high).view(np.int64)
    low_bits = np.float64(low).view(np.int64)
    inexact_and_even = -(np.int64(low != 0.0) & ~bits & 1)  # all ones or zero
    toward = ((low_bits ^ bits) >> 63) | 1  # +1 when low has high's sign (away from zero), -1 otherwise
    return round_binary64(np.int64(bits + (inexact_and_even & toward)).view(np.float64), spec)


@njit(cache=True)
def round_sum_general(a, b, spec):
    """R_F(a + b) of the exact sum for any plan; returns (value, overflowed, underflowed).

    TwoSum gives the exact sum x = high + low, |low| <= ulp(high) / 2. x lies in high's binade, one lower
    when high is a power of two and low pulls toward zero. On that binade's quantum q, |high| / q = steps +
    rest (both exact) and the exact remainder is rest + low / q. Because rest is a multiple of ulp(high) / q,
    it decides the rounding except when rest is 0 or 1/2, where the sign of low does; working in units of q
    and testing the sign of the unscaled low keeps this exact even where low / q underflows.
    """
    man_bits, emin, max_value, min_normal, clamp, flush, toward_zero, _, _ = spec
    high = a + b
    if math.isinf(high):  # |a + b| >= 2^1024 - 2^970 exceeds every format's max
        return math.copysign(max_value, high), True, False
    if high == 0.0:  # binary64 addition gives 0 only for an exactly zero sum
        return 0.0, False, False
    b_virtual = high - a
    low = (a - (high - b_virtual)) + (b - b_virtual)
    magnitude = abs(high)
    error = low if high > 0.0 else -low
    fraction, frexp_exponent = math.frexp(magnitude)
    exponent = frexp_exponent - 1
    if fraction == 0.5 and error < 0.0:
        exponent -= 1
    if clamp and exponent < emin:
        exponent = emin
    quantum_exponent = exponent - man_bits
    scaled = math.ldexp(magnitude, -quantum_exponent)
    steps = math.floor(scaled)
    rest = scaled - steps
    if rest == 0.0 and error < 0.0:
        steps -= 1.0
        beyond_half = 0.5 + math.ldexp(error, -quantum_exponent)
    elif rest == 0.5:
        beyond_half = error
    else:
        beyond_half = (rest - 0.5) + math.ldexp(error, -quantum_exponent)
    if not toward_zero and (beyond_half > 0.0 or (beyond_half == 0.0 and steps % 2.0 == 1.0)):
        steps += 1.0
    rounded = math.ldexp(steps, quantum_exponent)
    overflowed = rounded > max_value
    if overflowed:
        rounded = max_value
    if flush and rounded < min_normal:
        rounded = 0.0
    return math.copysign(rounded, high) + 0.0, overflowed, rounded == 0.0


# One loop per step algorithm, identical but for the roundings it calls: a loop that could call either would
# not be vectorized (the general step calls libm), Numba caches no kernel that takes functions as arguments,
# and LLVM stops inlining (and so vectorizing) when the step sits behind one more function call.
# "No product format" and "no event counting" arrive as None: Numba compiles a separate specialization for a
# None argument and prunes the branch, which runtime flags did not achieve (measured 3x slower).
@njit(cache=True)
def mac_tile_exact_sum(x, w, k, row0, column0, partial, prod_spec, acc_spec, events):
    """partial[r, j] <- FMAq(x[row0 + r, k], w[k, column0 + j], partial[r, j]); adds the events up."""
    overflows = underflows = swamps = 0
    for r in range(partial.shape[0]):
        a = x[row0 + r, k]
        for j in range(partial.shape[1]):
            p = a * w[k, column0 + j]  # exact: plan_gemm checked that products fit in binary64
            product_overflowed = product_underflowed = False
            if prod_spec is not None:
                p, product_overflowed, product_underflowed = round_binary64(p, prod_spec)
            previous = partial[r, j]
            value, overflowed, underflowed = round_sum_exact(previous, p, acc_spec)
            partial[r, j] = value
            if events is not None:
                overflows += overflowed | product_overflowed
                underflows += underflowed | product_underflowed
                swamps += (p != 0.0) & (value == previous)
    if events is not None:
        events[0] += overflows
        events[1] += underflows
        events[2] += swamps


@njit(cache=True)
def mac_tile_round_to_odd(x, w, k, row0, column0, partial, prod_spec, acc_spec, events):
    """partial[r, j] <- FMAq(x[row0 + r, k], w[k, column0 + j], partial[r, j]); adds the events up."""
    overflows = underflows = swamps = 0
    for r in range(partial.shape[0]):
        a = x[row0 + r, k]
        for j in range(partial.shape[1]):
            p = a * w[k, column0 + j]  # exact: plan_gemm checked that products fit in binary64
            product_overflowed = product_underflowed = False
            if prod_spec is not None:
                p, product_overflowed, product_underflowed = round_binary64(p, prod_spec)
            previous = partial[r, j]
            value, overflowed, underflowed = round_sum_odd(previous, p, acc_spec)
            partial[r, j] = value
            if events is not None:
                overflows += overflowed | product_overflowed
                underflows += underflowed | product_underflowed
                swamps += (p != 0.0) & (value == previous)
    if events is not None:
        events[0] += overflows
        events[1] += underflows
        events[2] += swamps


@njit(cache=True)
def mac_tile_general(x, w, k, row0, column0, partial, prod_spec, acc_spec, events):
    """partial[r, j] <- FMAq(x[row0 + r, k], w[k, column0 + j], partial[r, j]); adds the events up."""
    overflows = underflows = swamps = 0
    for r in range(partial.shape[0]):
        a = x[row0 + r, k]
        for j in range(partial.shape[1]):
            p = a * w[k, column0 + j]  # exact: plan_gemm checked that products fit in binary64
            product_overflowed = product_underflowed = False
            if prod_spec is not None:
                p, product_overflowed, product_underflowed = round_sum_general(p, 0.0, prod_spec)
            previous = partial[r, j]
            value, overflowed, underflowed = round_sum_general(previous, p, acc_spec)
            partial[r, j] = value
            if events is not None:
                overflows += overflowed | product_overflowed
                underflows += underflowed | product_underflowed
                swamps += (p != 0.0) & (value == previous)
    if events is not None:
        events[0] += overflows
        events[1] += underflows
        events[2] += swamps


@njit(cache=True)
def round_step(previous, addend, acc_spec, step):
    """R_acc(previous + addend) with the algorithm ``step`` selects: (value, overflowed, underflowed)."""
    if step == EXACT_SUM_CODE:
        return round_sum_exact(previous, addend, acc_spec)
    if step == ROUND_TO_ODD_CODE:
        return round_sum_odd(previous, addend, acc_spec)
    return round_sum_general(previous, addend, acc_spec)


@njit(cache=True)
def add_chunk(total, partial, acc_spec, step, events):
    """The chunk adder over a tile: total <- R_acc(total + partial), then partial <- 0."""
    for r in range(total.shape[0]):
        for j in range(total.shape[1]):
            previous = total[r, j]
            addend = partial[r, j]
            value, overflowed, underflowed = round_step(previous, addend, acc_spec, step)
            total[r, j] = value
            partial[r, j] = 0.0
            if events is not None:
                events[0] += overflowed
                events[1] += underflowed
                events[2] += (addend != 0.0) & (value == previous)


@njit(cache=True)
def run_tile(x, w, row0, column0, height, width, prod_spec, acc_spec, chunk, step, out, events):
    """Every chain of one tile of outputs, k in order; writes the tile of ``out`` and adds to ``events``."""
    length = x.shape[1]
    partial = np.zeros((height, width))
    total = np.zeros((height, width))
    for k in range(length):
        if step == EXACT_SUM_CODE:
            mac_tile_exact_sum(x, w, k, row0, column0, partial, prod_spec, acc_spec, events)
        elif step == ROUND_TO_ODD_CODE:
            mac_tile_round_to_odd(x, w, k, row0, column0, partial, prod_spec, acc_spec, events)
        else:
            mac_tile_general(x, w, k, row0, column0, partial, prod_spec, acc_spec, events)
        if chunk > 0 and ((k + 1) % chunk == 0 or k == length - 1):
            add_chunk(total, partial, acc_spec, step, events)
    out[row0 : row0 + height, column0 : column0 + width] = total if chunk > 0 else partial


@njit(parallel=True, cache=True)
def gemm_tiles(x, w, prod_spec, acc_spec, chunk, step, out, tile_events):
    """Fill ``out[b]`` with X[b] @ W[b] on the accumulator and, unless it is None, ``tile_events`` per tile."""
    rows = x.shape[1]
    columns = w.shape[2]
    column_tiles = (columns + TILE_COLS - 1) // TILE_COLS
    per_entry = (rows + TILE_ROWS - 1) // TILE_ROWS * column_tiles
    for tile in prange(x.shape[0] * per_entry):
        entry = tile // per_entry
        within = tile % per_entry
        row0 = (within // column_tiles) * TILE_ROWS
        column0 = (within % column_tiles) * TILE_COLS
        height = min(rows, row0 + TILE_ROWS) - row0
        width = min(columns, column0 + TILE_COLS) - column0
        if tile_events is None:
            run_tile(x[entry], w[entry], row0, column0, height, width, prod_spec, acc_spec, chunk, step, out[entry],
                     None)
        else:
            run_tile(x[entry], w[entry], row0, column0, height, width, prod_spec, acc_spec, chunk, step, out[entry],
                     tile_events[tile])


def gemm(x, w, prod_spec, acc_spec, chunk, step, count):
    """Y[b] = X[b] @ W[b] on the accumulator for C-contiguous float64 arrays (B, M, K), (B, K, N).

    ``chunk`` <= 0: one chain, no chunk adder; ``prod_spec`` is None for a configuration without a product
    format. Returns (Y, events), events = [overflow, underflow, swamp] step counts (zeros unless ``count``).
    """
    batch, rows, _ = x.shape
    columns = w.shape[2]
    out = np.zeros((batch, rows, columns))
    tiles = batch * -(-rows // TILE_ROWS) * -(-columns // TILE_COLS)
    tile_events = np.zeros((tiles, 3), dtype=np.int64)
    gemm_tiles(x, w, prod_spec, acc_spec, chunk, STEP_CODES[step], out, tile_events if count else None)
    return out, tile_events.sum(axis=0)


@njit(parallel=True, cache=True)
def round_array(x, spec, bit_pattern, values, overflowed, underflowed):
    """values <- R_F(x) elementwise for a flat float64 array, with the overflow and underflow masks.

    ``bit_pattern``: the spec admits round_binary64 (man_bits <= 50, a usable subnormal quantum), which then
    rounds every normal (or zero) x; binary64 subnormals, and every x otherwise, take round_sum_general(x, 0),
    which is exact for any finite value; +-Inf saturates. Returns the number of NaNs (nothing is rounded then).
    """
    nans = 0
    for i in prange(x.shape[0]):
        nans += x[i] != x[i]
    if nans:
        return nans
    for i in prange(x.shape[0]):
        value = x[i]
        if math.isinf(value):
            values[i] = math.copysign(spec[2], value)
            overflowed[i] = True
            underflowed[i] = False
        elif bit_pattern and (value == 0.0 or abs(value) >= 2.2250738585072014e-308):
            values[i], overflowed[i], underflowed[i] = round_binary64(value, spec)
        else:
            values[i], overflowed[i], underflowed[i] = round_sum_general(value, 0.0, spec)
    return 0
