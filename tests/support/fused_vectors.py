"""Vectors for the fused dot-product accumulators (docs/arithmetic.md §9) and the public model they are checked on.

:func:`fused_cases` makes matmul problems (A, B, C) of hardware-valid operand values for a fused MacConfig:
random codes and the directed kinds the contract's corners need. :func:`mmasim_matmul` runs the same problem on
MMA-Sim 2.1.1 (``mmasim``, arXiv 2511.10909), the public model of the tensor-core units. The reference, the CPU
kernel and the Triton kernel are all compared with it on the same vectors (tests/test_fused_mmasim.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from lba_core import FloatFormat, MacConfig

#: Directed kinds (docs §9 corners) and the random ones; every kind is generated for every preset.
KINDS = ("random", "normal", "ties", "cancel", "zero_groups", "far", "subnormal", "overflow", "short_k")

#: The hardware dtype of each operand format a preset takes, by (exp_bits, man_bits).
_DTYPES = {
    (4, 3): (torch.float8_e4m3fn, "e4m3", torch.uint8),
    (5, 2): (torch.float8_e5m2, "e5m2", torch.uint8),
    (5, 10): (torch.float16, "f16", torch.int16),
    (8, 7): (torch.bfloat16, "bf16", torch.int16),
}

#: The operand format pairs each preset is checked with (the formats with subnormals, as the hardware's are).
PRESET_OPERANDS = {
    "hopper-fp8": (("e4m3_sub", "e4m3_sub"), ("e5m2_sub", "e5m2_sub"), ("e4m3_sub", "e5m2_sub"), ("e5m2_sub", "e4m3_sub")),
    "hopper-fp8-f16": (("e4m3_sub", "e4m3_sub"), ("e5m2_sub", "e5m2_sub"), ("e4m3_sub", "e5m2_sub")),
    "hopper-fp16": (("e5m10_sub", "e5m10_sub"),),
    "hopper-bf16": (("e8m7_sub", "e8m7_sub"),),
    "blackwell-fp8": (("e4m3_sub", "e4m3_sub"), ("e5m2_sub", "e5m2_sub"), ("e5m2_sub", "e4m3_sub")),
}


@dataclass(frozen=True)
class FusedCase:
    """One matmul problem: Y = A @ B + C through the fused accumulator; all float64 arrays of format values."""

    kind: str
    A: np.ndarray  # (M, K), values of cfg.a_format
    B: np.ndarray  # (K, N), values of cfg.b_format
    C: np.ndarray  # (M, N), the addend (values of the output register: fp32 or fp16); zeros under promotion

    @property
    def outputs(self) -> int:
        return self.C.size


@lru_cache(maxsize=None)
def hardware_values(fmt: FloatFormat) -> np.ndarray:
    """Every finite value of the hardware format behind fmt (OCP e4m3fn/e5m2, IEEE fp16, bf16), ascending, no -0."""
    dtype, _, int_dtype = _DTYPES[(fmt.exp_bits, fmt.man_bits)]
    bits = 8 if int_dtype == torch.uint8 else 16
    codes = torch.arange(1 << bits, dtype=torch.int32)
    if int_dtype == torch.int16:
        codes = codes - (1 << 15)
    values = codes.to(int_dtype).view(dtype).double().numpy()
    values = np.unique(values[np.isfinite(values)])
    values.flags.writeable = False
    return values


def output_dtype(cfg: MacConfig) -> torch.dtype:
    """The register the fused chain's result lives in: fp16 for an e5m10 output, fp32 otherwise."""
    return torch.float16 if cfg.acc.output.exp_bits == 5 else torch.float32


def _addend(rng: np.random.Generator, cfg: MacConfig, shape, kind: str) -> np.ndarray:
    if cfg.acc.promote_every is not None:
        return np.zeros(shape)
    dtype = output_dtype(cfg)
    top = 15.0 if dtype == torch.float16 else 127.0
    if kind == "overflow":
        values = np.ldexp(rng.uniform(1.0, 2.0, shape), int(top)) * rng.choice([-1.0, 1.0], shape)
    elif kind in ("cancel", "zero_groups", "subnormal"):
        values = np.zeros(shape)
    else:
        values = rng.standard_normal(shape) * np.exp2(rng.integers(-8, 12, shape))
        values[rng.random(shape) < 0.5] = 0.0
    return torch.from_numpy(values).to(dtype).double().numpy()


