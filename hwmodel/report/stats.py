"""How noisy an accuracy is, and whether two models sharing a test set differ beyond that noise.

Two sources of noise enter a reported accuracy: the finite test set (another draw of N examples would give
another number) and the fine-tuning seed (another shuffle order gives another model). Every function takes
per-example correctness as a boolean array of shape (seeds, examples), one row per fine-tuning seed, all rows
on the same examples, so that both sources can be measured:

- :func:`wilson_interval` — 95% interval of an accuracy over the test examples (Wilson score interval; it
  is written out because the count may be a mean over seeds, i.e. not an integer, which scipy's
  ``binomtest(...).proportion_ci`` does not accept; the tests check it against scipy on integer counts).
- :func:`paired_comparison` — a model against a reference on the same examples and seeds. With one seed:
  the exact McNemar test (``scipy.stats.binomtest`` on the discordant pairs). With several seeds: a t-test
  of the mean difference whose variance comes from the two-way (examples x seeds) random-effects model, so
  that example-to-example and seed-to-seed variation both count (S - 1 degrees of freedom once seeds vary).
- :func:`holm` — Holm's step-down adjustment for comparing several rows with one reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
#: Significance level of a "differs beyond noise" verdict, after the Holm adjustment.
ALPHA = 0.05


def wilson_interval(successes: float, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of the proportion ``successes / total``; ``successes`` may be fractional."""
    if total <= 0:
        raise ValueError(f"wilson_interval needs at least one trial, got total={total}")
    if not 0 <= successes <= total:
        raise ValueError(f"successes must lie in [0, total={total}], got {successes}")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class AccuracySummary:
    """Accuracy of one model over ``seeds`` fine-tuning seeds and ``examples`` test examples."""

    mean: float
    low: float  # 95% interval over the test examples (of the seed-averaged accuracy)
    high: float
    seed_sd: float | None  # standard deviation across seeds; None with one seed
    seeds: int
    examples: int


def _matrix(correct) -> np.ndarray:
    matrix = np.asarray(correct, dtype=bool)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"correctness must have shape (seeds, examples), got {matrix.shape}")
    return matrix


def summarize_accuracy(correct) -> AccuracySummary:
    matrix = _matrix(correct)
    seeds, examples = matrix.shape
    per_seed = matrix.mean(axis=1)
    low, high = wilson_interval(float(matrix.sum(axis=1).mean()), examples)
    return AccuracySummary(
        mean=float(per_seed.mean()),
        low=low,
        high=high,
        seed_sd=float(per_seed.std(ddof=1)) if seeds > 1 else None,
        seeds=seeds,
        examples=examples,
    )


@dataclass(frozen=True)
class Comparison:
    """A model against a reference on the same examples and seeds; ``difference`` is model minus reference."""

    difference: float  # mean accuracy difference, a fraction in [-1, 1]
    standard_error: float
    p_value: float  # two-sided, not adjusted for multiple comparisons
    test: str
    agreement: float | None  # share of examples with the same predicted class (mean over seeds)
    model_only: int  # discordant pairs, summed over seeds: model right and reference wrong ...
    reference_only: int  # ... and the other way round
    seeds: int
    examples: int
    dof: float  # degrees of freedom of the t-interval of the difference

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """Interval of ``difference`` (t-based; not adjusted for multiple comparisons)."""
        half = self.standard_error * float(stats.t.ppf(0.5 + confidence / 2, self.dof))
        return self.difference - half, self.difference + half


def paired_comparison(correct, reference_correct, same_prediction=None) -> Comparison:
    """Compare per-example correctness of a model with that of a reference (both shaped (seeds, examples),
    seed s of one paired with seed s of the other). ``same_prediction`` (same shape) marks the examples on
    which both predicted the same class."""
    model, reference = _matrix(correct), _matrix(reference_correct)
    if model.shape != reference.shape:
        raise ValueError(f"paired comparison needs equal shapes, got {model.shape} and {reference.shape}")
    seeds, examples = model.shape
    model_only = int((model & ~reference).sum())
    reference_only = int((reference & ~model).sum())
    diff = model.astype(float) - reference.astype(float)  # (seeds, examples), entries -1, 0, 1
    difference = float(diff.mean())
    if seeds == 1:
        discordant = model_only + reference_only
        p_value = 1.0 if discordant == 0 else float(stats.binomtest(model_only, discordant, 0.5).pvalue)
        standard_error = float(diff[0].std(ddof=1) / math.sqrt(examples)) if examples > 1 else 0.0
        dof = float(max(examples - 1, 1))
        test = "exact McNemar"
    else:
        standard_error, dof = _two_way_standard_error(diff)
        if standard_error == 0.0:
            p_value = 1.0 if difference == 0.0 else 0.0
        else:
            p_value = float(2 * stats.t.sf(abs(difference) / standard_error, dof))
        test = f"two-way t ({seeds} seeds)"
    agreement = None if same_prediction is None else float(_matrix(same_prediction).mean())
    return Comparison(difference, standard_error, p_value, test, agreement, model_only, reference_only, seeds,
                      examples, dof)


def _two_way_standard_error(diff: np.ndarray) -> tuple[float, float]:
    """Standard error of the grand mean of ``diff`` (seeds x examples) under a crossed random-effects model
    x = mu + seed effect + example effect + interaction, and the degrees of freedom of a t-test on it.

    Var(mean) = s2_example / N + s2_seed / S + s2_interaction / (N S); the components come from the
    two-way ANOVA mean squares (negative estimates are set to zero)."""
    seeds, examples = diff.shape
    grand = diff.mean()
    seed_means, example_means = diff.mean(axis=1), diff.mean(axis=0)
    ms_seed = examples * ((seed_means - grand) ** 2).sum() / (seeds - 1)
    ms_example = seeds * ((example_means - grand) ** 2).sum() / (examples - 1)
    residual = diff - seed_means[:, None] - example_means[None, :] + grand
    ms_error = (residual**2).sum() / ((seeds - 1) * (examples - 1))
    s2_seed = max(ms_seed - ms_error, 0.0) / examples
    s2_example = max(ms_example - ms_error, 0.0) / seeds
    variance = s2_example / examples + s2_seed / seeds + ms_error / (examples * seeds)
    if variance <= 0.0:
        return 0.0, float("inf")
    # Satterthwaite's approximation overstates the degrees of freedom (and so understates the noise) when
    # the seed term dominates with few seeds (a 9% false-alarm rate at a nominal 5% in simulations with 3
    # seeds); the seed term's own S - 1 keeps it at 2-7% (tests/test_stats.py) without giving up the power
    # that a test-set-only difference deserves.
    dof = seeds - 1 if s2_seed > 0 else examples - 1
    return math.sqrt(variance), float(dof)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given); controls the family-wise error rate."""
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
