"""The fused reference (docs/arithmetic.md §9) against MMA-Sim 2.1.1, the public model of the tensor-core units.

Every preset with each operand pair it takes, with and without promotion, on random and directed vectors
(tests/support/fused_vectors.py). A small sample runs in ``make test``; ``make fused-check`` runs the slow one.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from lba_core import MacConfig, fused_matmul_reference

from support.fused_vectors import KINDS, PRESET_OPERANDS, corner_counts, fused_cases, mismatches, mmasim_matmul

pytest.importorskip("mmasim")

CONFIGS = [
    (preset + suffix, a, b)
    for preset, pairs in PRESET_OPERANDS.items()
    for suffix in ("", "+promote64" if preset.endswith(("fp8", "f16")) else "+promote32")
    for a, b in pairs
]
SAMPLE_CONFIGS = [(preset, *pairs[-1]) for preset, pairs in PRESET_OPERANDS.items()] + [
    ("hopper-fp8+promote64", "e4m3_sub", "e4m3_sub"), ("hopper-fp8-f16+promote64", "e5m2_sub", "e5m2_sub")]
#: The slow check's outputs per configuration (the reference is pure Python: ~10 ms an output at K ~ 80).
FULL_OUTPUTS = int(os.environ.get("LBA_FUSED_CHECK_OUTPUTS", "2000"))


def compare(cfg: MacConfig, outputs: int, seed: int, cols: int, kinds: tuple[str, ...] = KINDS):
    cases = fused_cases(cfg, outputs, seed=seed, kinds=kinds, cols=cols, max_rows=64)
    results, bad = [], 0
    for case in cases:
        want = mmasim_matmul(cfg, case.A, case.B, case.C)
        got = fused_matmul_reference(case.A, case.B, cfg, case.C)
        bad += mismatches(want, got)
        results.append(want)
    return cases, results, bad


@pytest.mark.parametrize("acc,a,b", SAMPLE_CONFIGS, ids=lambda x: str(x))
def test_reference_matches_mmasim_sample(acc, a, b):
    cfg = MacConfig(input=a, weight=b, acc=acc)
    cases, _, bad = compare(cfg, outputs=len(KINDS), seed=7, cols=1)
    assert sum(case.outputs for case in cases) >= len(KINDS)
    assert bad == 0


def test_directed_vectors_reach_the_corners():
    """The directed kinds do what they are for, on the configurations where each corner exists."""
    fp16 = MacConfig(input="e5m2_sub", acc="hopper-fp8-f16")
    cases, results, bad = compare(fp16, outputs=4 * len(KINDS), seed=3, cols=2)
    counts = corner_counts(fp16, cases, results)
    assert bad == 0
    for corner in ("tie", "truncated_to_zero", "cancel_to_zero", "inf", "subnormal_operand", "short_k"):
        assert counts[corner] > 0, (corner, counts)
    # An fp32 output overflows only with bf16 products (fp8 products sit far below 2^128 and truncate away).
    bf16 = MacConfig(input="e8m7_sub", acc="hopper-bf16")
    cases, results, bad = compare(bf16, outputs=4, seed=3, cols=4, kinds=("overflow",))
    assert bad == 0 and corner_counts(bf16, cases, results)["inf"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("acc,a,b", CONFIGS, ids=lambda x: str(x))
def test_reference_matches_mmasim_full(acc, a, b):
    cfg = MacConfig(input=a, weight=b, acc=acc)
    cases, results, bad = compare(cfg, outputs=FULL_OUTPUTS, seed=2026, cols=8)
    total = sum(case.outputs for case in cases)
    print(f"{cfg.name}: {total} outputs, {bad} mismatches, corners {corner_counts(cfg, cases, results)}")
    assert total >= FULL_OUTPUTS and bad == 0
    assert np.isfinite(np.concatenate([r.ravel() for r in results])).any()


def test_zero_exponent_is_visible_and_matches():
    """A zero addend at e_zero = -133 sets e_max above bf16 products near 2^-147 and truncates a 2^-165 term
    away: 2^-147 - 2^-149 - 2^-165 gives 3 * 2^-149 (RZ), as MMA-Sim does; with e_zero = -150 it gives 2 * 2^-149."""
    A, B, C = np.array([[2.0**-74, -(2.0**-75), -(2.0**-83)]]), np.array([[2.0**-73], [2.0**-74], [2.0**-82]]), np.zeros((1, 1))
    cfg = MacConfig(input="e8m7_sub", acc="hopper-bf16")
    want = mmasim_matmul(cfg, A, B, C)
    assert want[0, 0] == 3 * 2.0**-149 and mismatches(want, fused_matmul_reference(A, B, cfg, C)) == 0
    moved = MacConfig(input="e8m7_sub", acc="fdpa16f25-e8m23_sub-rtz-z-150")
    assert fused_matmul_reference(A, B, moved, C)[0, 0] == 2 * 2.0**-149
