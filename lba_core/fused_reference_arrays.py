"""The readable reference of docs/arithmetic.md §9 over many outputs at once (numpy), for checking at scale.

The same steps as :mod:`lba_core.fused_reference`, written once more with every output of a matrix product in
an array lane instead of one :class:`fractions.Fraction` at a time. Nothing here is approximate: binary64 holds
every value exactly because of three bounds, checked in :func:`exact_in_binary64` (anything outside them is
left to the Fraction reference by :func:`lba_core.fused_matmul_reference`):

* a product a * b has at most ``a.man_bits + b.man_bits + 2`` significant bits, at most 53;
* an aligned, truncated term is an integer count of 2^(e_max - F) below 2^(F + 2), and a group's L + 1 of
  them sum to below 2^53, so the sum of counts is exact;
* every exponent met (products, quanta, results) stays inside binary64's normal range.

Scaling by a power of two (``np.ldexp``) is then exact, ``np.trunc`` truncates toward zero, ``np.floor`` and
``np.rint`` (ties to even) round a count of output quanta. Independent of the kernels (lba_train/kernels): it
shares no code with them, and tests/test_fused_oracle.py checks it against the Fraction reference and an
oracle.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .config import MacConfig
from .formats import FloatFormat
from .fused import PROMOTION_FORMAT, FusedAccumulator
from .reference import round_to_format


def exact_in_binary64(cfg: MacConfig, acc: FusedAccumulator) -> bool:
    """Whether every value of the steps below is exact in binary64 (the three bounds of the module docstring)."""
    a, b, out = cfg.a_format, cfg.b_format, acc.output
    products_fit = a.man_bits + b.man_bits + 2 <= 53
    sums_fit = acc.fraction_bits + 2 + math.ceil(math.log2(acc.group + 1)) <= 53
    top = max(a.emax + b.emax + 2, out.emax + 1)
    bottom = min(a.emin + b.emin - a.man_bits - b.man_bits, acc.e_zero, out.emin - out.man_bits) - acc.fraction_bits
    return products_fit and sums_fit and top < 1000 and bottom > -1000


def check_operands(values: np.ndarray, fmt: FloatFormat, what: str) -> None:
    """Every entry must be a value of its format (operands arrive as codes): finite, a whole number of quanta
    2^(e - M) of its binade (e at least emin), at most the largest value, and without subnormals not below
    2^emin unless zero. ValueError naming the first entry that is not."""
    flat = np.unique(values)
    magnitude = np.abs(flat)
    steps = np.ldexp(magnitude, fmt.man_bits - exponents(magnitude, fmt.emin))
    ok = np.isfinite(flat) & (steps == np.floor(steps)) & (magnitude <= float(fmt.max_value))
    if not fmt.subnormals:
        ok &= (magnitude == 0) | (magnitude >= 2.0**fmt.emin)
    if not ok.all():
        raise ValueError(f"{what} {flat[~ok][0]!r} is not a value of {fmt.name}")


def exponents(x: np.ndarray, emin: int) -> np.ndarray:
    """decode()'s e of every entry: floor(log2 |x|), at least emin (a zero gets emin; callers replace it)."""
    _, e = np.frexp(np.abs(x))  # |x| = m * 2^e with 1/2 <= m < 1, so floor(log2 |x|) = e - 1
    return np.maximum(e.astype(np.int64) - 1, emin)


def group_sums(a: np.ndarray, b: np.ndarray, addend: np.ndarray, cfg: MacConfig, acc: FusedAccumulator):
    """Steps 1-4 for many groups at once: a and b (..., n) with n <= L the group's operands, ``addend`` (...)
    finite. Returns (count, q): the exact sum of the truncated terms is count * 2^q, q = e_max - F."""
    products = a * b  # exact (bound 1); a product of two non-zero operands is non-zero
    e_products = np.where(products != 0, exponents(a, cfg.a_format.emin) + exponents(b, cfg.b_format.emin), acc.e_zero)
    e_addend = np.where(addend != 0, exponents(addend, acc.output.emin), acc.e_zero)  # not renormalized: e_a + e_b
    e_max = np.maximum(e_products.max(axis=-1), e_addend)  # the addend is always a term: n >= 1 products
    q = e_max - acc.fraction_bits
    kept = np.trunc(np.ldexp(products, -q[..., None]))  # counts of 2^q, toward zero, no guard or sticky bit
    count = kept.sum(axis=-1) + np.trunc(np.ldexp(addend, -q))  # exact (bound 2)
    return count, q


def round_ieee(x: np.ndarray, fmt: FloatFormat, rounding: str) -> np.ndarray:
    """fused_reference.round_ieee on every entry of an array of exact values: the quantum of the entry's binade
    (at least fmt's smallest normal exponent), RTZ or RNE, ±Inf above the largest finite value, +0 for zero."""
    magnitude = np.abs(x)
    e = exponents(magnitude, fmt.emin)
    steps = np.ldexp(magnitude, fmt.man_bits - e)
    n = np.floor(steps) if rounding == "rtz" else np.rint(steps)  # np.rint: ties to even
    rounded = np.ldexp(n, e - fmt.man_bits)
    largest = float(((1 << (fmt.man_bits + 1)) - 1) * Fraction(2) ** (fmt.emax - 1 - fmt.man_bits))
    rounded = np.where(rounded > largest, np.inf, rounded)
    return np.copysign(rounded, x) + 0.0


def round_output(x: np.ndarray, acc: FusedAccumulator) -> np.ndarray:
    """Step 5 on every entry: IEEE outputs here; the contract's saturating R_F per entry on its exact value."""
    if acc.ieee_output:
        return round_ieee(x, acc.output, acc.output_rounding)
    rounded = np.frompyfunc(
        lambda v: float(round_to_format(Fraction(v), acc.output, acc.output_rounding, underflow=True).value), 1, 1)
    return rounded(x).astype(np.float64) + 0.0


def chain(A: np.ndarray, B: np.ndarray, C: np.ndarray, cfg: MacConfig, acc: FusedAccumulator) -> np.ndarray:
    """FDPAs over consecutive groups of L products (the last may be shorter), each output's previous result its
    addend; a non-finite addend (Inf, NaN) passes through unchanged, as in fused_reference.fdpa."""
    c = C + 0.0
    for start in range(0, A.shape[1], acc.group):
        a = A[:, None, start:start + acc.group]  # (M, 1, n)
        b = B[start:start + acc.group].T[None]  # (1, N, n)
        special = ~np.isfinite(c)
        count, q = group_sums(a, b, np.where(special, 0.0, c), cfg, acc)
        c = np.where(special, c, round_output(np.ldexp(count, q), acc))
    return c + 0.0


def promote(total: np.ndarray, partial: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """total + scale * partial with one RNE rounding into fp32 (fused_reference.promote) on every entry where
    binary64 holds the sum exactly: returns (result, done). scale * partial is exact (two fp32 significands);
    the sum with total is exact where its two-sum error is zero and everything is finite. The entries not
    ``done`` are left to the Fraction promote (:func:`lba_core.fused_matmul_reference` does that)."""
    with np.errstate(invalid="ignore", over="ignore"):  # Inf - Inf: NaN, as IEEE says; such entries are not done
        term = scale * partial
        total_sum = total + term
        back = total_sum - total
        error = (total - (total_sum - back)) + (term - back)
    done = np.isfinite(total_sum) & np.isfinite(error) & (error == 0)
    return round_ieee(np.where(done, total_sum, 0.0), PROMOTION_FORMAT, "rne"), done
