"""The simulator tests' operands, the reference GEMM and the mismatch count they compare against."""

from __future__ import annotations

import numpy as np
import torch

from lba_core import FloatFormat, MacConfig, dot
from lba_train import EventStats
from lba_train.quantize import quantize


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


def random_codes(fmt: FloatFormat, count: int, rng: np.random.Generator, top_binades: int | None = None) -> np.ndarray:
    """Values of random codes of ``fmt`` (both signs); ``top_binades`` keeps only the largest binades."""
    exponent_codes = rng.integers(1 if not fmt.subnormals else 0, 1 << fmt.exp_bits, size=count)
    if top_binades is not None:
        exponent_codes = rng.integers(max(1, (1 << fmt.exp_bits) - top_binades), 1 << fmt.exp_bits, size=count)
    mantissas = rng.integers(0, 1 << fmt.man_bits, size=count, dtype=np.int64)
    signs = rng.choice([-1.0, 1.0], size=count)
    normal = np.ldexp(1.0 + mantissas / 2.0**fmt.man_bits, exponent_codes - fmt.bias)
    subnormal = np.ldexp(mantissas / 2.0**fmt.man_bits, fmt.emin)
    values = np.where(exponent_codes == 0, subnormal, normal) * signs
    return values + 0.0


def operands(cfg: MacConfig, rows: int, length: int, columns: int, kind: str, rng: np.random.Generator):
    """(X, W) as float64 tensors of operand-format values, shaped by ``kind``."""
    a_fmt, b_fmt = cfg.a_format, cfg.b_format
    if kind == "codes":  # every binade equally likely: subnormals, tiny and huge products
        x = random_codes(a_fmt, rows * length, rng).reshape(rows, length)
        w = random_codes(b_fmt, length * columns, rng).reshape(length, columns)
    elif kind == "saturation":  # products near the top of the range pile up past the accumulator's max
        x = np.abs(random_codes(a_fmt, rows * length, rng, top_binades=2)).reshape(rows, length)
        w = np.abs(random_codes(b_fmt, length * columns, rng, top_binades=2)).reshape(length, columns)
        w[:, ::3] *= -1.0
    elif kind == "cancellation":  # each product is followed by its negative, with small ones in between
        x = random_codes(a_fmt, rows * length, rng).reshape(rows, length)
        w = random_codes(b_fmt, length * columns, rng).reshape(length, columns)
        x[:, 1::2] = x[:, 0:length - 1:2]
        w[1::2, :] = -w[0:length - 1:2, :]
        w[2::5, :] *= 2.0**-9
    else:  # "gaussian": real-valued data
        x = rng.normal(0, 2.0, (rows, length))
        w = rng.normal(0, 2.0, (length, columns))
    # Into the operand formats, as lba_matmul does (representable values pass unchanged).
    return torch.tensor(quantize(x, a_fmt)), torch.tensor(quantize(w, b_fmt))


def batched_operands(cfg: MacConfig, batch: int, rows: int, length: int, columns: int, kind: str,
                     rng: np.random.Generator):
    """(X, W) stacked from ``batch`` independent :func:`operands` pairs: (batch, rows, length), (batch, length, columns)."""
    pairs = [operands(cfg, rows, length, columns, kind, rng) for _ in range(batch)]
    return torch.stack([pair[0] for pair in pairs]), torch.stack([pair[1] for pair in pairs])
