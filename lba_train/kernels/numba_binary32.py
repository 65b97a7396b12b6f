"""The CPU GEMM kernel on binary32 lanes: twice the SIMD width of binary64, for accumulators up to 21 bits.

Used where :func:`plan.binary32_lanes_hold` proves every value of the chain a normal binary32 number (or
zero), every exact product a binary32 number and every format at most 21 fraction bits (docs/simulator.md,
"Binary32 lanes"). One step is: the exact product a*b (binary32 holds it), R_prod if the configuration has a
product format, then R_acc(acc + p) either from the exact binary32 sum (STEP_EXACT_SUM) or from the sum
rounded to odd at 24 bits by TwoSum (STEP_ROUND_TO_ODD) or from the rounded binary32 sum where rounding
twice is proven harmless (STEP_ROUND_TWICE), followed by one rounding on the bit pattern, or the binary32 sum
alone where it is the accumulator's rounding (STEP_NATIVE, fp32).

Outputs are cut into tiles of TILE_ROWS x TILE_COLS, or 32 columns for narrow products and where events
are counted (compile-time constants, so that LLVM unrolls and vectorizes the column loop over whole AVX-512 /
AVX2 registers); operands are zero-padded to whole tiles by the caller (a zero product never changes an
accumulator and raises no event). Tiles of all batch entries run in parallel (``prange``); each walks
k = 0 .. K-1 in the contract's order, so results do not depend on the thread count or the tiling.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .plan import STEP_NATIVE, STEP_ROUND_TO_ODD, RoundSpec

TILE_ROWS = 4
#: Lets LLVM fuse the product into the accumulation (one FMA instead of a multiplication and an addition).
#: Exact: the only products in these functions are the operand products a * w, which the plan proved exact in
#: binary32, so fma(a, w, s) = RN(a*w + s) = RN(p + s), the same value (docs/simulator.md, "Binary32 lanes").
CONTRACT = {"contract"}
TILE_COLS = 64
#: Narrower tiles for batches of products with few columns (attention's per-head products): less zero padding.
NARROW_TILE_COLS = (32,)
#: Tiles that count events are 32 columns wide: with 64, the event counters and their constants no longer fit
#: the 32 vector registers beside the accumulators, and LLVM spilled 70 values per k step (784x384x384 on
#: e4m7: 9.5 -> 9.2 ms; 40.4 -> 36.4 ms at 784x384x1536 together with the strip-major tile order).
COUNTING_TILE_COLS = 32


def tile_width(batch: int, columns: int, count: bool) -> int:
    """The tile's column count: COUNTING_TILE_COLS where events are counted; otherwise, for a batch of several
    products, the narrowest that holds ``columns``, else 64.

    Each width is a separate compiled specialization (10-30 s to compile on first use); a single product
    wastes little on padding in absolute terms, so it keeps the one 64-column width.
    """
    if count:
        return COUNTING_TILE_COLS
    if batch == 1:
        return TILE_COLS
    return next((width for width in NARROW_TILE_COLS if columns <= width), TILE_COLS)

BINARY32_FRACTION_BITS = 23


@functools.lru_cache(maxsize=1024)
def binary32_spec(spec: RoundSpec, binade_rounding: bool = False) -> tuple:
    """The constants of one rounding R_F in binary32, in the argument order of :func:`round32` (memoized: a
    pure function of the immutable spec, asked for on every call).

    None marks a part the format does not need (RTZ has no rounding increment; no flush; no subnormal
    clamp; RNE needs no RTZ correction below min_normal; no saturation where max lies beyond binary32's
    range; no binade constant unless ``binade_rounding``, see :func:`binade_rounding_holds`): Numba compiles
    a specialization per None and prunes the branch, so no lane pays for a feature its configuration lacks.
    """
    shift = BINARY32_FRACTION_BITS - spec.man_bits
    half = None if spec.toward_zero else np.int32((1 << shift >> 1) - 1)
    keep = np.int32(~((1 << shift) - 1))
    unit = np.int32(1 << shift)  # the last kept bit
    flush_below = np.float32(spec.min_normal) if spec.flush else None
    clamp_below = np.float32(spec.min_normal) if spec.clamp else None
    # (|v| + 2^(emin - man_bits + 23)) lies in that power's binade for |v| < min_normal: its ulp is the
    # subnormal quantum, so the addition rounds |v| to the quantum (ties to even) and the subtraction is exact.
    magic = np.float32(2.0 ** (spec.emin - spec.man_bits + BINARY32_FRACTION_BITS)) if spec.clamp else None
    rtz_quantum = np.float32(2.0 ** (spec.emin - spec.man_bits)) if spec.clamp and spec.toward_zero else None
    # Formats reaching 2^128 (emax >= 128) saturate beyond binary32's range: Inf, whose lanes are finished on
    # binary64 lanes (plan.range_fallback_holds); a clamp at Inf changes no lane, so there is none.
    max_value = np.float32(spec.max_value) if spec.max_value <= float(np.finfo(np.float32).max) else None
    # Times 2^e (v's exponent field alone): +-1.5 * 2^(e + 23 - man_bits), the binade constant and its negative
    # (two loop-invariant values LLVM cannot tell apart: it then fuses each product into its own FMA instead
    # of computing the product once and adding and subtracting it, one operation more).
    binade_scale = np.float32(1.5 * 2.0**shift) if binade_rounding else None
    binade_negated = np.float32(-1.5 * 2.0**shift) if binade_rounding else None
    return (unit, half, keep, max_value, flush_below, clamp_below, magic, rtz_quantum, binade_scale, binade_negated)


EXPONENT_FIELD = 0x7F800000


def binade_rounding_holds(spec: RoundSpec, x: np.ndarray, w: np.ndarray, product: bool, chunk: int,
                          product_bound: float | None = None) -> bool:
    """Whether :func:`round32` may round the accumulator by the binade constant (docs/simulator.md).

    RNE without a subnormal clamp, 1 <= man_bits <= 22, and every value the rounding sees below 2^(104 + P)
    (P = man_bits + 1), where the constant 1.5 * 2^(e + 24 - P) is still a finite binary32 number. Bounds,
    with |p| <= max|x| * max|w| (twice that with a product format): a format that saturates inside binary32
    holds at most max, so a rounding sees at most 2 (max + |p|) (1 + 2^-23) (a MAC step adds one product, the
    chunk adder two values of at most max); otherwise |value| <= K |p| ((1 + 2^-23)(1 + 2^-P))^(2K + 1)
    (each step adds at most one product and rounds twice, to binary32 or to odd, then to P bits; the chunk
    adder adds at most K + 1 more roundings).

    ``product_bound``: a bound on every |p| known from the operand formats (the plan's
    2^product_bound_exponent). Where it proves the condition, the operands are not read (two passes fewer
    per call); otherwise their largest magnitudes decide.
    """
    if spec.toward_zero or spec.clamp or not 1 <= spec.man_bits <= 22:
        return False
    length = x.shape[2]
    if product_bound is not None and values_below_binade_limit(spec, product_bound, length):
        return True
    largest = largest_magnitude(x.reshape(-1)) * largest_magnitude(w.reshape(-1)) * (2.0 if product else 1.0)
    return values_below_binade_limit(spec, largest, length)


def values_below_binade_limit(spec: RoundSpec, largest: float, length: int) -> bool:
    """The bound of :func:`binade_rounding_holds` for products of magnitude at most ``largest``."""
    limit = 2.0 ** (104 + spec.man_bits + 1)
    if spec.max_value <= float(np.finfo(np.float32).max):
        return 2.0 * (spec.max_value + largest) * (1.0 + 2.0**-23) < limit
    if largest == 0.0 or length == 0:
        return True
    growth = (2 * length + 1) * (math.log2(1.0 + 2.0**-23) + math.log2(1.0 + 2.0 ** -(spec.man_bits + 1)))
    return math.log2(length) + math.log2(largest) + growth < math.log2(limit)


@njit(cache=True)
def largest_magnitude(flat):
    """max |v| of a flat float32 array (0 if empty; NaN gives NaN), one vectorized pass without a copy.

    On the bit patterns with the sign cleared, whose integer order is the order of the magnitudes (NaN's
    above Inf's): an integer maximum vectorizes where a float one does not (np.abs(x).max() cost 0.065 s
    per MiniLM forward).
    """
    bits = flat.view(np.int32)
    largest = np.int32(0)
    for i in range(bits.shape[0]):
        largest = max(largest, bits[i] & np.int32(0x7FFFFFFF))
    return float(np.int32(largest).view(np.float32))


@njit(cache=True, fastmath=CONTRACT)
def round32(value, unit, half, keep, max_value, flush_below, clamp_below, magic, rtz_quantum, binade_scale,
            binade_negated):
    """R_F of a binary32 ``value`` standing for the exact real; (result, overflowed, underflowed).

    ``value`` is the exact value or its rounding to odd at 24 bits; both round to F alike (docs). Adds half
    a unit (less one, plus the kept bit: ties to even) to the bit pattern and clears the dropped bits; or,
    with ``binade_scale`` K and ``binade_negated`` -K, adds and subtracts C = 2^e * K
    = 1.5 * 2^(e + 23 - man_bits), whose ulp is v's quantum in F (binary32 rounds the sum to it, ties to
    even). C is an exact product, so LLVM may fuse it into both the addition and the subtraction (CONTRACT):
    three vector operations (and, two FMAs) instead of the bit pattern's six. Below min_normal with
    subnormals the quantum is fixed and the magic-constant addition rounds instead. No other product occurs
    here, so contraction changes no value.
    """
    bits = np.float32(value).view(np.int32)
    if binade_scale is not None:
        power = np.int32(bits & np.int32(EXPONENT_FIELD)).view(np.float32)  # 2^e; +0 for v = 0 (then C = 0)
        rounded = (value + power * binade_scale) + power * binade_negated
    else:
        if half is not None:
            # Ties to even: one more when the kept bit is set. A test, not a shift by a variable amount,
            # which Numba widens to int64 and LLVM then cannot narrow back to int32 lanes.
            bits = bits + (half + np.int32(1) if (bits & unit) != np.int32(0) else half)
        rounded = np.int32(bits & keep).view(np.float32)  # signed; never -0 (a relative rounding keeps non-zeros)
    if clamp_below is not None:
        absolute = abs(value)
        fixed = (absolute + magic) - magic
        if rtz_quantum is not None:
            fixed = fixed - (rtz_quantum if fixed > absolute else np.float32(0.0))
        fixed = (-fixed if value < np.float32(0.0) else fixed) + np.float32(0.0)  # +0, never -0
        rounded = fixed if absolute < clamp_below else rounded
    # Flushed before the clamp (which changes no value below min_normal): the flush's select then folds
    # into the clamp's last operation as a zero-masked AVX-512 instruction, one vector operation less.
    flushed = False
    if flush_below is not None:
        magnitude = abs(rounded)
        flushed = magnitude < flush_below
    overflowed = False
    if max_value is not None:
        overflowed = abs(rounded) > max_value
        rounded = min(max(rounded, -max_value), max_value)
    if flush_below is not None:
        rounded = np.float32(0.0) if flushed else rounded
    # Underflow: a non-zero value rounded to 0. Only the subnormal quantum can round a non-zero value to 0;
    # otherwise it takes the flush (the bit-pattern and binade roundings keep a non-zero value non-zero):
    # one vector comparison fewer with flush, none without.
    if clamp_below is not None:
        underflowed = (rounded == np.float32(0.0)) & (value != np.float32(0.0))
    elif flush_below is not None:
        # 0 < |r| < min_normal, as one unsigned comparison of bit patterns (|r| - 1 wraps for r = 0): two
        # vector operations, where `flushed and value != 0` took four after LLVM's rewriting.
        below = np.int32(np.float32(flush_below).view(np.int32) - np.int32(1))
        underflowed = np.uint32(np.int32(np.float32(magnitude).view(np.int32) - np.int32(1))) < np.uint32(below)
    else:
        underflowed = False
    return rounded, overflowed, underflowed


@njit(cache=True)
def sum_to_odd32(a, b):
    """a + b rounded to odd at 24 bits: TwoSum, then high moved to its odd neighbour on low's side if inexact."""
    high = a + b
    b_virtual = high - a
    low = (a - (high - b_virtual)) + (b - b_virtual)
    bits = np.float32(high).view(np.int32)
    low_bits = np.float32(low).view(np.int32)
    inexact_and_even = -(np.int32(low != np.float32(0.0)) & ~bits & np.int32(1))  # all ones or zero
    toward = ((low_bits ^ bits) >> np.int32(31)) | np.int32(1)  # +1: low has high's sign (away from zero)
    return np.int32(bits + (inexact_and_even & toward)).view(np.float32)


