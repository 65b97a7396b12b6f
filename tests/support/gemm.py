"""The reference GEMM and the mismatch count that the simulator's tests compare against."""

from __future__ import annotations

import numpy as np
import torch

from lba_core import MacConfig, dot
from lba_train import EventStats


def as_float64(values) -> np.ndarray:
    """A tensor (any device, with or without grad), array or nested list as a float64 NumPy array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def reference_gemm(x, w, cfg: MacConfig) -> tuple[np.ndarray, EventStats]:
    """lba_core.dot of every row of ``x`` (M x K) with every column of ``w`` (K x N): the M x N values
    (float64 holds every accumulator value exactly) and the summed event counts. Operands that are not
    operand-format values are rounded into the formats first, as lba_core.dot does."""
    rows, columns = as_float64(x), as_float64(w).T
    values = np.zeros((rows.shape[0], columns.shape[0]))
    stats = EventStats()
    column_lists = columns.tolist()
    for i, row in enumerate(rows.tolist()):
        for j, column in enumerate(column_lists):
            result = dot(row, column, cfg)
            values[i, j] = float(result.value)
            stats.record(result.steps, result.overflow, result.underflow, result.swamp)
    return values, stats


def count_mismatches(got, expected, atol: float = 0.0) -> int:
    """Elements of ``got`` farther than ``atol`` from ``expected`` (0: bit-exact, +0 == -0; NaN never matches)."""
    return int((~np.isclose(as_float64(got), as_float64(expected), rtol=0, atol=atol)).sum())
