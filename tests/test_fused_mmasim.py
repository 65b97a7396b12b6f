"""The fused accumulators (docs/arithmetic.md §9) against MMA-Sim 2.1.1, the public model of the tensor-core units
(``mmasim``, arXiv 2511.10909: WGMMA("Hopper", "m64n8k32.f32.e4m3.e4m3") and its siblings, TCGen05MMA for
Blackwell): the readable reference (lba_core.fused_matmul_reference), the CPU kernel and the Triton kernel (the
public entry points ``lba_train.kernels.fused_numba.gemm`` and ``fused_triton.gemm``, Triton under its
interpreter, TRITON_INTERPRET=1), all on the same vectors, each output compared bit for bit.

Every preset with each operand pair it takes (mixed e4m3 x e5m2 too), with and without promotion, on random
vectors and the directed kinds of tests/support/fused_vectors.py (ties, cancellation to zero, all-zero groups, a
term far below the maximum, subnormal operands, the overflow region, K not a multiple of L). ``make test`` runs a
sample (every preset, every kind, a few outputs); ``make fused-check`` runs >= 10^6 outputs per preset
(LBA_FUSED_CHECK_OUTPUTS overrides) and prints the outputs compared per preset, category and kind.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch

TRITON = importlib.util.find_spec("triton") is not None and not (
    "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1")
if TRITON:
    os.environ["TRITON_INTERPRET"] = "1"  # before Triton is first imported (see tests/test_triton_gemm.py)

from lba_core import MacConfig, fused_matmul_reference  # noqa: E402
from lba_train.kernels.fused_plan import fused_spec, scale_floor  # noqa: E402

from support.fused_vectors import (KINDS, PRESET_OPERANDS, corner_counts, fused_cases, mismatches,  # noqa: E402
                                   mmasim_matmul)

pytest.importorskip("mmasim")

#: The random kinds; every other kind of fused_vectors.KINDS is directed at a corner of the contract.
RANDOM_KINDS = ("random", "normal")
#: The slow check's outputs per preset, over its configurations (operand pairs, with and without promotion).
FULL_OUTPUTS = int(os.environ.get("LBA_FUSED_CHECK_OUTPUTS", "1000000"))
#: Interpreted Triton walks every k in Python once per program: one large block per case keeps that cheap.
TRITON_BLOCK = (256, 64)


def promotions(preset: str) -> tuple[str, ...]:
    """Without promotion, and promoted every 128 products (the DeepSeek-V3 recipe) or 32 for the 16-bit units."""
    return ("", "+promote128" if "fp8" in preset else "+promote32")


def preset_configs(preset: str) -> list[tuple[str, str, str]]:
    return [(preset + suffix, a, b) for suffix in promotions(preset) for a, b in PRESET_OPERANDS[preset]]


def reference(cfg: MacConfig, A, B, C) -> np.ndarray:
    return fused_matmul_reference(A, B, cfg, C)


def numba_kernel(cfg: MacConfig, A, B, C) -> np.ndarray:
    from lba_train.kernels import fused_numba

    values, _ = fused_numba.gemm(A[None], B[None], fused_spec(cfg), False, C[None])
    return np.asarray(values)[0]


def triton_kernel(cfg: MacConfig, A, B, C) -> np.ndarray:
    from lba_train.kernels import fused_triton

    values, _ = fused_triton.gemm(torch.from_numpy(A)[None], torch.from_numpy(B)[None], fused_spec(cfg), False,
                                  torch.from_numpy(C)[None])
    return values[0].numpy()


IMPLEMENTATIONS = {"reference": reference, "numba": numba_kernel}
if TRITON:
    IMPLEMENTATIONS["triton"] = triton_kernel


@pytest.fixture
def large_triton_blocks(monkeypatch):
    if TRITON:
        from lba_train.kernels import fused_triton

        monkeypatch.setattr(fused_triton, "BLOCK_M", TRITON_BLOCK[0], raising=False)
        monkeypatch.setattr(fused_triton, "BLOCK_N", TRITON_BLOCK[1], raising=False)


def compare(cfg: MacConfig, outputs: int, seed: int, cols: int, kinds: tuple[str, ...] = KINDS,
            max_rows: int = 1024, implementations: tuple[str, ...] = tuple(IMPLEMENTATIONS)) -> tuple[Counter, Counter]:
    """(outputs compared per kind, mismatches per implementation) against MMA-Sim on fused_cases."""
    compared, bad = Counter(), Counter({name: 0 for name in implementations})
    for case in fused_cases(cfg, outputs, seed=seed, kinds=kinds, cols=cols, max_rows=max_rows):
        want = mmasim_matmul(cfg, case.A, case.B, case.C)
        for name in implementations:
            bad[name] += mismatches(want, IMPLEMENTATIONS[name](cfg, case.A, case.B, case.C))
        compared[case.kind] += case.outputs
    return compared, bad


def summary(name: str, compared: Counter, bad: Counter) -> str:
    random = sum(compared[kind] for kind in RANDOM_KINDS)
    directed = sum(compared.values()) - random
    kinds = ", ".join(f"{kind} {compared[kind]:,}" for kind in KINDS)
    verdict = ", ".join(f"{impl} {count}" for impl, count in bad.items())
    return (f"{name}: {random + directed:,} outputs vs MMA-Sim 2.1.1 (random {random:,}, directed {directed:,}: "
            f"{kinds}); mismatches: {verdict}")


@pytest.mark.parametrize("preset", list(PRESET_OPERANDS))
def test_all_three_match_mmasim_sample(preset, large_triton_blocks):
    """Every kind on the preset's last operand pair (mixed where it has one), 2 outputs each: the directed kinds
    on all three, the random ones and the promoted form on the reference and the CPU kernel (interpreted Triton
    costs ~0.1 s a case: the full check has it everywhere)."""
    a, b = PRESET_OPERANDS[preset][-1]
    directed = tuple(kind for kind in KINDS if kind not in RANDOM_KINDS)
    cheap = ("reference", "numba")
    compared, bad = Counter(), Counter()
    for suffix, kinds, chosen in (("", directed, tuple(IMPLEMENTATIONS)), ("", RANDOM_KINDS, cheap),
                                  (promotions(preset)[1], KINDS, cheap)):
        cfg = MacConfig(input=a, weight=b, acc=preset + suffix)
        got, wrong = compare(cfg, outputs=2 * len(kinds), seed=7, cols=2, kinds=kinds, implementations=chosen)
        compared.update(got)
        bad.update(wrong)
    assert set(compared) == set(KINDS) and min(compared.values()) >= 2 * 2
    assert set(bad) == set(IMPLEMENTATIONS) and sum(bad.values()) == 0, summary(preset, compared, bad)


def test_directed_vectors_reach_the_corners():
    """The directed kinds do what they are for, on the configurations where each corner exists."""
    fp16 = MacConfig(input="e5m2_sub", acc="hopper-fp8-f16")
    cases = fused_cases(fp16, 4 * len(KINDS), seed=3, cols=2, max_rows=64)
    results = [mmasim_matmul(fp16, case.A, case.B, case.C) for case in cases]
    assert sum(mismatches(want, reference(fp16, case.A, case.B, case.C)) for case, want in zip(cases, results)) == 0
    counts = corner_counts(fp16, cases, results)
    for corner in ("tie", "truncated_to_zero", "cancel_to_zero", "inf", "subnormal_operand", "short_k"):
        assert counts[corner] > 0, (corner, counts)
    # An fp32 output overflows only with bf16 products (fp8 products sit far below 2^128 and truncate away).
    bf16 = MacConfig(input="e8m7_sub", acc="hopper-bf16")
    cases = fused_cases(bf16, 16, seed=3, cols=4, max_rows=64, kinds=("overflow",))
    results = [mmasim_matmul(bf16, case.A, case.B, case.C) for case in cases]
    assert sum(mismatches(want, reference(bf16, case.A, case.B, case.C)) for case, want in zip(cases, results)) == 0
    assert corner_counts(bf16, cases, results)["inf"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESET_OPERANDS))
def test_all_three_match_mmasim_full(preset, large_triton_blocks):
    """>= FULL_OUTPUTS outputs per preset, shared equally by its configurations, all kinds in equal shares."""
    configs = preset_configs(preset)
    per_config = math.ceil(FULL_OUTPUTS / len(configs))
    compared, bad = Counter(), Counter({name: 0 for name in IMPLEMENTATIONS})
    for index, (acc, a, b) in enumerate(configs):
        cfg = MacConfig(input=a, weight=b, acc=acc)
        got, wrong = compare(cfg, outputs=per_config, seed=2026 + index, cols=64)
        print(summary(f"  {cfg.name}", got, wrong))
        compared.update(got)
        bad.update(wrong)
    print(summary(preset, compared, bad))
    assert sum(compared.values()) >= FULL_OUTPUTS and set(compared) == set(KINDS)
    assert TRITON and sum(bad.values()) == 0


@pytest.mark.parametrize("preset", list(PRESET_OPERANDS))
def test_addend_below_every_product_matches(preset, large_triton_blocks):
    """An addend C below the kernels' floor on e_max (fused_plan.scale_floor, under every product's exponent),
    from the output's smallest subnormal up: over a group whose products are all zero e_max is C's own exponent
    and C's term keeps it whole; a later group of products ~1 truncates it away. Both kernels once took the
    floored e_max for C's term too and truncated C to 0 (hopper-fp8: C = 2^-130 gave 0, 2^-40 gave 2^-53)."""
    a, b = PRESET_OPERANDS[preset][-1]
    cfg = MacConfig(input=a, weight=b, acc=preset)
    output, group = cfg.acc.output, cfg.acc.group
    floor_exponent = int(math.log2(scale_floor(fused_spec(cfg))))
    lowest = output.emin - output.man_bits
    exponents = range(lowest, max(floor_exponent, output.emin) + 3, 3)
    C = np.array([[sign * m * 2.0**q] * 2 for q in exponents for m, sign in ((1, 1), (3, -1))])
    length = 2 * group + 3
    A = np.full((len(C), length), 0.75)
    B = np.zeros((length, 2))
    B[group:, 1] = 1.5  # column 0: every product zero; column 1: the first group's products zero
    want = mmasim_matmul(cfg, A, B, C)
    assert np.count_nonzero(want[:, 0]) >= len(C) // 2  # C survives where the output holds it
    bad = {name: mismatches(want, implementation(cfg, A, B, C)) for name, implementation in IMPLEMENTATIONS.items()}
    assert set(bad) == set(IMPLEMENTATIONS) and sum(bad.values()) == 0, (preset, bad)


def test_zero_exponent_is_visible_and_matches():
    """A zero addend at e_zero = -133 sets e_max above bf16 products near 2^-147 and truncates a 2^-165 term
    away: 2^-147 - 2^-149 - 2^-165 gives 3 * 2^-149 (RZ), as MMA-Sim does; with e_zero = -150 it gives 2 * 2^-149."""
    A, B, C = np.array([[2.0**-74, -(2.0**-75), -(2.0**-83)]]), np.array([[2.0**-73], [2.0**-74], [2.0**-82]]), np.zeros((1, 1))
    cfg = MacConfig(input="e8m7_sub", acc="hopper-bf16")
    want = mmasim_matmul(cfg, A, B, C)
    assert want[0, 0] == 3 * 2.0**-149 and mismatches(want, fused_matmul_reference(A, B, cfg, C)) == 0
    moved = MacConfig(input="e8m7_sub", acc="fdpa16f25-e8m23_sub-rtz-z-150")
    assert fused_matmul_reference(A, B, moved, C)[0, 0] == 2 * 2.0**-149
