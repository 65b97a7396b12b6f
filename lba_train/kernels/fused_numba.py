"""The CPU kernel of the fused (tensor-core) dot-product accumulator (docs/arithmetic.md §9), bit-true (Numba).

Every operand comes with its exponent e as an int8 or int16 (:func:`exponent_dtype`; :func:`decode_rows`,
:func:`decode_columns`, which also check that it is a value of its format). Per output and per group of L
products: e_max, the largest of e_a + e_b over the products (a zero product counts as e_zero) and of the
running result's own exponent (the addend); every term a * b * 2^(F - e_max) truncated toward zero by the
float-to-integer conversion (the products and the power-of-two scaling are exact in the lane dtype, so the
truncation is the only rounding and it is the contract's); the exact integer sum of those terms; one rounding
of sum * 2^(e_max - F) into the output (fused_lanes.round_output). With promotion, every ``promote_every`` products
the chain's result is added into an fp32 accumulator (binary32 addition: one RNE rounding) and the chain
restarts from +0. docs/simulator.md explains why every step is exact.

Outputs are cut into tiles of TILE_ROWS x C (C <= TILE_COLS, :func:`tile_width`; operands zero-padded to
whole tiles); tiles run in parallel (``prange``). Per group a tile makes two passes over the group's rows of
W, ROWS_PER_SWEEP rows at a time, each read once for all the tile's rows: the e_max pass on the integer
exponents (:func:`group_exponents`) and the truncate-and-sum pass (:func:`truncate_and_sum`); the per-output
steps between and after them (fused_lanes) are branch-free loops over the columns in the lane dtype, which
LLVM vectorizes. The result does
not depend on the thread count or the tiling.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numba
import numpy as np
import torch
from numba import njit, prange

from .fused_lanes import group_start, lane_steps, round_output
from .fused_plan import FusedSpec, lane_dtype, needs_zero_select, result_dtype

TILE_ROWS = 8
TILE_COLS = 256  # at most; fewer where N is smaller (tile_width)
#: Calls of fewer multiply-adds run on one thread: waking Numba's other threads costs more than they save there
#: (on the loaded 2-core development machine a 1 x 80 x 2 call took 17 ms of CPU on two threads, 0.03 ms on one).
SERIAL_BELOW_MACS = 1 << 20
# Per-tile statistics, in this order (float64, exact for counts below 2^53).
STAT_OVERFLOW, STAT_UNDERFLOW, STAT_TERMS, STAT_ZEROED, STAT_MASS, STAT_TRUNCATED = range(6)
STAT_COUNT = 6


EXPONENT_BITS = np.int64(0x7FF0000000000000)
#: The exponent codes of an exponent dtype: (a zero operand's, a bound below which an exponent sum involves a
#: zero operand, the e_max pass's start). int8 holds operand exponents within [-16, 16] (every FP8 format
#: and fp16): nonzero products lie in [-32, 32], above -40; a product with a zero operand at or below -48;
#: two zeros sum to -128, no wrap. int16 holds every binary64 exponent the same way: products within
#: [-2044, 2046], a zero's sums at most -7169, two zeros -16384.
EXPONENT_CODES = {np.int8: (-64, -40, -128), np.int16: (-8192, -4096, -16384)}
SMALL_EXPONENT = 16
RESULT_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
#: W's rows per sweep over a tile's running maxima and sums: each sweep loads and stores them once.
ROWS_PER_SWEEP = 4


def exponent_dtype(spec: FusedSpec) -> type:
    """int8 where both operand formats' exponents lie within [-SMALL_EXPONENT, SMALL_EXPONENT] (twice the
    lanes of int16 in the e_max pass), else int16."""
    small = min(spec.a_emin, spec.b_emin) >= -SMALL_EXPONENT and max(spec.a_emax, spec.b_emax) <= SMALL_EXPONENT
    return np.int8 if small else np.int16


def tile_width(columns: int) -> int:
    """The tile's column count: N split into as few tiles of at most TILE_COLS as possible, each a multiple
    of 8 (whole AVX2 registers of binary32), so that narrow products (attention's per-head ones) pay little
    for zero padding."""
    tiles = max(1, -(-columns // TILE_COLS))
    per_tile = -(-columns // tiles)
    return max(8, -(-per_tile // 8) * 8)


@njit(cache=True)
def product_exponent(ea, eb, narrow, below, e_zero, zero_select):
    """The exponent of a product for e_max: e_a + e_b; with ``zero_select`` e_zero for a zero product (a sum
    at or below ``below``), which can lie above a nonzero product's exponent."""
    e = narrow(ea + eb)
    if zero_select is None:
        return e
    return e if e > below else e_zero


@njit(cache=True)
def group_exponents(ex, ew, row0, k0, k1, below, e_zero, zero_select, exponents):
    """exponents[r, j] <- the largest of it and the exponents of products k0 .. k1 - 1 of output (row0 + r, j);
    ROWS_PER_SWEEP rows of ``ew`` per sweep over ``exponents``, on integers of its dtype."""
    narrow = exponents.dtype.type
    sweeps_end = k0 + (k1 - k0) // ROWS_PER_SWEEP * ROWS_PER_SWEEP
    for k in range(k0, sweeps_end, ROWS_PER_SWEEP):
        ew0, ew1, ew2, ew3 = ew[k], ew[k + 1], ew[k + 2], ew[k + 3]
        for r in range(TILE_ROWS):
            ea0, ea1, ea2, ea3 = ex[row0 + r, k], ex[row0 + r, k + 1], ex[row0 + r, k + 2], ex[row0 + r, k + 3]
            e_row = exponents[r]
            for j in range(e_row.shape[0]):
                first = max(product_exponent(ea0, ew0[j], narrow, below, e_zero, zero_select),
                            product_exponent(ea1, ew1[j], narrow, below, e_zero, zero_select))
                second = max(product_exponent(ea2, ew2[j], narrow, below, e_zero, zero_select),
                             product_exponent(ea3, ew3[j], narrow, below, e_zero, zero_select))
                e_row[j] = max(e_row[j], max(first, second))
    for k in range(sweeps_end, k1):
        ew_row = ew[k]
        for r in range(TILE_ROWS):
            ea = ex[row0 + r, k]
            e_row = exponents[r]
            for j in range(e_row.shape[0]):
                e_row[j] = max(e_row[j], product_exponent(ea, ew_row[j], narrow, below, e_zero, zero_select))


@njit(cache=True)
def truncate_and_sum(x, w, row0, k0, k1, scales, sums):
    """sums[r, j] += trunc(a * b * scales[r, j]) over products k0 .. k1 - 1 of output (row0 + r, j): the
    conversion to an integer truncates toward zero; ROWS_PER_SWEEP rows of ``w`` per sweep over ``sums``."""
    narrow = sums.dtype.type
    sweeps_end = k0 + (k1 - k0) // ROWS_PER_SWEEP * ROWS_PER_SWEEP
    for k in range(k0, sweeps_end, ROWS_PER_SWEEP):
        w0, w1, w2, w3 = w[k], w[k + 1], w[k + 2], w[k + 3]
        for r in range(TILE_ROWS):
            a0, a1, a2, a3 = x[row0 + r, k], x[row0 + r, k + 1], x[row0 + r, k + 2], x[row0 + r, k + 3]
            s_row = scales[r]
            t_row = sums[r]
            for j in range(t_row.shape[0]):
                s = s_row[j]
                t_row[j] += (narrow(a0 * w0[j] * s) + narrow(a1 * w1[j] * s)) + (
                    narrow(a2 * w2[j] * s) + narrow(a3 * w3[j] * s))
    for k in range(sweeps_end, k1):
        w_row = w[k]
        for r in range(TILE_ROWS):
            a = x[row0 + r, k]
            s_row = scales[r]
            t_row = sums[r]
            for j in range(t_row.shape[0]):
                t_row[j] += narrow(a * w_row[j] * s_row[j])


@njit(cache=True)
def truncate_and_sum_counted(x, w, row0, k0, k1, scales, sums, group_mass, group_lost, counts):
    """truncate_and_sum, one row of ``w`` at a time, with the truncation statistics per output (branch-free):
    nonzero products and those truncated to 0 (``counts``), the |a*b| mass (``group_mass``) and the part
    truncated away in units of the group's quantum (``group_lost``, exact per term)."""
    narrow = sums.dtype.type
    for k in range(k0, k1):
        w_row = w[k]
        for r in range(TILE_ROWS):
            a = x[row0 + r, k]
            s_row = scales[r]
            t_row = sums[r]
            m_row = group_mass[r]
            f_row = group_lost[r]
            n_row = counts[0, r]
            z_row = counts[1, r]
            for j in range(t_row.shape[0]):
                product = a * w_row[j]
                scaled = product * s_row[j]
                term = narrow(scaled)
                t_row[j] += term
                nonzero = narrow(product != 0)
                n_row[j] += nonzero
                z_row[j] += nonzero & narrow(term == 0)
                m_row[j] += abs(np.float64(product))
                f_row[j] += abs(np.float64(scaled) - np.float64(term))


@njit(cache=True, error_model="numpy")  # no zero-division check: it would keep LLVM from vectorizing
def run_tile(x, w, ex, ew, codes, ints, floats, row0, col0, spec, zero_select, out, stats):
    """Every output of one TILE_ROWS x C tile: the fused chain over k in groups of L, promotion, stats.

    ``x`` (M, K) holds the first operand's values and ``ex`` their exponents (the dtype of ``codes``,
    EXPONENT_CODES: a zero operand has the first code); ``w`` and ``ew`` (K, C) the tile's columns of W. The
    values are in one float dtype D in which every product, scaled term and group sum is exact
    (fused_plan.lane_dtype); ``ints`` and ``floats`` (fused_lanes.lane_steps) are the per-output steps' constants,
    ``ints`` of the integer type of D's width, in which the truncated terms are summed. The products are scaled
    by 2^(F - max(e_max, floor)), ``floor`` lying below every nonzero product's exponent, so that the scale stays
    finite in D when every product is zero (the addend's own term is not: fused_lanes.group_start).
    ``out[row0:, col0:]`` (TILE_ROWS x C) holds the addend C on entry (the chain's start, or
    promotion's fp32 total's) and the results on exit.
    """
    columns = w.shape[1]
    length = x.shape[1]
    group = spec.group
    below, lowest = codes[1], codes[2]
    e_zero = codes.dtype.type(spec.e_zero)
    promote = spec.promote_every if spec.promote_every > 0 else length
    lane = x.dtype.type
    chain = np.zeros((TILE_ROWS, columns), dtype=x.dtype)
    promoted = np.zeros((TILE_ROWS, columns), dtype=np.float32)
    exponents = np.empty((TILE_ROWS, columns), dtype=ex.dtype)
    units = np.empty((TILE_ROWS, columns), dtype=x.dtype)  # 2^(e_max - F), the group's quantum
    scales = np.empty((TILE_ROWS, columns), dtype=x.dtype)
    sums = np.empty((TILE_ROWS, columns), dtype=type(ints[0]))
    # Statistics (only when counted), per output: |a*b| mass and the part truncated away (tallies), nonzero
    # terms and those truncated to zero (counts); the current group's |a*b| mass and the part of it truncated
    # away (in units of 2^(e_max - F)).
    tallies = np.zeros((2, TILE_ROWS, columns))
    group_mass = np.zeros((TILE_ROWS, columns))
    group_lost = np.zeros((TILE_ROWS, columns))
    counts = np.zeros((2, TILE_ROWS, columns), dtype=np.int64)  # int64: exact for any K
    overflows = underflows = 0
    for r in range(TILE_ROWS):
        for j in range(columns):
            if spec.promote_every > 0:
                promoted[r, j] = out[row0 + r, col0 + j]
            else:
                chain[r, j] = out[row0 + r, col0 + j]
    for k0 in range(0, length, group):
        k1 = min(k0 + group, length)
        exponents[:] = lowest
        group_exponents(ex, ew, row0, k0, k1, below, e_zero, zero_select, exponents)
        for r in range(TILE_ROWS):  # e_max with the addend's exponent; the scales; the addend's term
            c_row = chain[r]
            e_row = exponents[r]
            p_row = units[r]
            s_row = scales[r]
            t_row = sums[r]
            for j in range(columns):
                p_row[j], s_row[j], t_row[j] = group_start(c_row[j], e_row[j], below, ints)
        if stats is None:
            truncate_and_sum(x, w, row0, k0, k1, scales, sums)
        else:
            truncate_and_sum_counted(x, w, row0, k0, k1, scales, sums, group_mass, group_lost, counts)
        for r in range(TILE_ROWS):
            c_row = chain[r]
            p_row = units[r]
            t_row = sums[r]
            if stats is not None:  # the mass of the group's products, and the part truncated away
                m_row = group_mass[r]
                f_row = group_lost[r]
                mass_row = tallies[0, r]
                lost_row = tallies[1, r]
                for j in range(columns):
                    mass_row[j] += m_row[j]
                    lost_row[j] += f_row[j] * p_row[j]  # times 2^(e_max - F): exact
                    m_row[j] = 0.0
                    f_row[j] = 0.0
            for j in range(columns):
                exact = lane(t_row[j]) * p_row[j]
                value, overflowed, underflowed = round_output(exact, t_row[j], ints, floats, spec.rne)
                c = c_row[j]
                c_row[j] = c if math.isinf(c) else value
                if stats is not None:
                    overflows += overflowed and not math.isinf(c)
                    underflows += underflowed
        if spec.promote_every > 0 and (k1 % promote == 0 or k1 == length):
            for r in range(TILE_ROWS):
                for j in range(columns):
                    promoted[r, j] = promoted[r, j] + np.float32(chain[r, j])  # binary32: one RNE rounding
                    chain[r, j] = 0
    for r in range(TILE_ROWS):
        for j in range(columns):
            out[row0 + r, col0 + j] = promoted[r, j] if spec.promote_every > 0 else chain[r, j]
    if stats is not None:
        stats[STAT_OVERFLOW] += overflows
        stats[STAT_UNDERFLOW] += underflows
        stats[STAT_TERMS] += counts[0].sum()
        stats[STAT_ZEROED] += counts[1].sum()
        stats[STAT_MASS] += tallies[0].sum()
        stats[STAT_TRUNCATED] += tallies[1].sum()


@njit(parallel=True, cache=True)
def gemm_tiles(x, w, ex, ew, codes, ints, floats, spec, zero_select, out, tile_stats):
    """Replace ``out[b]`` (the addend C on entry) by the fused X[b] @ W[b] + C for padded operands;
    ``tile_stats`` (None: not counted) per tile.

    ``w`` and ``ew`` come packed by column tile, (B, tiles, K, C), so that every row a tile reads
    is contiguous and indexed from 0 (LLVM then vectorizes without gathers).
    """
    columns = w.shape[3]
    row_tiles = x.shape[1] // TILE_ROWS
    column_tiles = w.shape[1]
    per_entry = row_tiles * column_tiles
    for tile in prange(x.shape[0] * per_entry):
        entry = tile // per_entry
        within = tile % per_entry
        row0 = (within // column_tiles) * TILE_ROWS
        column_tile = within % column_tiles
        col0 = column_tile * columns
        if tile_stats is None:
            run_tile(x[entry], w[entry, column_tile], ex[entry], ew[entry, column_tile], codes, ints, floats, row0,
                     col0, spec, zero_select, out[entry], None)
        else:
            run_tile(x[entry], w[entry, column_tile], ex[entry], ew[entry, column_tile], codes, ints, floats, row0,
                     col0, spec, zero_select, out[entry], tile_stats[tile])


@njit(cache=True, error_model="numpy")  # power >= 2^emin > 0: no zero-division check, vectorizable
def decode_one(value, smallest, fraction_scale, largest, zero_code):
    """(exponent, validity) of one operand: e = max(floor(log2 |v|), emin) (``smallest`` = 2^emin),
    ``zero_code`` for zero; valid when |v| / 2^e * 2^man (``fraction_scale`` = 2^man) is an integer below
    2^(man + 1), which Inf and NaN are not, and e <= ``largest`` (the format's emax: no exponent wraps in
    the exponent arrays' dtype)."""
    power = max(np.int64(np.float64(value).view(np.int64) & EXPONENT_BITS).view(np.float64), smallest)
    scaled = abs(value) / power * fraction_scale
    ok = (scaled == np.trunc(scaled)) & (scaled < 2.0 * fraction_scale)
    biased = (np.float64(power).view(np.int64) >> 52) & 0x7FF
    exponent = min(biased, 2046) - 1023
    return exponent if value != 0.0 else zero_code, (value == 0.0) | (ok & (exponent <= largest))


@njit(parallel=True, cache=True, error_model="numpy")
def decode_rows(values, man, emin, emax, zero_code, lanes, exponents):
    """lanes[b, i, k] <- values[b, i, k] in the lanes' dtype and exponents[b, i, k] <- its exponent, for
    (B, M, K) float64 ``values`` (rows past M stay as they are: the zero padding; a zero's exponent is
    ``zero_code``). Returns how many entries are not finite values with ``man`` fraction bits and exponents up
    to ``emax``."""
    smallest = math.ldexp(1.0, emin)
    fraction_scale = math.ldexp(1.0, man)
    rows = values.shape[1]
    bad = 0
    for entry_row in prange(values.shape[0] * rows):
        entry = entry_row // rows
        i = entry_row % rows
        for k in range(values.shape[2]):
            value = values[entry, i, k]
            exponent, ok = decode_one(value, smallest, fraction_scale, emax, zero_code)
            lanes[entry, i, k] = value
            exponents[entry, i, k] = exponent
            bad += not ok
    return bad


@njit(parallel=True, cache=True, error_model="numpy")
def decode_columns(values, man, emin, emax, zero_code, lanes, exponents):
    """decode_rows for (B, K, N) ``values`` into the column-tile layout (B, tiles, K, C) of ``lanes`` and
    ``exponents`` (columns past N stay as they are: the zero padding)."""
    smallest = math.ldexp(1.0, emin)
    fraction_scale = math.ldexp(1.0, man)
    length = values.shape[1]
    columns = lanes.shape[3]
    bad = 0
    for entry_k in prange(values.shape[0] * length):
        entry = entry_k // length
        k = entry_k % length
        for tile in range(lanes.shape[1]):
            lane_row = lanes[entry, tile, k]
            exponent_row = exponents[entry, tile, k]
            # a row slice indexed from 0: indexing values[entry, k, tile * columns + j] checked each index for
            # wraparound (0.25 vs 0.16 ms for a 1024 x 256 W)
            value_row = values[entry, k, tile * columns:]
            for j in range(min(columns, value_row.shape[0])):
                value = value_row[j]
                exponent, ok = decode_one(value, smallest, fraction_scale, emax, zero_code)
                lane_row[j] = value
                exponent_row[j] = exponent
                bad += not ok
    return bad


@contextmanager
def one_thread_below(macs: int):
    """Numba on one thread inside the block when ``macs`` < SERIAL_BELOW_MACS; the caller's setting after it."""
    threads = numba.get_num_threads()
    if macs < SERIAL_BELOW_MACS:
        numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


def gemm(x: np.ndarray, w: np.ndarray, spec: FusedSpec, count: bool,
         addend: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Y[b] = X[b] @ W[b] + C[b] on the fused accumulator for arrays (B, M, K), (B, K, N) of format values.

    ``addend`` C (B, M, N) is the chain's start (values of the output), or with promotion the fp32 total's
    (fp32 values); None is +0. ValueError naming X or W when an entry is not a finite value with its
    format's fraction bits and exponents. Returns (Y (B, M, N) in the dtype of fused_plan.result_dtype, stats)
    with stats = [overflow, underflow, terms, zeroed, mass, truncated] (zeros unless ``count``): roundings
    that overflowed to +-Inf or underflowed to 0, nonzero product terms, those truncated to zero, and the
    summed |a*b| and the part of it truncated away.
    """
    binary32 = lane_dtype(spec) == "float32"
    dtype = np.float32 if binary32 else np.float64
    batch, rows, length = x.shape
    columns = w.shape[2]
    if addend is not None and np.shape(addend) != (batch, rows, columns):
        raise ValueError(f"fused GEMM: the addend must be {(batch, rows, columns)}, got {np.shape(addend)}")
    width = tile_width(columns)
    padded_rows = -(-rows // TILE_ROWS) * TILE_ROWS
    tiles_per_row = -(-columns // width)
    exponent_type = exponent_dtype(spec)
    codes = np.array(EXPONENT_CODES[exponent_type], dtype=exponent_type)
    # the decoders write every entry but the zero padding, set here (filling whole arrays cost 0.085 ms of a
    # 256 x 1024 x 256 call's ~5 ms)
    xs = np.empty((batch, padded_rows, length), dtype)
    ex = np.empty((batch, padded_rows, length), exponent_type)
    xs[:, rows:] = 0
    ex[:, rows:] = codes[0]
    ws = np.empty((batch, tiles_per_row, length, width), dtype)
    ew = np.empty((batch, tiles_per_row, length, width), exponent_type)
    last_columns = columns - (tiles_per_row - 1) * width
    ws[:, -1, :, last_columns:] = 0
    ew[:, -1, :, last_columns:] = codes[0]
    out = np.zeros((batch, padded_rows, tiles_per_row * width), RESULT_DTYPES[result_dtype(spec)])
    if addend is not None:
        out[:, :rows, :columns] = addend
    tiles = batch * (padded_rows // TILE_ROWS) * tiles_per_row
    tile_stats = np.zeros((tiles, STAT_COUNT))
    ints, floats = lane_steps(spec, dtype)
    operands = ((x, spec.a_man, spec.a_emin, spec.a_emax, xs, ex, "X", decode_rows),
                (w, spec.b_man, spec.b_emin, spec.b_emax, ws, ew, "W", decode_columns))
    with one_thread_below(batch * rows * length * columns):
        for values, man, emin, emax, lanes, exponents, name, decode in operands:
            if values.dtype not in (np.float32, np.float64):
                values = values.astype(np.float64)
            bad = decode(np.ascontiguousarray(values), man, emin, emax, codes[0], lanes, exponents)
            if bad:
                raise ValueError(f"fused GEMM: {bad} entries of {name} are not finite values with {man} fraction bits "
                                 f"and exponents up to {emax}")
        gemm_tiles(xs, ws, ex, ew, codes, ints, floats, spec, True if needs_zero_select(spec) else None, out,
                   tile_stats if count else None)
    return np.ascontiguousarray(out[:, :rows, :columns]), tile_stats.sum(axis=0)