@njit(cache=True, fastmath=CONTRACT)
def accumulate32(previous, addend, acc, to_odd):
    """R_acc(previous + addend) of the exact sum: (value, overflowed, underflowed).

    ``to_odd`` None: the binary32 sum itself, which the plan proved exact (STEP_EXACT_SUM) or harmless to
    round once more (STEP_ROUND_TWICE). ``acc`` None: the binary32 sum is R_acc of the exact sum
    (STEP_NATIVE: 24 significant bits, RNE, nothing flushed; no event but swamping can occur).
    """
    if to_odd is not None:
        total = sum_to_odd32(previous, addend)
    else:
        total = previous + addend
    if acc is None:
        return total, False, False
    return round32(total, acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8], acc[9])


#: Events are counted per column in one int32 lane per column, the width of the binary32 lanes, so that the
#: counting vectorizes alongside them (int64 scalar sums made a counting step 4x a plain one, three int32
#: arrays 2x): overflow in bits 1-10, underflow in bits 11-20, swamp in bits 21-30. A lane gains at most
#: 2 * TILE_ROWS = 8 per field and k step (a MAC and a chunk-adder step per row), so the fields are added to
#: the int64 totals every COUNT_BLOCK = 64 k steps (at most 512 < 2^10) and at the end. No field starts at
#: bit 0: LLVM turns an increment of 1 into a subtraction of the widened mask (two operations) where any
#: other constant stays one masked addition.
COUNT_BLOCK = 64
OVERFLOW_UNIT = 1 << 1
UNDERFLOW_UNIT = 1 << 11
SWAMP_UNIT = 1 << 21
FIELD_MASK = (1 << 10) - 1


