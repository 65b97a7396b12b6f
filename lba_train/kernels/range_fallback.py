"""Lanes of a binary32-lane product that left binary32's range, finished on binary64 lanes.

Where ``GemmPlan.binary32_fallback`` is set (accumulators reaching 2^128, such as e8m23 and bf16), a chain
whose sum reaches binary32's overflow threshold ends as +-Inf or NaN in the binary32 kernel, and only such a
chain: a finite lane never held a value the accumulator rounds differently (docs/simulator.md, "Leaving
binary32's range"). This module recomputes the rows x columns block that covers those lanes with the binary64
kernel, which holds every accumulator value, and corrects the event counts: the binary32 counts of that
block are subtracted and the exact ones added (both kernels agree on every finite lane of the block).
"""

from __future__ import annotations

import numpy as np

from . import numba_binary32, numba_gemm
from .plan import GemmPlan


def finish(values: np.ndarray, events: np.ndarray, x: np.ndarray, w: np.ndarray, plan: GemmPlan,
           count: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(values, events, lanes finished) with every non-finite lane of ``values`` recomputed exactly.

    ``values`` (B, M, N) float32 and ``events`` [overflow, underflow, swamp] come from ``numba_binary32.gemm``
    on the float32 operands ``x`` (B, M, K) and ``w`` (B, K, N). The result is float64 when a lane was
    finished (its value may exceed binary32's range), else ``values`` unchanged.
    """
    bad = ~np.isfinite(values)
    finished = int(bad.sum())
    if not finished:
        return values, events, 0
    values = values.astype(np.float64)
    events = events.copy()
    chunk = plan.chunk_size or 0
    for entry in np.flatnonzero(bad.any(axis=(1, 2))):
        rows = np.flatnonzero(bad[entry].any(axis=1))
        columns = np.flatnonzero(bad[entry].any(axis=0))
        x_block = np.ascontiguousarray(x[entry : entry + 1, rows])
        w_block = np.ascontiguousarray(w[entry : entry + 1][:, :, columns])
        _, lane_events = numba_binary32.gemm(x_block, w_block, plan.product, plan.acc, chunk, plan.binary32_step,
                                             count, 2.0 ** plan.product_bound_exponent)
        exact, exact_events = numba_gemm.gemm(x_block.astype(np.float64), w_block.astype(np.float64),
                                              plan.product, plan.acc, chunk, plan.step, count)
        values[entry, rows[:, None], columns[None, :]] = exact[0]
        events += exact_events - lane_events
    return values, events, finished
