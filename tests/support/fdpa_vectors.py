"""FDPA cosimulation vectors (operand codes) and their expected output codes from two oracles.

A vector is one group: L a-codes, L b-codes and one addend code c (output format). ``random_groups`` draws
uniform codes, groups whose exponents overlap (so that terms really add, carry and cancel) and addends near
the products' range; ``directed_groups`` adds the cases the contract singles out: all-zero groups, exact
cancellation to zero, one term far below the maximum, subnormal operands, the overflow region, Inf/NaN
addends (IEEE outputs) and short groups (trailing zero lanes). Expected codes come from
``lba_core.fdpa`` (the exact-rational reference, :func:`reference_codes`) or from MMA-Sim's ``t_fdpa``
(:func:`mmasim_codes`, vectorized, for the output modes MMA-Sim models).
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lba_core import FloatFormat, MacConfig, fdpa
from rtl.fdpa_plan import FdpaPlan, plan_fused


@dataclass(frozen=True)
class FdpaVectors:
    a: np.ndarray  # (N, L) int64 codes of the a format
    b: np.ndarray  # (N, L) int64 codes of the b format
    c: np.ndarray  # (N,) int64 codes of the output format

    def __len__(self) -> int:
        return len(self.c)

    @staticmethod
    def concat(parts: "list[FdpaVectors]") -> "FdpaVectors":
        return FdpaVectors(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("a", "b", "c")))


def code_of(fmt: FloatFormat, sign, exp_code, man):
    return (np.asarray(sign, dtype=np.int64) << (fmt.width - 1)) | (np.asarray(exp_code, dtype=np.int64) << fmt.man_bits) | np.asarray(man, dtype=np.int64)


def random_codes(fmt: FloatFormat, shape, rng, exp_codes=None) -> np.ndarray:
    """Uniform codes, or codes whose exponent code is drawn from ``exp_codes``."""
    if exp_codes is None:
        return rng.integers(0, 1 << fmt.width, size=shape, dtype=np.int64)
    return code_of(fmt, rng.integers(0, 2, size=shape), rng.choice(exp_codes, size=shape), rng.integers(0, 1 << fmt.man_bits, size=shape))


def exponent_window(fmt: FloatFormat, rng, width: int) -> np.ndarray:
    """A random run of ``width`` consecutive exponent codes of fmt (a narrow band of binades)."""
    top = (1 << fmt.exp_bits) - 1
    start = int(rng.integers(0, max(1, top - width + 2)))
    return np.arange(start, min(top, start + width - 1) + 1)


def addend_codes(plan: FdpaPlan, a, b, rng) -> np.ndarray:
    """Addends: a quarter uniform codes, a quarter +0/-0, half with a binade near the group's largest product."""
    out = plan.output
    n = len(a)
    c = random_codes(out, n, rng)
    e_a = np.maximum((a >> plan.a_format.man_bits) & ((1 << plan.a_format.exp_bits) - 1), 1) - plan.a_format.bias
    e_b = np.maximum((b >> plan.b_format.man_bits) & ((1 << plan.b_format.exp_bits) - 1), 1) - plan.b_format.bias
    top = (e_a + e_b).max(axis=1) + rng.integers(-plan.fraction_bits - 3, 4, size=n)
    exp_code = np.clip(top + out.bias, 1, (1 << out.exp_bits) - 2)
    near = code_of(out, rng.integers(0, 2, size=n), exp_code, rng.integers(0, 1 << out.man_bits, size=n))
    kind = rng.integers(0, 4, size=n)
    c = np.where(kind >= 2, near, c)
    return np.where(kind == 1, rng.integers(0, 2, size=n) << (out.width - 1), c)


