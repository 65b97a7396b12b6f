"""The fused (tensor-core) accumulators' GEMM entry point: which kernel runs, and the events it reports.

:func:`fused_batched_values` is what ``dispatch.batched_gemm_values`` calls for a configuration with
``cfg.fused_acc`` (docs/arithmetic.md §9): the Numba kernel (fused_numba) for CPU tensors, the Triton kernel
(fused_triton) for CUDA tensors or, with TRITON_INTERPRET=1, for CPU tensors when asked by name. Both are
bit-exact to ``lba_core.fused_matmul_reference``; there is no portable PyTorch kernel for them.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from ..events import EventStats
from .fused_plan import FusedSpec, steps_per_output

FUSED_KERNELS = ("numba", "triton")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")


def select_fused_kernel(device: torch.device, kernel: str, name: str) -> str:
    """The kernel that runs a fused product on ``device``: "numba" or "triton" (ValueError naming why not)."""
    if kernel == "auto":
        kernel = "triton" if device.type == "cuda" else "numba"
    if kernel not in FUSED_KERNELS:
        raise ValueError(f"gemm_values: the fused accumulator {name} runs on the numba or triton kernel, not {kernel!r}")
    if kernel == "numba":
        if importlib.util.find_spec("numba") is None or device.type != "cpu":
            raise ValueError(f"gemm_values: the numba kernel of {name} needs numba installed and CPU tensors")
    elif importlib.util.find_spec("triton") is None or not (device.type == "cuda" or _interpreting()):
        raise ValueError(f"gemm_values: the triton kernel of {name} needs triton and CUDA tensors, or TRITON_INTERPRET=1 "
                         "set before lba_train is imported for CPU tensors")
    return kernel


def fused_batched_values(x_q: torch.Tensor, w_q: torch.Tensor, spec: FusedSpec, name: str, kernel: str,
                         stats: EventStats | None) -> torch.Tensor:
    """X[b] @ W[b] on the fused accumulator for (B, M, K) and (B, K, N) operand values; adds to ``stats``.

    Steps are the roundings (one per FDPA, one per promotion), ``overflow`` those giving +-Inf (or saturating),
    ``underflow`` those giving 0 from a non-zero sum; ``swamp`` stays 0: its fused counterparts are the
    truncation statistics (EventStats.record_truncation, docs/arithmetic.md §9).
    """
    chosen = select_fused_kernel(x_q.device, kernel, name)
    count = stats is not None
    if chosen == "numba":
        from . import fused_numba

        # float32 or float64 operand values as they are: the kernel decodes them exactly, without a copy here
        values, events = fused_numba.gemm(x_q.detach().contiguous().numpy(), w_q.detach().contiguous().numpy(), spec,
                                          count)
        values = torch.from_numpy(values)
    else:
        from . import fused_triton  # decorating its kernels reads TRITON_INTERPRET

        values, events = fused_triton.gemm(x_q.detach(), w_q.detach(), spec, count)
    if stats is not None:
        batch, rows, length = x_q.shape
        steps = batch * rows * w_q.shape[2] * steps_per_output(spec, length)
        overflow, underflow, terms, zeroed, mass, truncated = (float(v) for v in events)
        stats.record(steps, int(overflow), int(underflow), 0)
        stats.record_truncation(int(terms), int(zeroed), mass, truncated)
    return values.to(x_q.device)