@njit(cache=True)
def add_events(count, overflowed, underflowed, swamped):
    """A packed lane counter plus the three events of one step.

    Three conditional adds, which become AVX-512 masked adds of a constant (summing the three codes first
    made LLVM widen each mask to a vector and combine them: 2 operations more per step).
    """
    count = count + (np.int32(OVERFLOW_UNIT) if overflowed else np.int32(0))
    count = count + (np.int32(UNDERFLOW_UNIT) if underflowed else np.int32(0))
    return count + (np.int32(SWAMP_UNIT) if swamped else np.int32(0))


@intrinsic
def stack_lanes(typingctx, rows, width, dtype):
    """A pointer to rows * len(width) uninitialized ``dtype`` values on the stack (``rows`` a literal).

    Why not np.zeros: LLVM cannot keep a heap array in registers, so every step of the tile loaded and
    stored its accumulators; a stack buffer of constant size indexed by unrolled constants is promoted to
    registers (SROA). The native fp32 kernel at 256x1024x256, one thread: 2.63 ms -> 1.45 ms.
    """
    if not isinstance(rows, types.IntegerLiteral):
        return None
    element = dtype.dtype
    count = rows.literal_value * width.count

    def codegen(context, builder, signature, args):
        size = context.get_constant(types.intp, count)
        return cgutils.alloca_once(builder, context.get_value_type(element), size=size)

    return types.CPointer(element)(rows, width, dtype), codegen


