"""The promotion stage (rtl/fdpa_promotion.py) in Amaranth's simulator against lba_core's ``promote`` (one RNE
rounding into IEEE fp32): random totals and FDPA outputs, exact cancellation, the overflow region, subnormals,
and every Inf/NaN combination."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from lba_core import ConfigError, MacConfig
from lba_core.fused_reference import promote
from rtl.fdpa_plan import plan_fused
from rtl.fdpa_promotion import PromotionAdder
from support.fdpa_vectors import output_code, special_value
from support.simulators import simulate_combinational


def fp32_value(code: int) -> float:
    return struct.unpack("<f", struct.pack("<I", code))[0]


def fp32_code(value: float) -> int:
    """The fp32 code of a value (RNE; beyond the fp32 range: Inf, as the float32 conversion does)."""
    if math.isnan(value):
        return 0x7FFFFFFF
    with np.errstate(over="ignore"):
        return int(np.array([value], dtype=np.float64).astype(np.float32).view(np.uint32)[0])


def partial_value(plan, code: int) -> float:
    special = special_value(plan, code)
    return special if special is not None else float(plan.output.decode(code))


def cases(plan, n: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    out = plan.output
    rows = []
    for _ in range(n):
        kind = rng.integers(0, 5)
        partial = int(rng.integers(0, 1 << out.width))
        if kind == 0:  # uniform fp32 totals
            total = int(rng.integers(0, 1 << 32))
        else:  # a total in the partial's binades, or its exact negation (cancellation)
            value = partial_value(plan, partial)
            scale = float(2.0 ** int(rng.integers(-30, 31))) if kind < 3 else 1.0
            total = fp32_code(-value if kind == 4 else value * scale * float(rng.uniform(0.5, 2.0))) if math.isfinite(value) else int(rng.integers(0, 1 << 32))
            if kind == 3 and math.isfinite(value):  # the overflow region
                total = fp32_code(float(np.float32(3.0e38)) * (1 if rng.integers(0, 2) else -1))
        rows.append((total & 0xFFFFFFFF, partial))
    ones = (1 << out.exp_bits) - 1
    specials = [ones << out.man_bits, (1 << (out.width - 1)) | (ones << out.man_bits), (ones << out.man_bits) | 1]
    fp32_specials = [0x7F800000, 0xFF800000, 0x7FC00000, 0x3F800000, 0]
    rows += [(t, p) for t in fp32_specials for p in specials + [0, 1, (1 << (out.width - 1)) | 5]]
    return rows


@pytest.mark.parametrize("acc", ["hopper-fp8", "hopper-fp8-f16"])
def test_promotion_adder_against_reference(acc, comparisons):
    cfg = MacConfig(input="e4m3", acc=acc)
    plan = plan_fused(cfg)
    rows = cases(plan, 500, seed=3)
    got = simulate_combinational(PromotionAdder(plan), [{"total": t, "partial": p} for t, p in rows], ["total_out"])
    wrong = []
    for (total, partial), (out,) in zip(rows, got):
        expected = fp32_code(promote(fp32_value(total), partial_value(plan, partial)))
        if out != expected:
            wrong.append((hex(total), hex(partial), hex(expected), hex(out)))
    comparisons(f"amaranth promotion_adder {acc} vs lba_core promote", len(rows), len(wrong))
    assert not wrong, wrong[:5]


def test_promotion_needs_an_ieee_fp32_compatible_output():
    with pytest.raises(ConfigError, match="promotion"):
        PromotionAdder(plan_fused(MacConfig(input="e4m3", acc="fdpa8f10-e5m6-rne-sat")))
    assert output_code(plan_fused(MacConfig(input="e4m3", acc="hopper-fp8")), math.inf) == 0xFF << 13
