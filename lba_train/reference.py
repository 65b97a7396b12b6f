"""Tensor-friendly entry point to the exact reference dot product of lba_core."""

from __future__ import annotations

import numpy as np
import torch

from lba_core import MacConfig, dot


def _as_vector(x, name: str) -> list[float]:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"reference_dot: {name} must be 1-D, got shape {tuple(array.shape)}")
    if np.isnan(array).any():
        raise ValueError(f"reference_dot: {name} contains NaN")
    return array.tolist()


def reference_dot(a, b, cfg: MacConfig) -> float:
    """The dot product of 1-D ``a`` and ``b`` exactly as the MAC computes it (docs/arithmetic.md §5).

    Values are taken as input-format values (others are rounded to nearest-even into the format first).
    Returns a Python float, which holds every accumulator value exactly.
    """
    if not isinstance(cfg, MacConfig):
        raise TypeError(f"reference_dot: cfg must be a MacConfig, got {type(cfg).__name__}")
    a_values, b_values = _as_vector(a, "a"), _as_vector(b, "b")
    if len(a_values) != len(b_values):
        raise ValueError(f"reference_dot: a and b differ in length ({len(a_values)} and {len(b_values)})")
    return float(dot(a_values, b_values, cfg).value)