@njit(cache=True, fastmath=CONTRACT)
def run_tile(x, w, row0, column0, prod, acc, to_odd, chunk, out, events, width):
    """Every chain of one TILE_ROWS x len(width) tile, k in order; writes ``out`` and adds to ``events``.

    ``width`` is a tuple whose length is the tile's column count: a compile-time constant for Numba (one
    specialization per tile width), so LLVM unrolls the column loop over whole registers. Events go to the
    packed int32 lane counters (COUNT_BLOCK) and from them to ``events``.
    """
    columns = len(width)
    length = x.shape[1]
    partial = carray(stack_lanes(TILE_ROWS, width, np.float32), (TILE_ROWS, columns))
    total = carray(stack_lanes(TILE_ROWS, width, np.float32), (TILE_ROWS, columns))
    counts = carray(stack_lanes(1, width, np.int32), (columns,))
    partial[:] = np.float32(0.0)
    total[:] = np.float32(0.0)
    counts[:] = np.int32(0)
    for k in range(length):
        w_row = w[k, column0 : column0 + columns]
        for r in range(TILE_ROWS):
            a = x[row0 + r, k]
            lanes = partial[r]
            for j in range(columns):
                p = a * w_row[j]  # exact: plan_gemm checked that products fit in binary32
                product_overflowed = product_underflowed = False
                if prod is not None:
                    p, product_overflowed, product_underflowed = round32(
                        p, prod[0], prod[1], prod[2], prod[3], prod[4], prod[5], prod[6], prod[7], prod[8], prod[9]
                    )
                previous = lanes[j]
                value, overflowed, underflowed = accumulate32(previous, p, acc, to_odd)
                lanes[j] = value
                if events is not None:
                    if prod is None:
                        # A zero product leaves every lane as it is, so it is counted here too: gemm() takes
                        # the zero products (from the operands' non-zero counts) off again. One test less.
                        swamped = value == previous
                    else:  # a product format can round a non-zero a*w to zero
                        swamped = (p != np.float32(0.0)) & (value == previous)
                    counts[j] = add_events(counts[j], overflowed | product_overflowed,
                                           underflowed | product_underflowed, swamped)
        if chunk > 0 and ((k + 1) % chunk == 0 or k == length - 1):
            for r in range(TILE_ROWS):
                sums = total[r]
                lanes = partial[r]
                for j in range(columns):
                    previous = sums[j]
                    addend = lanes[j]
                    value, overflowed, underflowed = accumulate32(previous, addend, acc, to_odd)
                    sums[j] = value
                    lanes[j] = np.float32(0.0)
                    if events is not None:
                        counts[j] = add_events(counts[j], overflowed, underflowed,
                                                (addend != np.float32(0.0)) & (value == previous))
        if events is not None and ((k + 1) % COUNT_BLOCK == 0 or k == length - 1):
            for j in range(columns):
                events[0] += (counts[j] >> 1) & FIELD_MASK
                events[1] += (counts[j] >> 11) & FIELD_MASK
                events[2] += counts[j] >> 21
                counts[j] = np.int32(0)
    out[row0 : row0 + TILE_ROWS, column0 : column0 + columns] = total if chunk > 0 else partial


