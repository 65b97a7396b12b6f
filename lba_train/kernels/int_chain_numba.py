"""The sequential chain of integer/fixed-point accumulators on the CPU (Numba), one output per inner loop.

The same arithmetic as ``int_gemm.chain`` (docs/arithmetic.md §8): each product a*b is exact in binary64,
scaled by 2^F (exact), rounded to an integer (np.rint ties to even, or truncated), then added to the int64
accumulator and wrapped or clamped. Rows run in parallel; each output walks k = 0, 1, ... in order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _keep(s, lo, hi, modulus, saturate):
    if s < lo:
        return lo if saturate else (s - lo) % modulus + lo
    if s > hi:
        return hi if saturate else (s - lo) % modulus + lo
    return s


@njit(cache=True, parallel=True)
def chain(x, w_t, grid_scale, toward_zero, lo, hi, saturate, chunk, count):
    """(grid units (R, N) int64, events (3,) int64) for X (R, K) and W^T (N, K), both float64 and contiguous."""
    rows, length = x.shape
    columns = w_t.shape[0]
    modulus = hi - lo + 1
    out = np.zeros((rows, columns), np.int64)
    events = np.zeros((rows, 3), np.int64)
    for i in prange(rows):
        overflow = 0
        underflow = 0
        swamp = 0
        for j in range(columns):
            partial = 0
            total = 0
            for k in range(length):
                exact = x[i, k] * w_t[j, k] * grid_scale
                p = np.int64(np.trunc(exact) if toward_zero else np.rint(exact))
                s = partial + p
                kept = _keep(s, lo, hi, modulus, saturate)
                if count:
                    overflow += kept != s
                    underflow += p == 0 and exact != 0
                    swamp += p != 0 and kept == partial
                partial = kept
                if chunk > 0 and ((k + 1) % chunk == 0 or k == length - 1):
                    s = total + partial
                    kept = _keep(s, lo, hi, modulus, saturate)
                    if count:
                        overflow += kept != s
                        swamp += partial != 0 and kept == total
                    total = kept
                    partial = 0
            out[i, j] = total if chunk > 0 else partial
        events[i, 0] = overflow
        events[i, 1] = underflow
        events[i, 2] = swamp
    return out, events.sum(axis=0)
