"""The CPU kernel of the fused (tensor-core) dot-product accumulator (docs/arithmetic.md §9), bit-true (Numba).

Every operand comes with its power 2^e (:func:`operand_powers`, which also checks that it is a value of its
format). Per output and per group of L products: e_max, the largest of 2^(e_a + e_b) over the products
(one exact multiplication of powers; a zero product counts as 2^e_zero) and of the running result's own
exponent (the addend); every term a * b * 2^(F - e_max) truncated toward zero (``trunc``: the products and
the power-of-two scaling are exact in the lane dtype, so the truncation is the only rounding and it is the
contract's); the exact sum of those integers; one rounding of sum * 2^(e_max - F) into the output
(:func:`round_output`). With promotion, every ``promote_every`` products the chain's result is added into an
fp32 accumulator (binary32 addition: one RNE rounding) and the chain restarts from +0. docs/simulator.md
explains why every step is exact.

Tiles of rows x columns run in parallel (``prange``); inside a tile the loops over columns are branch-free
so that LLVM vectorizes them. The result does not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .fused_plan import FusedSpec, output_limits, lane_dtype, needs_zero_select, scale_floor

TILE_ROWS = 8
TILE_COLS = 256
# Per-tile statistics, in this order (float64, exact for counts below 2^53).
STAT_OVERFLOW, STAT_UNDERFLOW, STAT_TERMS, STAT_ZEROED, STAT_MASS, STAT_TRUNCATED = range(6)
STAT_COUNT = 6
TWO_POW_52 = 2.0**52


EXPONENT_BITS = np.int64(0x7FF0000000000000)


@njit(cache=True)
def powers_of(values, man, emin, powers):
    """powers[i] <- 2^e of values[i] (e = max(floor(log2 |v|), emin); 0 for zero), for a flat float64 array;
    returns how many entries are not values with ``man`` fraction bits (|v| / 2^e * 2^man an integer below
    2^(man + 1)), Inf and NaN among them."""
    bad = 0
    smallest = math.ldexp(1.0, emin)
    fraction_scale = math.ldexp(1.0, man)
    for i in range(values.shape[0]):
        value = values[i]
        power = max(np.int64(np.float64(value).view(np.int64) & EXPONENT_BITS).view(np.float64), smallest)
        scaled = abs(value) / power * fraction_scale
        ok = (scaled == np.trunc(scaled)) & (scaled < 2.0 * fraction_scale)
        powers[i] = 0.0 if value == 0.0 else power
        bad += (value != 0.0) & ~ok
    return bad


def operand_powers(values: np.ndarray, man: int, emin: int, name: str) -> np.ndarray:
    """2^e of every operand (float64, 0 for zero) after checking that every entry is a value of the format
    (ValueError naming ``name`` otherwise)."""
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    powers = np.empty_like(flat)
    bad = powers_of(flat, man, emin, powers)
    if bad:
        raise ValueError(f"fused GEMM: {bad} entries of {name} are not finite values with {man} fraction bits")
    return powers.reshape(values.shape)


@njit(cache=True)
def round_output(value, spec, limits):
    """R_out of ``value`` (binary64, the exact group sum); returns (result, overflowed, underflowed).

    ``limits`` = fused_plan.output_limits(spec). Above the output's
    smallest normal 2^out_emin the dropped fraction bits of the bit pattern are cleared (RZ) or rounded to
    nearest even first (a carry moves into the exponent as it should); below it the quantum is
    2^(out_emin - out_frac). A result of 2^(out_emax + 1) or more is +-Inf (or, saturating, the largest value);
    -0 becomes +0. No branches on the
    data and no library calls, so that LLVM vectorizes the calling loop.
    """
    quantum, inverse_quantum, register_min, overflow, overflow_value = limits[0], limits[1], limits[2], limits[3], limits[4]
    drop = 52 - spec.out_frac
    dropped = (np.int64(1) << drop) - 1
    bits = np.float64(value).view(np.int64)
    if spec.rne:
        bits += (dropped >> 1) + ((bits >> drop) & 1)
    normal = abs(np.int64(bits & ~dropped).view(np.float64))
    steps = abs(value) * inverse_quantum  # exact: a power-of-two scaling
    if spec.rne:
        steps = (steps + TWO_POW_52) - TWO_POW_52  # ties to even, for steps < 2^52 (the only ones kept)
    small = np.trunc(steps) * quantum
    magnitude = small if abs(value) < register_min else normal
    overflowed = magnitude >= overflow
    magnitude = overflow_value if overflowed else magnitude
    return math.copysign(magnitude, value) + 0.0, overflowed, (magnitude == 0.0) & (value != 0.0)


@njit(cache=True)
def group_max(px, pw, i, k0, k1, powers):
    """powers[j] <- max(powers[j], 2^(e_a + e_b) over the group) (a zero product gives 0)."""
    width = powers.shape[0]
    for k in range(k0, k1):
        pa = px[i, k]
        for j in range(width):
            powers[j] = max(powers[j], pa * pw[k, j])


@njit(cache=True)
def group_max_zero(x, px, pw, w, i, k0, k1, powers, zero_power):
    """group_max where a product's exponent can lie below e_zero: a zero product counts as 2^e_zero."""
    width = powers.shape[0]
    for k in range(k0, k1):
        pa = px[i, k]
        a = x[i, k]
        for j in range(width):
            power = pa * pw[k, j]
            power = power if a * w[k, j] != 0 else zero_power
            powers[j] = max(powers[j], power)


