"""The Triton GEMM kernel, run by Triton's CPU interpreter, against the exact reference (lba_core.dot).

TRITON_INTERPRET must be set before Triton itself is imported (its own library functions are decorated
then, as are ours when the dispatch first imports ``lba_train.kernels.triton_gemm``). Nothing imports Triton
before this module sets it (torch and lba_train only look it up), and "auto" never picks the interpreter for
CPU tensors, so the rest of the suite is unaffected. Small shapes: the interpreter walks k in Python.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("Triton is not installed (pip install '.[gpu]' or '.[test]')", allow_module_level=True)
if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton was imported before TRITON_INTERPRET=1 could be set", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"

from lba_core import MacConfig  # noqa: E402
from lba_train.events import EventStats  # noqa: E402
from lba_train.kernels import available_kernels, gemm_values, select_kernel  # noqa: E402
from lba_train.kernels.dispatch import batched_gemm_values  # noqa: E402

from support.gemm import batched_operands, operands, reference_gemm  # noqa: E402
from test_gemm_kernels import CONFIG_IDS, CONFIGS, stable_seed  # noqa: E402


@pytest.mark.parametrize("cfg,step", CONFIGS, ids=CONFIG_IDS)
def test_triton_kernel_matches_the_reference_element_by_element(cfg, step, comparisons):
    """Every plan (exact sum, round-to-odd, general), RTZ, chunks, subnormals, underflow off; values and events."""
    rng = np.random.default_rng(stable_seed("triton", cfg.name))
    mismatches = compared = 0
    for kind in ["codes", "saturation", "cancellation"]:
        rows, length, columns = int(rng.integers(1, 6)), int(rng.integers(1, 14)), int(rng.integers(1, 70))
        x, w = operands(cfg, rows, length, columns, kind, rng)
        expected, expected_stats = reference_gemm(x, w, cfg)
        stats = EventStats()
        got = gemm_values(x, w, cfg, stats=stats, kernel="triton").numpy()
        bad = int(np.sum(got != expected)) + int(np.sum(np.signbit(got) & (got == 0)))
        assert bad == 0, f"{kind}: {bad} elements differ"
        assert stats == expected_stats, f"{kind}: events {stats} vs reference {expected_stats}"
        mismatches += bad
        compared += expected.size
    comparisons(f"triton (interpreter) elements {cfg.name} ({step})", compared, mismatches)


def test_triton_kernel_runs_a_batch_in_one_call_across_tiles():
    """Several batch entries and more outputs than one program's tile in both directions."""
    cfg = MacConfig("e4m3", "e5m10", chunk_size=4)
    rng = np.random.default_rng(23)
    x, w = batched_operands(cfg, 2, 35, 9, 70, "gaussian", rng)
    stats, numba_stats = EventStats(), EventStats()
    together = batched_gemm_values(x, w, cfg, stats=stats, kernel="triton")
    assert torch.equal(together.double(), batched_gemm_values(x, w, cfg, stats=numba_stats, kernel="numba").double())
    assert stats == numba_stats


def test_auto_dispatch_picks_triton_for_cuda_and_never_the_interpreter_on_cpu():
    assert select_kernel(torch.device("cuda")).name == "triton"
    assert available_kernels("cpu")[0] == "numba"  # the interpreter only runs when asked for by name
    assert select_kernel(torch.device("cpu"), "triton").name == "triton"