@njit(parallel=True, cache=True, fastmath=CONTRACT)
def gemm_tiles(x, w, prod, acc, to_odd, chunk, out, tile_events, width):
    """out[b] = x[b] @ w[b] on the accumulator for padded (B, M, K), (B, K, N); events per tile unless None.

    Tiles go down a strip of columns before the next strip: consecutive tiles (and each thread's share of
    them) reuse one K x width strip of w from the cache while the rows of x stream past (row-major order
    re-read all of w from memory for every four rows: 10 % slower at 784x384x1536).
    """
    row_tiles = x.shape[1] // TILE_ROWS
    column_tiles = w.shape[2] // len(width)
    per_entry = row_tiles * column_tiles
    for tile in prange(x.shape[0] * per_entry):
        entry = tile // per_entry
        within = tile % per_entry
        row0 = (within % row_tiles) * TILE_ROWS
        column0 = (within // row_tiles) * len(width)
        if tile_events is None:
            run_tile(x[entry], w[entry], row0, column0, prod, acc, to_odd, chunk, out[entry], None, width)
        else:
            run_tile(x[entry], w[entry], row0, column0, prod, acc, to_odd, chunk, out[entry], tile_events[tile], width)


def gemm(x, w, prod_spec, acc_spec, chunk, step, count, product_bound=None):
    """Y[b] = X[b] @ W[b] for C-contiguous float32 arrays (B, M, K), (B, K, N); returns (Y float32, events).

    ``prod_spec`` is None without a product format; ``chunk`` <= 0: one chain; ``step`` is the plan's
    ``binary32_step`` (with STEP_NATIVE or a range fallback, lanes that left binary32's range end as Inf or
    NaN: ``range_fallback.finish`` recomputes them). The operands are padded
    here to whole tiles with zeros; events = [overflow, underflow, swamp] step counts (zeros unless ``count``).
    ``product_bound``: a bound on every |product| from the operand formats (see binade_rounding_holds).
    """
    batch, rows, length = x.shape
    columns = w.shape[2]
    tile_columns = tile_width(batch, columns, count)
    padded_rows = -(-rows // TILE_ROWS) * TILE_ROWS
    padded_columns = -(-columns // tile_columns) * tile_columns
    if padded_rows != rows:
        x = np.concatenate([x, np.zeros((batch, padded_rows - rows, length), np.float32)], axis=1)
    if padded_columns != columns:
        w = np.concatenate([w, np.zeros((batch, length, padded_columns - columns), np.float32)], axis=2)
    out = np.empty((batch, padded_rows, padded_columns), np.float32)
    tiles = batch * (padded_rows // TILE_ROWS) * (padded_columns // tile_columns)
    tile_events = np.zeros((tiles, 3), dtype=np.int64)
    prod = None if prod_spec is None else binary32_spec(prod_spec)
    to_odd = True if step == STEP_ROUND_TO_ODD else None
    acc = None if step == STEP_NATIVE else binary32_spec(
        acc_spec, binade_rounding_holds(acc_spec, x, w, prod_spec is not None, chunk, product_bound))
    gemm_tiles(x, w, prod, acc, to_odd, chunk, out, tile_events if count else None, (0,) * tile_columns)
    if padded_rows != rows or padded_columns != columns:
        out = out[:, :rows, :columns]
    events = tile_events.sum(axis=0)
    if count and prod is None:
        events[2] -= zero_products(x, w)
    return out, events


@njit(cache=True)
def zero_products(x, w):
    """How many of the products x[b, i, k] * w[b, k, j] are zero (exact products: a factor is zero).

    Per k, the zero-free rows of x times the zero-free columns of w, in one pass over each operand (NumPy's
    count_nonzero along an axis and the int64 casts took 0.7-0.9 ms per MiniLM projection).
    """
    batch, rows, length = x.shape
    columns = w.shape[2]
    nonzero = 0
    row_counts = np.zeros(length, np.int32)
    for b in range(batch):
        row_counts[:] = 0
        for i in range(rows):
            for k in range(length):
                row_counts[k] += np.int32(x[b, i, k] != np.float32(0.0))
        for k in range(length):
            column_count = np.int32(0)
            for j in range(columns):
                column_count += np.int32(w[b, k, j] != np.float32(0.0))
            nonzero += np.int64(row_counts[k]) * np.int64(column_count)
    return batch * rows * length * columns - nonzero


@njit(parallel=True, cache=True)
def quantize_into(x, out, spec):
    """out <- R_F(x) elementwise (RNE, underflow on, +-Inf saturating) for binary32 ``x``; returns the NaN count.

    The bit-pattern rounding of an exact binary32 value is one rounding of that value; plan.py's
    ``binary32_quantizer_holds`` gives the conditions (binary32 subnormal inputs lie far below min_normal).
    """
    flat = x.reshape(-1)
    result = out.reshape(-1)
    nans = 0
    for i in prange(flat.shape[0]):
        value = flat[i]
        nans += value != value
        rounded = round32(value, spec[0], spec[1], spec[2], spec[3], spec[4], spec[5], spec[6], spec[7], spec[8],
                          spec[9])[0]
        result[i] = rounded + np.float32(0.0)  # -0 in, +0 out
    return nans


@njit(cache=True)
def count_nonfinite(flat):
    """How many entries of a flat float32 or float64 array are NaN or +-Inf (one vectorized pass).

    Serial: 25 us per 256K float32 entries on one core; a parallel region cost more than that under load
    (5.6 ms per call in a MiniLM profile at load 7, waiting for a descheduled thread)."""
    count = 0
    for i in range(flat.shape[0]):
        difference = flat[i] - flat[i]  # 0 for a finite value, NaN for NaN and +-Inf
        count += difference != difference
    return count
