"""Percentile-bootstrap intervals of a mean over evaluation windows (scipy.stats.bootstrap), and paired ones
(the same resampled windows for two rows: the interval of the mean per-window difference)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over windows and its bootstrap interval [low, high]."""

    value: float
    low: float
    high: float

    def contains(self, x: float = 0.0) -> bool:
        return self.low <= x <= self.high


def bootstrap_mean(values, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> Interval:
    """The mean of ``values`` (one per window) with a percentile-bootstrap interval; NaN anywhere gives NaNs."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError(f"bootstrap_mean needs a non-empty 1-D array of per-window values, got shape {data.shape}")
    if resamples < 2 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap needs resamples >= 2 and 0 < confidence < 1, got {resamples} and {confidence}")
    mean = float(data.mean())
    if not np.isfinite(data).all():
        return Interval(mean, math.nan, math.nan)
    if data.size == 1 or np.all(data == data[0]):
        return Interval(mean, mean, mean)
    result = stats.bootstrap((data,), np.mean, n_resamples=resamples, confidence_level=confidence,
                             method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return Interval(mean, float(result.confidence_interval.low), float(result.confidence_interval.high))


def paired_difference(values, baseline, resamples: int = RESAMPLES, seed: int = 0,
                      confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values - baseline`` (per window, same windows) with its bootstrap interval."""
    values, baseline = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if values.shape != baseline.shape:
        raise ValueError(f"paired rows need the same windows, got {values.shape} and {baseline.shape}")
    return bootstrap_mean(values - baseline, resamples, seed, confidence)
