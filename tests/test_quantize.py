"""lba_train.quantize (vectorized R_F) against the reference, element by element."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

import lba_train
from lba_core import FloatFormat, round_to_format
from lba_train import quantize


def probe_values(fmt: FloatFormat, rng: np.random.Generator) -> np.ndarray:
    """Random magnitudes over the whole range, plus every value, midpoint and neighbour of small formats."""
    emin, emax = fmt.emin - fmt.man_bits - 3, fmt.emax + 2
    random = rng.uniform(-1, 1, 4000) * np.exp2(rng.uniform(emin, emax, 4000))
    values = np.array([float(v) for v in fmt.values()]) if fmt.width <= 12 else np.array([float(fmt.max_value), float(fmt.min_normal)])
    mids = (values[1:] + values[:-1]) / 2
    near = np.concatenate([mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), values * (1 + 2.0**-40)])
    return np.concatenate([random, values, near, [0.0, -0.0, 1e300, -1e300, 5e-324]])


@pytest.mark.parametrize("name", ["e4m3", "e5m2", "e4m3_sub", "e2m1_sub", "e4m7", "e5m10", "fp32", "bf16", "e3m8_b1"])
@pytest.mark.parametrize("rounding", ["rne", "rtz"])
@pytest.mark.parametrize("underflow", [True, False])
def test_quantize_matches_reference(name, rounding, underflow, comparisons):
    fmt = FloatFormat.parse(name)
    x = probe_values(fmt, np.random.default_rng(zlib.crc32(f"{name}-{rounding}-{underflow}".encode())))
    got = quantize(torch.from_numpy(x), fmt, rounding, underflow).numpy()
    expected = np.array([float(round_to_format(float(v), fmt, rounding, underflow).value) for v in x])
    mismatches = int(np.sum((got != expected) | (np.signbit(got) != np.signbit(expected))))
    comparisons(f"quantize {name} {rounding} underflow={underflow}", x.size, mismatches)
    assert mismatches == 0


def test_types_dtypes_and_special_values():
    x = torch.tensor([0.3, -1e9, float("inf"), float("-inf"), -0.0], dtype=torch.float32)
    q = quantize(x, "e4m3")
    assert q.dtype == torch.float32 and q.tolist() == [0.3125, -480.0, 480.0, -480.0, 0.0]
    assert not torch.signbit(q[-1])  # +0, never -0
    assert quantize(x, "fp32").dtype == torch.float64  # e8m23 reaches 2^128: does not fit binary32
    assert isinstance(quantize(np.array([0.3]), "e4m3"), np.ndarray)
    assert quantize(0.3, "e4m3") == 0.3125
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([1.0, float("nan")]), "e4m3")
    with pytest.raises(ValueError, match="malformed"):
        quantize(torch.tensor([1.0]), "e4q3")
    with pytest.raises(TypeError, match="torch.Tensor"):
        quantize("1.0", "e4m3")


def test_reference_dot_entry_point():
    cfg = lba_train.MacConfig("e4m3", "e4m7")
    assert lba_train.reference_dot(torch.tensor([1.0, 2.0]), np.array([3.0, 4.0]), cfg) == 11.0
    assert lba_train.reference_dot([0.3], [1.0], cfg) == 0.3125  # operands are rounded into the input format
    with pytest.raises(ValueError, match="differ in length"):
        lba_train.reference_dot([1.0], [1.0, 2.0], cfg)
    with pytest.raises(ValueError, match="1-D"):
        lba_train.reference_dot([[1.0]], [[1.0]], cfg)
    with pytest.raises(ValueError, match="NaN"):
        lba_train.reference_dot([float("nan")], [1.0], cfg)


@pytest.mark.parametrize("name", ["int8", "int32", "fx8.3", "fx16.12_sat", "fx12.1000", "fx40.1022", "int4"])
@pytest.mark.parametrize("rounding", ["rne", "rtz"])
def test_fixed_point_conversion_matches_the_reference(name, rounding, comparisons):
    """Operand conversion into fixed-point formats, F from 0 to 1022 (the largest a format may have): grid
    points, midpoints and their neighbours, saturation, binary64's extremes, against lba_core.quantize_value."""
    from lba_core import parse_format, quantize_value

    fmt = parse_format(name)
    rng = np.random.default_rng(zlib.crc32(f"fixed-{name}-{rounding}".encode()))
    quantum = 2.0**-fmt.frac_bits
    steps = np.concatenate([rng.integers(fmt.min_int, fmt.max_int, 500, endpoint=True),
                            [fmt.min_int, fmt.max_int, 0, 1, -1]])
    grid = steps.astype(np.float64) * quantum
    mids = grid + quantum / 2
    extremes = [1e300, -1e300, 5e-324, -5e-324, 0.0, -0.0, float(fmt.max_value) * 2, -float(fmt.max_value) * 2]
    x = np.concatenate([grid, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), grid * 4 + quantum,
                        extremes])
    got = quantize(torch.from_numpy(x), fmt, rounding).numpy()
    expected = np.array([float(quantize_value(float(v), fmt, rounding)) for v in x])
    mismatches = int(np.sum((got != expected) | (np.signbit(got) & (got == 0))))  # +0, never -0
    comparisons(f"quantize {name} {rounding} vs lba_core.quantize_value", x.size, mismatches)
    assert mismatches == 0
