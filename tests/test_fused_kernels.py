"""The fused (tensor-core) GEMM kernels, Numba and Triton (interpreted), against MMA-Sim 2.1.1 bit for bit.

Every preset with each operand pair it takes (tests/support/fused_vectors.py: random codes and the directed
kinds: ties, cancellation to zero, all-zero groups, far-below terms, subnormal operands, the overflow region,
K not a multiple of L; mixed e4m3 x e5m2), with and without promotion. A sample runs in ``make test``;
``make fused-check`` runs >= 10^6 outputs per configuration on the Numba kernel and a smaller set on the
interpreted Triton kernel (LBA_FUSED_KERNEL_OUTPUTS, LBA_FUSED_TRITON_OUTPUTS override the counts).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
import torch

TRITON = importlib.util.find_spec("triton") is not None and not (
    "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1")
if TRITON:
    os.environ["TRITON_INTERPRET"] = "1"  # before Triton is first imported (see tests/test_triton_gemm.py)

from lba_core import MacConfig, fused_matmul_reference  # noqa: E402
from lba_train.kernels import fused_numba  # noqa: E402
from lba_train.kernels.fused_plan import fused_spec, steps_per_output  # noqa: E402

from support.fused_vectors import KINDS, PRESET_OPERANDS, fused_cases, mismatches, mmasim_matmul  # noqa: E402

pytest.importorskip("mmasim")

CONFIGS = [
    (preset + suffix, a, b)
    for preset, pairs in PRESET_OPERANDS.items()
    for suffix in ("", "+promote64" if preset.endswith(("fp8", "f16")) else "+promote32")
    for a, b in pairs
]
SAMPLE_CONFIGS = [(preset, *pairs[-1]) for preset, pairs in PRESET_OPERANDS.items()] + [
    ("hopper-fp8+promote64", "e4m3_sub", "e4m3_sub"), ("hopper-fp8-f16+promote64", "e5m2_sub", "e5m2_sub")]
FULL_OUTPUTS = int(os.environ.get("LBA_FUSED_KERNEL_OUTPUTS", "1000000"))
TRITON_FULL_OUTPUTS = int(os.environ.get("LBA_FUSED_TRITON_OUTPUTS", "20000"))


def numba_matmul(cfg: MacConfig, A, B, C) -> np.ndarray:
    values, _ = fused_numba.gemm(A[None], B[None], fused_spec(cfg), False, C[None])
    return values[0]


def triton_matmul(cfg: MacConfig, A, B, C) -> np.ndarray:
    from lba_train.kernels import fused_triton

    values, _ = fused_triton.gemm(torch.from_numpy(A)[None], torch.from_numpy(B)[None], fused_spec(cfg), False,
                                  torch.from_numpy(C)[None])
    return values[0].numpy()


def compare(cfg: MacConfig, run, outputs: int, seed: int, cols: int, max_rows: int = 1024,
            kinds: tuple[str, ...] = KINDS) -> tuple[int, int]:
    """(outputs compared, mismatches) of ``run`` against MMA-Sim on fused_cases."""
    compared = bad = 0
    for case in fused_cases(cfg, outputs, seed=seed, cols=cols, max_rows=max_rows, kinds=kinds):
        bad += mismatches(mmasim_matmul(cfg, case.A, case.B, case.C), run(cfg, case.A, case.B, case.C))
        compared += case.outputs
    return compared, bad


@pytest.mark.parametrize("acc,a,b", SAMPLE_CONFIGS, ids=lambda x: str(x))
def test_numba_kernel_matches_mmasim_sample(acc, a, b):
    cfg = MacConfig(input=a, weight=b, acc=acc)
    compared, bad = compare(cfg, numba_matmul, outputs=4 * len(KINDS) * 8, seed=11, cols=8)
    assert compared >= 4 * len(KINDS) * 8 and bad == 0


@pytest.mark.skipif(not TRITON, reason="Triton is not installed or was imported before TRITON_INTERPRET=1")
def test_triton_kernel_matches_mmasim_sample():
    """The interpreter walks every k in Python: three kinds on mixed e5m2 x e4m3 (the full set is slow)."""
    cfg = MacConfig(input="e5m2_sub", weight="e4m3_sub", acc="hopper-fp8")
    kinds = ("random", "overflow", "short_k")
    compared, bad = compare(cfg, triton_matmul, outputs=3 * 16, seed=12, cols=16, kinds=kinds)
    assert compared >= 3 * 16 and bad == 0


def test_kernels_match_the_reference_on_an_addend_and_the_zero_exponent():
    """The e_zero corner of tests/test_fused_mmasim.py (a zero addend at -133 sets e_max above bf16 products)
    and a general spelling with another e_zero, on both kernels and the readable reference."""
    A, B, C = (np.array([[2.0**-74, -(2.0**-75), -(2.0**-83)]]), np.array([[2.0**-73], [2.0**-74], [2.0**-82]]),
               np.zeros((1, 1)))
    cfg = MacConfig(input="e8m7_sub", acc="hopper-bf16")
    assert numba_matmul(cfg, A, B, C)[0, 0] == 3 * 2.0**-149
    moved = MacConfig(input="e8m7_sub", acc="fdpa16f25-e8m23_sub-rtz-z-150")
    assert numba_matmul(moved, A, B, C)[0, 0] == 2 * 2.0**-149 == fused_matmul_reference(A, B, moved, C)[0, 0]
    if TRITON:
        assert triton_matmul(cfg, A, B, C)[0, 0] == 3 * 2.0**-149
        assert triton_matmul(moved, A, B, C)[0, 0] == 2 * 2.0**-149


def test_saturating_output_matches_the_reference():
    """A non-IEEE (saturating, -sat) general output: the kernels follow the contract's R_F there."""
    cfg = MacConfig(input="e5m2_sub", acc="fdpa8f6-e5m4_sub-rne-sat")
    rng = np.random.default_rng(5)
    A = np.ldexp(rng.integers(-7, 8, (6, 21)) / 4.0, rng.integers(0, 16, (6, 21)))
    B = np.ldexp(rng.integers(-7, 8, (21, 5)) / 4.0, rng.integers(-14, 2, (21, 5)))
    want = fused_matmul_reference(A, B, cfg)
    assert np.isfinite(want).all() and mismatches(want, numba_matmul(cfg, A, B, np.zeros((6, 5)))) == 0
    if TRITON:
        assert mismatches(want, triton_matmul(cfg, A, B, np.zeros((6, 5)))) == 0


