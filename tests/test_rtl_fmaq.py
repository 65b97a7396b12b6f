"""The Amaranth FMAq and chunk adder in Amaranth's simulator against lba_core.fmaq / accumulate (quick subset).

The full configuration matrix runs in tests/test_cosim_full.py (make cosim).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from lba_core import MacConfig, accumulate
from rtl import ChunkAdder
from support.reference import expected_results
from support.simulators import STEP_OUTPUTS, simulate_combinational, simulate_fmaq_amaranth
from support.vectors import (
    Vectors,
    boundary_codes,
    boundary_vectors,
    cancellation_vectors,
    mismatch_report,
    pack_result,
    random_vectors,
)

QUICK_CONFIGS = [
    MacConfig(input="e4m3", acc="e4m7"),
    MacConfig(input="e4m3", acc="e4m7", rounding="rtz"),
    MacConfig(input="e5m2_sub", acc="e5m6", product="e4m3_sub"),
    MacConfig(input="e3m4", acc="e3m8", rounding="rtz", product="e4m5"),
    MacConfig(input="e2m1_sub", acc="e4m3"),
    MacConfig(input="e4m3_sub", acc="e5m10", rounding="rtz"),
    MacConfig(input="e5m2", acc="e8m23"),
    MacConfig(input="e4m3", acc="e4m3", rounding="rtz", product="e4m3"),
    MacConfig(input="e4m3", weight="e5m2", acc="e8m7", rounding="rtz"),
    MacConfig(input="e3m4_sub", acc="e4m7_sub", product="e5m3_sub"),
]


def check_fmaq(cfg: MacConfig, vectors: Vectors, comparisons) -> None:
    expected = expected_results(cfg, vectors)
    got = simulate_fmaq_amaranth(cfg, vectors)
    mismatches = int(np.count_nonzero(expected != got))
    comparisons(f"amaranth fmaq {cfg.name}", len(vectors), mismatches)
    assert mismatches == 0, "\n".join(mismatch_report(cfg, vectors, expected, got))


@pytest.mark.parametrize("cfg", QUICK_CONFIGS, ids=lambda cfg: cfg.name)
def test_fmaq_random_and_boundary(cfg, comparisons):
    vectors = Vectors.concat(
        [random_vectors(cfg, 150, seed=1), boundary_vectors(cfg, boundary_codes(cfg.acc, 1), 150, seed=2)]
    )
    check_fmaq(cfg, vectors, comparisons)


@pytest.mark.parametrize(
    "cfg",
    [
        MacConfig(input="e4m3", acc="e4m3", rounding="rtz"),
        MacConfig(input="e5m2_sub", acc="e3m8"),
        MacConfig(input="e4m3", acc="e5m6", rounding="rtz", product="e5m3"),
    ],
    ids=lambda cfg: cfg.name,
)
def test_fmaq_massive_cancellation(cfg, comparisons):
    check_fmaq(cfg, cancellation_vectors(cfg, 200, seed=3), comparisons)


def test_fmaq_zero_codes_and_sticky_subtraction(comparisons):
    """-0 and exponent-0 codes read as zero (no subnormals), and RTZ with a sticky on the subtracted operand:
    1 - tiny must truncate to the value below 1, not stay at 1."""
    cfg = MacConfig(input="e4m3", acc="e4m3", rounding="rtz")
    one, minus_zero, dead = 0x38, 0x80, 0x05  # 1.0, -0, exponent 0 with mantissa 101
    tiny = 0x08  # 2^-6
    vectors = Vectors(
        np.array([one, minus_zero, dead, one, tiny | 0x80, tiny | 0x80, one, dead]),
        np.array([one, one, one, minus_zero, tiny, one, dead, tiny]),
        np.array([minus_zero, 0x38, 0x38, dead, one, one, 0x80, 0]),
    )
    check_fmaq(cfg, vectors, comparisons)


def test_chunk_adder_against_accumulate(comparisons):
    cfg = MacConfig(input="e4m3", acc="e4m3", rounding="rtz", chunk_size=4)
    rng = random.Random(5)
    fmt = cfg.acc
    pairs = [(rng.randrange(fmt.code_count), rng.randrange(fmt.code_count)) for _ in range(400)]
    pairs += [(code, code ^ (1 << (fmt.width - 1))) for code in range(0, fmt.code_count, 7)]  # x + (-x)
    rows = [{"acc_in": acc, "addend": addend} for acc, addend in pairs]
    got = [pack_result(*out) for out in simulate_combinational(ChunkAdder(cfg), rows, STEP_OUTPUTS)]
    expected = []
    for acc, addend in pairs:
        step = accumulate(fmt.decode(acc), fmt.decode(addend), cfg)
        expected.append(pack_result(fmt.encode(step.value), step.overflow, step.underflow, step.swamp))
    mismatches = sum(e != g for e, g in zip(expected, got))
    comparisons("amaranth chunk adder e4m3 rtz", len(pairs), mismatches)
    assert mismatches == 0