@njit(cache=True)
def group_sum(x, w, i, k0, k1, scales, sums):
    """sums[j] += the truncated terms trunc(a * b * 2^(F - e_max)) of the group (each exact)."""
    width = sums.shape[0]
    for k in range(k0, k1):
        a = x[i, k]
        for j in range(width):
            sums[j] += np.trunc(a * w[k, j] * scales[j])


@njit(cache=True)
def group_stats(x, w, i, k0, k1, scales, stats):
    """The truncation statistics of the group's products (nonzero terms, zeroed, |a*b| mass, mass lost)."""
    width = scales.shape[0]
    for k in range(k0, k1):
        a = np.float64(x[i, k])
        for j in range(width):
            exact = abs(a * np.float64(w[k, j]))
            if exact != 0.0:
                scale = np.float64(scales[j])
                kept = np.trunc(exact * scale)
                stats[STAT_TERMS] += 1.0
                stats[STAT_ZEROED] += kept == 0.0
                stats[STAT_MASS] += exact
                stats[STAT_TRUNCATED] += exact - kept / scale


@njit(cache=True)
def run_tile(x, w, px, pw, consts, limits, row0, col0, height, width, spec, zero_select, out, stats):
    """Every output of one tile: the fused chain over k in groups of L, promotion, the stats when asked.

    ``x``, ``w`` hold the operand values and ``px``, ``pw`` their powers 2^e (0 for a zero operand), all in
    one float dtype D in which every product, term and group sum is exact (fused_plan.lane_dtype);
    ``consts`` = [2^F, 2^e_zero, 1, 2^out_emin, floor] in D: e_max is taken as at least ``floor``, which is
    below every nonzero term's exponent, so that 2^(F - e_max) stays finite in D when every term is zero.
    """
    length = x.shape[1]
    group = spec.group
    big_f, zero_power, one, register_min, scale_floor = consts[0], consts[1], consts[2], consts[3], consts[4]
    promote = spec.promote_every if spec.promote_every > 0 else length
    chain = np.zeros((height, width), dtype=x.dtype)
    promoted = np.zeros((height, width), dtype=np.float32)
    for r in range(height):  # ``out`` holds the addend C on entry: the chain's start, or the fp32 total's
        for j in range(width):
            if spec.promote_every > 0:
                promoted[r, j] = out[row0 + r, col0 + j]
            else:
                chain[r, j] = out[row0 + r, col0 + j]
    powers = np.empty(width, dtype=x.dtype)
    scales = np.empty(width, dtype=x.dtype)
    sums = np.empty(width, dtype=x.dtype)
    unit = math.ldexp(1.0, -spec.fraction_bits)
    for k0 in range(0, length, group):
        k1 = min(k0 + group, length)
        for r in range(height):
            i = row0 + r
            c_row = chain[r]
            for j in range(width):  # the addend's exponent: 2^floor(log2 |c|), at least 2^out_emin
                c = c_row[j]
                bits = np.int64(np.float64(c).view(np.int64) & np.int64(0x7FF0000000000000))
                power = max(bits.view(np.float64), np.float64(register_min))
                powers[j] = zero_power if c == 0 else (one if math.isinf(c) else power)
            if zero_select:
                group_max_zero(x, px, pw, w, i, k0, k1, powers, zero_power)
            else:
                group_max(px, pw, i, k0, k1, powers)
            for j in range(width):
                scales[j] = big_f / max(powers[j], scale_floor)  # 2^(F - e_max), exact
                sums[j] = np.trunc(c_row[j] * scales[j])
            group_sum(x, w, i, k0, k1, scales, sums)
            if stats is not None:
                group_stats(x, w, i, k0, k1, scales, stats)
            for j in range(width):
                exact = np.float64(sums[j]) * (np.float64(powers[j]) * unit)
                value, overflowed, underflowed = round_output(exact, spec, limits)
                c = c_row[j]
                c_row[j] = c if math.isinf(c) else value
                if stats is not None:
                    stats[STAT_OVERFLOW] += overflowed and not math.isinf(c)
                    stats[STAT_UNDERFLOW] += underflowed
        if spec.promote_every > 0 and (k1 % promote == 0 or k1 == length):
            for r in range(height):
                for j in range(width):
                    promoted[r, j] = promoted[r, j] + np.float32(chain[r, j])  # binary32: one RNE rounding
                    chain[r, j] = 0
    for r in range(height):
        for j in range(width):
            out[row0 + r, col0 + j] = np.float64(promoted[r, j]) if spec.promote_every > 0 else chain[r, j]


