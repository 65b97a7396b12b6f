"""Which GEMM kernel runs a given call, and the one entry point the GEMM functions use.

``KERNELS`` maps a name to a :class:`Kernel`: a predicate on the device and the function itself. "auto" picks
the first registered kernel that supports the operands' device, in :data:`AUTO_ORDER`. A GPU kernel (Triton
or CUDA) drops in by adding an entry that supports ``cuda`` devices and putting its name first in
AUTO_ORDER; until then CUDA tensors run on the portable PyTorch kernel.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lba_core import MacConfig

from ..events import EventStats
from . import int_gemm, torch_gemm
from .plan import GemmPlan, plan_gemm

NUMBA_AVAILABLE = importlib.util.find_spec("numba") is not None


def _numba_gemm(x: torch.Tensor, w: torch.Tensor, plan: GemmPlan, count: bool) -> tuple[torch.Tensor, list[int]]:
    from . import numba_gemm  # compiled (or loaded from the on-disk cache) on first use

    values, events = numba_gemm.gemm(
        x.contiguous().numpy(), w.contiguous().numpy(), plan.product, plan.acc, plan.chunk_size or 0, plan.step, count
    )
    return torch.from_numpy(values), events.tolist()


@dataclass(frozen=True)
class Kernel:
    """A GEMM backend: ``run(x, w, plan, count) -> (Y float64, [overflow, underflow, swamp])``."""

    name: str
    supports: Callable[[torch.device], bool]
    run: Callable[[torch.Tensor, torch.Tensor, GemmPlan, bool], tuple[torch.Tensor, list[int]]]


KERNELS: dict[str, Kernel] = {
    "numba": Kernel("numba", lambda device: NUMBA_AVAILABLE and device.type == "cpu", _numba_gemm),
    "torch": Kernel("torch", lambda device: True, torch_gemm.gemm),
}
AUTO_ORDER = ("numba", "torch")


def available_kernels(device: torch.device | str = "cpu") -> list[str]:
    """Names of the kernels that can run on ``device``, in the order "auto" tries them."""
    device = torch.device(device)
    return [name for name in AUTO_ORDER if KERNELS[name].supports(device)]


def select_kernel(device: torch.device, kernel: str = "auto") -> Kernel:
    if kernel == "auto":
        return KERNELS[available_kernels(device)[0]]
    if kernel not in KERNELS:
        raise ValueError(f"unknown GEMM kernel {kernel!r}; choose auto or one of {', '.join(KERNELS)}")
    chosen = KERNELS[kernel]
    if not chosen.supports(device):
        raise ValueError(f"GEMM kernel {kernel!r} cannot run on device {device} (numba installed: {NUMBA_AVAILABLE})")
    return chosen


def check_config(cfg: MacConfig) -> None:
    """Reject, before any work, a configuration no kernel can simulate exactly."""
    int_gemm.plan_fixed_gemm(cfg) if cfg.fixed_acc else plan_gemm(cfg)


def gemm_values(
    x_q: torch.Tensor,
    w_q: torch.Tensor,
    cfg: MacConfig,
    *,
    stats: EventStats | None = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """The accumulator values of X @ W for float64 operands already in the operand formats.

    ``x_q`` is (M, K), ``w_q`` (K, N), both float64 on one device. Returns float64 (M, N) on that device;
    when ``stats`` is given, the steps and events of this product are added to it.
    """
    if x_q.dim() != 2 or w_q.dim() != 2 or x_q.shape[1] != w_q.shape[0]:
        raise ValueError(f"gemm_values: expected X (M, K) and W (K, N), got {tuple(x_q.shape)} and {tuple(w_q.shape)}")
    if x_q.dtype != torch.float64 or w_q.dtype != torch.float64:
        raise ValueError(f"gemm_values: operands must be float64, got {x_q.dtype} and {w_q.dtype}")
    if x_q.device != w_q.device:
        raise ValueError(f"gemm_values: operands are on different devices ({x_q.device} and {w_q.device})")
    if cfg.fixed_acc:
        # Integer/fixed-point accumulators (docs/arithmetic.md §8) have their own portable kernel.
        if kernel not in ("auto", "torch"):
            raise ValueError(f"gemm_values: {cfg.acc.name} accumulators run on the PyTorch int_gemm kernel, not {kernel!r}")
        plan = int_gemm.plan_fixed_gemm(cfg)
        values, (overflow, underflow, swamp) = int_gemm.gemm_values(x_q, w_q, cfg, stats is not None)
    else:
        plan = plan_gemm(cfg)
        chosen = select_kernel(x_q.device, kernel)
        values, (overflow, underflow, swamp) = chosen.run(x_q, w_q, plan, stats is not None)
    if stats is not None:
        rows, length = x_q.shape
        steps = rows * w_q.shape[1] * plan.steps_per_output(length)
        stats.record(steps, overflow, underflow, swamp)
    return values.to(x_q.device)