def test_stats_count_truncation():
    """The truncation statistics on a hand-made group: 1 + 2^-20 + 2^-20 with F = 13 keeps 1, zeroes two terms."""
    cfg = MacConfig(input="e5m2_sub", acc="hopper-fp8")
    A = np.array([[1.0, 2.0**-10, 2.0**-10]])
    B = np.array([[1.0], [2.0**-10], [2.0**-10]])
    values, stats = fused_numba.gemm(A[None], B[None], fused_spec(cfg), True)
    assert values[0, 0, 0] == 1.0
    assert list(stats[:4]) == [0, 0, 3, 2]
    assert stats[4] == 1.0 + 2.0**-19 and stats[5] == 2.0**-19
    assert steps_per_output(fused_spec(cfg), 3) == 1
    if TRITON:
        from lba_train.kernels import fused_triton

        _, triton_stats = fused_triton.gemm(torch.from_numpy(A)[None], torch.from_numpy(B)[None], fused_spec(cfg), True)
        assert triton_stats == list(stats)


def test_operands_outside_the_format_are_rejected():
    cfg = MacConfig(input="e4m3_sub", acc="hopper-fp8")
    with pytest.raises(ValueError, match="entries of X are not finite values with 3 fraction bits"):
        numba_matmul(cfg, np.array([[1.0625]]), np.array([[1.0]]), np.zeros((1, 1)))


@pytest.mark.slow
@pytest.mark.parametrize("acc,a,b", CONFIGS, ids=lambda x: str(x))
def test_numba_kernel_matches_mmasim_full(acc, a, b):
    cfg = MacConfig(input=a, weight=b, acc=acc)
    compared, bad = compare(cfg, numba_matmul, outputs=FULL_OUTPUTS, seed=2026, cols=64)
    print(f"numba {cfg.name}: {compared} outputs vs MMA-Sim, {bad} mismatches")
    assert compared >= FULL_OUTPUTS and bad == 0


@pytest.mark.slow
@pytest.mark.skipif(not TRITON, reason="Triton is not installed or was imported before TRITON_INTERPRET=1")
@pytest.mark.parametrize("acc,a,b", CONFIGS, ids=lambda x: str(x))
def test_triton_kernel_matches_mmasim_full(acc, a, b):
    cfg = MacConfig(input=a, weight=b, acc=acc)
    compared, bad = compare(cfg, triton_matmul, outputs=TRITON_FULL_OUTPUTS, seed=2027, cols=32)
    print(f"triton (interpreted) {cfg.name}: {compared} outputs vs MMA-Sim, {bad} mismatches")
    assert compared >= TRITON_FULL_OUTPUTS and bad == 0


@pytest.mark.skipif(not TRITON, reason="Triton is not installed or was imported before TRITON_INTERPRET=1")
def test_dispatch_reaches_both_kernels_by_name_with_the_same_events():
    from lba_train.events import EventStats
    from lba_train.kernels.dispatch import batched_gemm_values

    cfg = MacConfig(input="e4m3_sub", weight="e5m2_sub", acc="hopper-fp8+promote64")
    gen = torch.Generator().manual_seed(3)
    x = torch.from_numpy(np.ldexp(torch.randint(-15, 16, (2, 3, 70), generator=gen).double().numpy(), -2))
    w = torch.from_numpy(np.ldexp(torch.randint(-7, 8, (2, 70, 5), generator=gen).double().numpy(), -9))
    stats = {name: EventStats() for name in ("numba", "triton")}
    values = {name: batched_gemm_values(x, w, cfg, stats=stats[name], kernel=name) for name in stats}
    assert mismatches(values["numba"].numpy(), values["triton"].numpy()) == 0
    assert stats["numba"] == stats["triton"] and stats["numba"].steps == 2 * 3 * 5 * (3 + 2)
    with pytest.raises(ValueError, match="runs on the numba or triton kernel, not 'torch'"):
        batched_gemm_values(x, w, cfg, kernel="torch")