def _operands(rng: np.random.Generator, pool: np.ndarray, shape, kind: str, fmt: FloatFormat) -> np.ndarray:
    magnitudes = np.abs(pool)
    if kind == "ties":  # few significant bits in a narrow range: sums land on rounding boundaries
        pool = pool[(magnitudes >= 0.125) & (magnitudes <= 16) & (np.mod(magnitudes * 8, 1) == 0)]
    elif kind == "subnormal":
        pool = pool[magnitudes < 2.0 ** (fmt.emin + 1)]
    elif kind == "overflow":
        pool = pool[magnitudes >= np.max(magnitudes) / 4]
    elif kind == "normal":
        scale = 2.0 ** rng.integers(-3, 3)
        raw = rng.standard_normal(shape) * scale
        return pool[np.clip(np.searchsorted(pool, raw), 0, len(pool) - 1)]  # a pool value next to the sample
    return rng.choice(pool, size=shape)


def _case(rng: np.random.Generator, cfg: MacConfig, kind: str, rows: int, cols: int) -> FusedCase:
    acc = cfg.acc
    unit = acc.promote_every or acc.group
    depth = {"short_k": unit * int(rng.integers(0, 3)) + int(rng.integers(1, acc.group))}.get(kind, 2 * unit + acc.group // 2)
    a_pool, b_pool = hardware_values(cfg.a_format), hardware_values(cfg.b_format)
    A = _operands(rng, a_pool, (rows, depth), kind, cfg.a_format)
    # Subnormal a times any b: the products' exponents (e_min + e_b, significand below 1) set e_max.
    B = _operands(rng, b_pool, (depth, cols), "random" if kind == "subnormal" else kind, cfg.b_format)
    if kind == "cancel":  # adjacent products cancel exactly: a zero group sum with a non-zero e_max
        pairs = depth // 2 * 2
        A[:, 1:pairs:2] = -A[:, 0:pairs:2]
        B[1:pairs:2] = B[0:pairs:2]
    elif kind == "zero_groups":
        for start in range(0, depth, acc.group):
            A[rng.random(rows) < 0.5, start:start + acc.group] = 0.0
        B[:, rng.random(cols) < 0.25] = 0.0
    elif kind == "far":  # one large term per group, the others far below it, of both signs
        small_a = a_pool[np.abs(a_pool) <= np.quantile(np.abs(a_pool), 0.3)]
        big_a = a_pool[np.abs(a_pool) >= np.quantile(np.abs(a_pool), 0.9)]
        A = rng.choice(small_a, size=(rows, depth))
        A[:, ::acc.group] = rng.choice(big_a, size=A[:, ::acc.group].shape)
    return FusedCase(kind, A, B, _addend(rng, cfg, (rows, cols), kind))


def fused_cases(cfg: MacConfig, outputs: int, seed: int = 0, kinds: tuple[str, ...] = KINDS,
                max_rows: int = 1024, cols: int = 8) -> list[FusedCase]:
    """At least ``outputs`` outputs over ``kinds`` (equal shares), as matmul problems of ``cols`` columns each.

    Deterministic in ``seed``. Operands are values of the hardware formats (no Inf/NaN codes, nothing in the
    toolkit formats' extra top binade); K is 2 groups and a half (``short_k``: not a multiple of L, sometimes
    below L); with promotion, 2 promotion blocks and half a group, and C is zero.
    """
    rng = np.random.default_rng(seed)
    per_kind = max(1, math.ceil(outputs / len(kinds)))
    cases = []
    for kind in kinds:
        remaining = math.ceil(per_kind / cols)
        while remaining > 0:
            rows = min(remaining, max_rows)
            cases.append(_case(rng, cfg, kind, rows, cols))
            remaining -= rows
    return cases


def mmasim_unit(cfg: MacConfig):
    """The MMA-Sim operation modelling cfg's fused unit, without promotion."""
    from mmasim.nv_ptx import WGMMA, TCGen05MMA  # imported here: it compiles its FMA extension on first import

    base = cfg.acc.name.split("+")[0]
    a_type = _DTYPES[(cfg.a_format.exp_bits, cfg.a_format.man_bits)][1]
    b_type = _DTYPES[(cfg.b_format.exp_bits, cfg.b_format.man_bits)][1]
    d_type = "f16" if output_dtype(cfg) == torch.float16 else "f32"
    if base == "blackwell-fp8":
        return TCGen05MMA("Blackwell", f"m64n8k32.kind::f8f6f4.{d_type}.{a_type}.{b_type}")
    k = 32 if a_type in ("e4m3", "e5m2") else 16
    return WGMMA("Hopper", f"m64n8k{k}.{d_type}.{a_type}.{b_type}")


def mmasim_matmul(cfg: MacConfig, A: np.ndarray, B: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Y = A @ B + C on MMA-Sim, as float64. With promotion: each block of ``promote_every`` products is an MMA
    from C = 0 whose result is added into an fp32 total (starting at C) with MMA-Sim's own fp32 FMA (one RNE)."""
    from mmasim.arithmetic.fma import fma

    unit = mmasim_unit(cfg)
    dtype_a = _DTYPES[(cfg.a_format.exp_bits, cfg.a_format.man_bits)][0]
    dtype_b = _DTYPES[(cfg.b_format.exp_bits, cfg.b_format.man_bits)][0]
    A_t = torch.from_numpy(np.ascontiguousarray(A)).to(dtype_a)
    B_t = torch.from_numpy(np.ascontiguousarray(B)).to(dtype_b)
    out = output_dtype(cfg)
    every = cfg.acc.promote_every
    if every is None:
        return unit(A_t, B_t, torch.from_numpy(np.ascontiguousarray(C)).to(out)).double().numpy()
    total = torch.from_numpy(np.ascontiguousarray(C)).float()
    one = torch.ones_like(total)
    for start in range(0, A.shape[1], every):
        partial = unit(A_t[:, start:start + every], B_t[start:start + every], torch.zeros_like(total).to(out))
        total = fma(one, partial.float(), total)
    return total.double().numpy()


def mismatches(expected: np.ndarray, got: np.ndarray) -> int:
    """Outputs that differ bit for bit as binary64 (NaN matches NaN; +0 and -0 differ)."""
    expected, got = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
    same = (expected.view(np.int64) == got.view(np.int64)) | (np.isnan(expected) & np.isnan(got))
    return int((~same).sum())


def corner_counts(cfg: MacConfig, cases: list[FusedCase], results: list[np.ndarray]) -> dict[str, int]:
    """How often the cases reach the contract's corners, so a test can show its directed vectors do their job.

    Looked at in each output's first group (with its C): ``tie`` (RNE outputs: the exact sum halfway between two
    output values), ``truncated_to_zero`` (a non-zero term truncated to 0), ``cancel_to_zero`` (non-zero
    products, sum 0); over the outputs: ``inf``, ``nan``, ``subnormal_operand``, ``short_k``.
    """
    from fractions import Fraction

    from lba_core.formats import floor_log2
    from lba_core.fused_reference import group_terms

    acc = cfg.acc
    counts = dict.fromkeys(("tie", "truncated_to_zero", "cancel_to_zero", "inf", "nan", "subnormal_operand", "short_k"), 0)
    for case, result in zip(cases, results):
        counts["inf"] += int(np.isinf(result).sum())
        counts["nan"] += int(np.isnan(result).sum())
        tiny_a = np.abs(case.A) < 2.0 ** cfg.a_format.emin
        counts["subnormal_operand"] += int(((case.A != 0) & tiny_a).sum())
        counts["short_k"] += int(case.A.shape[1] % acc.group != 0) * case.outputs
        group = min(acc.group, case.A.shape[1])
        for i in range(case.A.shape[0]):
            for j in range(case.B.shape[1]):
                terms = group_terms(case.A[i, :group].tolist(), case.B[:group, j].tolist(), float(case.C[i, j]), cfg)
                counts["truncated_to_zero"] += sum(x != 0 and t == 0 for x, t in zip(terms.exact, terms.truncated))
                total = terms.total
                counts["cancel_to_zero"] += int(total == 0 and any(x != 0 for x in terms.exact))
                if total != 0 and acc.output_rounding == "rne":
                    e = max(floor_log2(abs(total)), acc.output.emin)
                    steps = abs(total) / Fraction(2) ** (e - acc.output.man_bits)
                    counts["tie"] += int(steps.denominator == 2)
    return counts