def random_groups(plan: FdpaPlan, n: int, seed: int) -> FdpaVectors:
    """n groups: a third uniform codes, two thirds with every operand's exponent in a narrow band."""
    rng = np.random.default_rng(seed)
    L = plan.group
    a = random_codes(plan.a_format, (n, L), rng)
    b = random_codes(plan.b_format, (n, L), rng)
    for row in range(n // 3, n):
        width = int(rng.integers(1, 4))
        a[row] = random_codes(plan.a_format, L, rng, exponent_window(plan.a_format, rng, width))
        b[row] = random_codes(plan.b_format, L, rng, exponent_window(plan.b_format, rng, width))
    return FdpaVectors(a, b, addend_codes(plan, a, b, rng))


def directed_groups(plan: FdpaPlan, n_each: int, seed: int) -> FdpaVectors:
    """The contract's corner cases, n_each groups of each kind."""
    rng = np.random.default_rng(seed)
    L, fa, fb, out = plan.group, plan.a_format, plan.b_format, plan.output
    parts = []

    def add(a, b, c=None):
        parts.append(FdpaVectors(a, b, addend_codes(plan, a, b, rng) if c is None else c))

    shape = (n_each, L)
    zeros_a = rng.integers(0, 2, size=shape) << (fa.width - 1)  # +0 and -0 codes
    add(zeros_a, random_codes(fb, shape, rng))  # all-zero groups, random addends
    add(zeros_a, random_codes(fb, shape, rng), rng.integers(0, 2, size=n_each) << (out.width - 1))  # all zero
    # exact cancellation: lane pairs (x, y) and (-x, y); an odd L keeps one lane zero; addend +-0
    a = random_codes(fa, shape, rng, exponent_window(fa, rng, 3))
    b = random_codes(fb, shape, rng, exponent_window(fb, rng, 3))
    half = L // 2
    a[:, half : 2 * half] = a[:, :half] ^ (1 << (fa.width - 1))
    b[:, half : 2 * half] = b[:, :half]
    if L % 2:
        a[:, -1] = 0
    add(a, b, rng.integers(0, 2, size=n_each) << (out.width - 1))
    # one or more terms far below the maximum: lane 0 large, the rest in low binades
    a = random_codes(fa, shape, rng, np.arange(0, 3))
    b = random_codes(fb, shape, rng, np.arange(0, 3))
    a[:, 0] = random_codes(fa, n_each, rng, np.arange((1 << fa.exp_bits) - 3, 1 << fa.exp_bits))
    b[:, 0] = random_codes(fb, n_each, rng, np.arange((1 << fb.exp_bits) - 3, 1 << fb.exp_bits))
    add(a, b)
    # subnormal (exponent code 0) operands, read as zero by formats without subnormals
    add(random_codes(fa, shape, rng, np.array([0, 1])), random_codes(fb, shape, rng, np.array([0, 1])))
    # the overflow region: the largest binades, same sign, and addends near the output's largest values
    big_a = random_codes(fa, shape, rng, np.array([(1 << fa.exp_bits) - 1])) & ~(1 << (fa.width - 1))
    big_b = random_codes(fb, shape, rng, np.array([(1 << fb.exp_bits) - 1])) & ~(1 << (fb.width - 1))
    top = (1 << out.exp_bits) - 1 - (1 if plan.ieee else 0)
    add(big_a, big_b, code_of(out, rng.integers(0, 2, size=n_each), np.full(n_each, top), rng.integers(0, 1 << out.man_bits, size=n_each)))
    # Inf and NaN addends (IEEE outputs): every all-ones exponent code
    if plan.ieee:
        special = code_of(out, rng.integers(0, 2, size=n_each), np.full(n_each, (1 << out.exp_bits) - 1), rng.integers(0, 2, size=n_each) * rng.integers(0, 1 << out.man_bits, size=n_each))
        add(random_codes(fa, shape, rng), random_codes(fb, shape, rng), special)
    # short groups: trailing lanes zero (a group with fewer than L products)
    a = random_codes(fa, shape, rng, exponent_window(fa, rng, 3))
    b = random_codes(fb, shape, rng, exponent_window(fb, rng, 3))
    used = rng.integers(1, L + 1, size=(n_each, 1))
    a[np.arange(L)[None, :] >= used] = 0
    add(a, b)
    return FdpaVectors.concat(parts)


@lru_cache(maxsize=None)
def value_table(fmt: FloatFormat) -> np.ndarray:
    """The value of every code of fmt as float64 (exact: lba_core formats are exact in binary64)."""
    return np.array([float(fmt.decode(code)) for code in range(1 << fmt.width)], dtype=np.float64)


def special_value(plan: FdpaPlan, code: int) -> float | None:
    """inf/-inf/nan for an IEEE output's all-ones exponent codes, else None."""
    out = plan.output
    if not plan.ieee or (code >> out.man_bits) & ((1 << out.exp_bits) - 1) != (1 << out.exp_bits) - 1:
        return None
    if code & ((1 << out.man_bits) - 1):
        return math.nan
    return -math.inf if code >> (out.width - 1) else math.inf


def output_code(plan: FdpaPlan, value: float) -> int:
    """The output code of a reference result: canonical NaN, ±Inf, or the finite value's code (+0 for zero)."""
    out = plan.output
    ones = (1 << out.exp_bits) - 1
    if math.isnan(value):
        return (1 << (out.width - 1)) - 1
    if math.isinf(value):
        return ((1 if value < 0 else 0) << (out.width - 1)) | (ones << out.man_bits)
    return out.encode(value)


def reference_chunk(args) -> list[int]:
    cfg, a, b, c = args
    plan = plan_fused(cfg)
    ta, tb = value_table(plan.a_format), value_table(plan.b_format)
    results = []
    for row_a, row_b, code in zip(a, b, c):
        special = special_value(plan, int(code))
        addend = special if special is not None else plan.output.decode(int(code))
        results.append(output_code(plan, fdpa(ta[row_a].tolist(), tb[row_b].tolist(), addend, cfg)))
    return results


def reference_codes(cfg: MacConfig, vectors: FdpaVectors, processes: int = 1) -> np.ndarray:
    """Expected output codes from lba_core.fdpa (exact rationals; slow: a few thousand groups per second)."""
    chunk = 2000
    jobs = [(cfg, vectors.a[i : i + chunk], vectors.b[i : i + chunk], vectors.c[i : i + chunk]) for i in range(0, len(vectors), chunk)]
    if processes > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(processes) as pool:
            parts = list(pool.map(reference_chunk, jobs))
    else:
        parts = [reference_chunk(job) for job in jobs]
    return np.array([code for part in parts for code in part], dtype=np.int64)


#: (output format, rounding) -> MMA-Sim's rho and the torch dtype of its result.
MMASIM_MODES = {
    ("e8m13_sub", "rtz"): "RZ-E8M13",
    ("e8m23_sub", "rtz"): "RZ-FP32",
    ("e8m23_sub", "rne"): "RNE-FP32",
    ("e5m10_sub", "rne"): "RNE-FP16",
}


def mmasim_supports(plan: FdpaPlan) -> bool:
    return plan.ieee and (plan.output.name, plan.rounding) in MMASIM_MODES


def mmasim_codes(plan: FdpaPlan, vectors: FdpaVectors) -> np.ndarray:
    """Expected output codes from MMA-Sim 2.1.1's ``t_fdpa`` (the public model of the tensor cores): operand
    values as float64 with their format's subnormal exponent, the addend as the fp32/fp16 value of its code."""
    import torch
    from mmasim.arithmetic.fdpa import t_fdpa

    rho = MMASIM_MODES[(plan.output.name, plan.rounding)]
    a = torch.from_numpy(value_table(plan.a_format)[vectors.a])
    b = torch.from_numpy(value_table(plan.b_format)[vectors.b])
    shift = 23 - plan.output.man_bits if plan.output.exp_bits == 8 else 0
    if plan.output.exp_bits == 8:
        c = torch.from_numpy((vectors.c << shift).astype(np.uint32).view(np.int32)).view(torch.float32)
    else:
        c = torch.from_numpy(vectors.c.astype(np.uint16).view(np.int16)).view(torch.float16)
    result = t_fdpa(a, b, c, plan.fraction_bits, rho, plan.e_zero, plan.a_format.emin, plan.b_format.emin)
    if result.dtype == torch.float32:
        bits = result.view(torch.int32).numpy().view(np.uint32).astype(np.int64)
    else:
        bits = result.view(torch.int16).numpy().view(np.uint16).astype(np.int64)
    return bits >> shift