@njit(parallel=True, cache=True)
def gemm_tiles(x, w, px, pw, consts, limits, spec, zero_select, out, tile_stats):
    """Replace ``out[b]`` (the addend C on entry) by the fused X[b] @ W[b] + C; ``tile_stats`` (None: not
    counted) per tile.

    ``w`` and ``pw`` come packed by column tile, (B, tiles, K, TILE_COLS), so that every row a tile reads is
    contiguous and indexed from 0 (LLVM then vectorizes without gathers).
    """
    rows = x.shape[1]
    columns = out.shape[2]
    column_tiles = w.shape[1]
    per_entry = (rows + TILE_ROWS - 1) // TILE_ROWS * column_tiles
    for tile in prange(x.shape[0] * per_entry):
        entry = tile // per_entry
        within = tile % per_entry
        row0 = (within // column_tiles) * TILE_ROWS
        column_tile = within % column_tiles
        col0 = column_tile * TILE_COLS
        height = min(rows, row0 + TILE_ROWS) - row0
        width = min(columns, col0 + TILE_COLS) - col0
        if tile_stats is None:
            run_tile(x[entry], w[entry, column_tile], px[entry], pw[entry, column_tile], consts, limits, row0, col0,
                     height, width, spec, zero_select, out[entry], None)
        else:
            run_tile(x[entry], w[entry, column_tile], px[entry], pw[entry, column_tile], consts, limits, row0, col0,
                     height, width, spec, zero_select, out[entry], tile_stats[tile])


def pack_columns(w: np.ndarray) -> np.ndarray:
    """(B, K, N) -> (B, tiles, K, TILE_COLS), zero-padded: column tile t holds columns t*TILE_COLS onwards."""
    batch, length, columns = w.shape
    tiles = -(-columns // TILE_COLS)
    padded = np.zeros((batch, length, tiles * TILE_COLS), dtype=w.dtype)
    padded[:, :, :columns] = w
    return np.ascontiguousarray(padded.reshape(batch, length, tiles, TILE_COLS).transpose(0, 2, 1, 3))


def gemm(x: np.ndarray, w: np.ndarray, spec: FusedSpec, count: bool,
         addend: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Y[b] = X[b] @ W[b] + C[b] on the fused accumulator for arrays (B, M, K), (B, K, N) of format values.

    ``addend`` C (B, M, N) is the chain's start (values of the output), or with promotion the fp32 total's
    (fp32 values); None is +0.
    Returns (Y float64 (B, M, N), stats) with stats = [overflow, underflow, terms, zeroed, mass, truncated]
    (zeros unless ``count``): roundings that overflowed to +-Inf or underflowed to 0, nonzero product terms,
    those truncated to zero, and the summed |a*b| and the part of it truncated away.
    """
    dtype = np.float32 if lane_dtype(spec) == "float32" else np.float64
    px = operand_powers(x, spec.a_man, spec.a_emin, "X").astype(dtype)
    pw = pack_columns(operand_powers(w, spec.b_man, spec.b_emin, "W").astype(dtype))
    xs = np.ascontiguousarray(x, dtype=dtype)
    ws = pack_columns(np.asarray(w, dtype=dtype))
    consts = np.array([2.0**spec.fraction_bits, 2.0**spec.e_zero, 1.0, 2.0**spec.out_emin, scale_floor(spec)],
                      dtype=dtype)
    batch, rows, _ = x.shape
    columns = w.shape[2]
    out = np.zeros((batch, rows, columns)) if addend is None else np.array(addend, dtype=np.float64, order="C")
    if out.shape != (batch, rows, columns):
        raise ValueError(f"fused GEMM: the addend must be {(batch, rows, columns)}, got {out.shape}")
    tiles = batch * -(-rows // TILE_ROWS) * -(-columns // TILE_COLS)
    tile_stats = np.zeros((tiles, STAT_COUNT))
    limits = np.array(output_limits(spec))
    gemm_tiles(xs, ws, px, pw, consts, limits, spec, needs_zero_select(spec), out, tile_stats if count else None)
    return out, tile_stats.sum(axis=0)
