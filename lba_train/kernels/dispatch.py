"""Which GEMM kernel runs a given call, and the entry points the GEMM functions use.

``KERNELS`` maps a name to a :class:`Kernel`: a predicate on the device and the function itself. "auto" picks
the first registered kernel that supports the operands' device, in :data:`AUTO_ORDER`: Triton for CUDA
tensors, Numba for CPU tensors, the portable PyTorch kernel wherever neither is installed. Every kernel takes a
whole batch (B, M, K) @ (B, K, N) in one call, so that batched products (attention) cost one dispatch. A new
backend registers a ``Kernel`` here and, to be chosen by "auto", puts its name in AUTO_ORDER before the
kernels it should win over.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lba_core import MacConfig

from ..events import EventStats
from . import int_gemm, torch_gemm
from .fused_gemm import fused_batched_values
from .fused_plan import fused_spec
from .plan import GemmPlan, plan_gemm

NUMBA_AVAILABLE = importlib.util.find_spec("numba") is not None
TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def _numba_gemm(x: torch.Tensor, w: torch.Tensor, plan: GemmPlan, count: bool) -> tuple[torch.Tensor, list[int]]:
    # compiled (or loaded from the on-disk cache) on first use
    if plan.binary32_step is not None:
        from . import numba_binary32

        x32, w32 = x.to(torch.float32).contiguous().numpy(), w.to(torch.float32).contiguous().numpy()
        values, events = numba_binary32.gemm(x32, w32, plan.product, plan.acc, plan.chunk_size or 0,
                                             plan.binary32_step, count, 2.0 ** plan.product_bound_exponent)
        if plan.binary32_fallback:
            from . import range_fallback

            values, events, _ = range_fallback.finish(values, events, x32, w32, plan, count)
    else:
        from . import numba_gemm

        values, events = numba_gemm.gemm(
            x.to(torch.float64).contiguous().numpy(), w.to(torch.float64).contiguous().numpy(), plan.product,
            plan.acc, plan.chunk_size or 0, plan.step, count,
        )
    return torch.from_numpy(values), events.tolist()


def _triton_supports(device: torch.device) -> bool:
    """CUDA tensors; CPU tensors too when Triton's interpreter is on (TRITON_INTERPRET=1).

    Reads the environment as Triton does, without importing Triton: importing it before TRITON_INTERPRET is
    set would decorate Triton's own library for the GPU and leave the interpreter unusable in this process.
    """
    if not TRITON_AVAILABLE:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")


def _triton_gemm(x: torch.Tensor, w: torch.Tensor, plan: GemmPlan, count: bool) -> tuple[torch.Tensor, list[int]]:
    from . import triton_gemm  # decorating its kernels reads TRITON_INTERPRET

    return triton_gemm.gemm(x, w, plan, count)


@dataclass(frozen=True)
class Kernel:
    """A GEMM backend: ``run(x, w, plan, count) -> (Y, [overflow, underflow, swamp])``.

    ``x`` is (B, M, K), ``w`` (B, K, N), float32 or float64 operand values on one device; ``Y`` is (B, M, N)
    in float32 or float64 (exact either way: the caller converts it to the result dtype it needs).
    ``auto_devices`` are the device types for which "auto" may choose it (None: wherever it runs).
    """

    name: str
    supports: Callable[[torch.device], bool]
    run: Callable[[torch.Tensor, torch.Tensor, GemmPlan, bool], tuple[torch.Tensor, list[int]]]
    auto_devices: tuple[str, ...] | None = None


KERNELS: dict[str, Kernel] = {
    # The interpreter is for proving the kernel on CPUs, far too slow to be picked automatically there.
    "triton": Kernel("triton", _triton_supports, _triton_gemm, auto_devices=("cuda",)),
    "numba": Kernel("numba", lambda device: NUMBA_AVAILABLE and device.type == "cpu", _numba_gemm),
    "torch": Kernel("torch", lambda device: True, torch_gemm.gemm),
}
AUTO_ORDER = ("triton", "numba", "torch")


def available_kernels(device: torch.device | str = "cpu") -> list[str]:
    """Names of the kernels "auto" may pick on ``device``, in the order it tries them."""
    device = torch.device(device)
    return [
        name for name in AUTO_ORDER
        if (KERNELS[name].auto_devices is None or device.type in KERNELS[name].auto_devices)
        and KERNELS[name].supports(device)
    ]


def select_kernel(device: torch.device, kernel: str = "auto") -> Kernel:
    if kernel == "auto":
        return KERNELS[available_kernels(device)[0]]
    if kernel not in KERNELS:
        raise ValueError(f"unknown GEMM kernel {kernel!r}; choose auto or one of {', '.join(KERNELS)}")
    chosen = KERNELS[kernel]
    if not chosen.supports(device):
        hint = {
            "numba": f"numba installed: {NUMBA_AVAILABLE}",
            "triton": f"triton installed: {TRITON_AVAILABLE}; CPU tensors need TRITON_INTERPRET=1 set before "
                      "lba_train is imported",
        }.get(kernel, "")
        raise ValueError(f"GEMM kernel {kernel!r} cannot run on device {device} ({hint})")
    return chosen


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every entry of a floating-point tensor is finite (neither NaN nor +-Inf).

    CPU float32/float64 tensors take one compiled pass (``numba_binary32.count_nonfinite``: 25 us for 256K
    float32 entries on one core, against 600 us for ``torch.isfinite(t).all()``); others take PyTorch's.
    """
    if NUMBA_AVAILABLE and tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64):
        from . import numba_binary32

        return numba_binary32.count_nonfinite(tensor.detach().reshape(-1).numpy()) == 0
    return bool(torch.isfinite(tensor).all())


@functools.lru_cache(maxsize=1024)
def check_config(cfg: MacConfig) -> GemmPlan | int_gemm.FixedGemmPlan:
    """Reject, before any work, a configuration no kernel can simulate exactly; else return its plan.

    The one derivation of the plan per configuration (a pure function of the frozen MacConfig, memoized:
    it was a third of a small product's Python cost); callers hand it on to :func:`batched_gemm_values`.
    A refused configuration is not cached and is refused again.
    """
    if cfg.fused_acc:  # tensor-core fused accumulators (docs/arithmetic.md §9): kernels in fused_gemm
        return fused_spec(cfg)
    return int_gemm.plan_fixed_gemm(cfg) if cfg.fixed_acc else plan_gemm(cfg)


def _check_operands(x_q: torch.Tensor, w_q: torch.Tensor, dims: int, shapes: str, caller: str) -> None:
    if x_q.dim() != dims or w_q.dim() != dims or x_q.shape[-1] != w_q.shape[-2] or x_q.shape[:-2] != w_q.shape[:-2]:
        raise ValueError(f"{caller}: expected {shapes}, got {tuple(x_q.shape)} and {tuple(w_q.shape)}")
    if x_q.dtype not in (torch.float32, torch.float64) or w_q.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{caller}: operands must be float32 or float64, got {x_q.dtype} and {w_q.dtype}")
    if x_q.device != w_q.device:
        raise ValueError(f"{caller}: operands are on different devices ({x_q.device} and {w_q.device})")


def batched_gemm_values(
    x_q: torch.Tensor,
    w_q: torch.Tensor,
    cfg: MacConfig,
    *,
    stats: EventStats | None = None,
    kernel: str = "auto",
    plan: GemmPlan | int_gemm.FixedGemmPlan | None = None,
) -> torch.Tensor:
    """The accumulator values of X[b] @ W[b] for every b, in one kernel call.

    ``x_q`` is (B, M, K), ``w_q`` (B, K, N), float32 or float64 values already in the operand formats, on
    one device. Returns (B, M, N) on that device, float32 or float64 as the kernel produced it (exact);
    when ``stats`` is given, the steps and events of all B products are added to it. ``plan``: what
    ``check_config(cfg)`` returned, where the caller has it (derived here otherwise).
    """
    plan = check_config(cfg) if plan is None else plan
    _check_operands(x_q, w_q, 3, "X (B, M, K) and W (B, K, N)", "batched_gemm_values")
    if cfg.fused_acc:  # tensor-core fused accumulators: their own kernels, steps and events (fused_gemm)
        return fused_batched_values(x_q, w_q, plan, cfg.acc.name, kernel, stats)
    if cfg.fixed_acc:
        # Integer/fixed-point accumulators (docs/arithmetic.md §8) have their own portable kernel.
        if kernel not in ("auto", "torch"):
            raise ValueError(f"gemm_values: {cfg.acc.name} accumulators run on the PyTorch int_gemm kernel, not {kernel!r}")
        parts = [int_gemm.gemm_values(x.to(torch.float64), w.to(torch.float64), cfg, stats is not None, plan)
                 for x, w in zip(x_q, w_q)]
        values = torch.stack([part[0] for part in parts]) if parts else x_q.new_zeros(0, x_q.shape[1], w_q.shape[2])
        overflow, underflow, swamp = (sum(part[1][i] for part in parts) for i in range(3))
    else:
        chosen = select_kernel(x_q.device, kernel)
        values, (overflow, underflow, swamp) = chosen.run(x_q, w_q, plan, stats is not None)
    if stats is not None:
        batch, rows, length = x_q.shape
        steps = batch * rows * w_q.shape[2] * plan.steps_per_output(length)
        stats.record(steps, overflow, underflow, swamp)
    return values.to(x_q.device)


def gemm_values(
    x_q: torch.Tensor,
    w_q: torch.Tensor,
    cfg: MacConfig,
    *,
    stats: EventStats | None = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """The accumulator values of X @ W for operands already in the operand formats.

    ``x_q`` is (M, K), ``w_q`` (K, N), both float32 or float64 on one device. Returns float64 (M, N) on that
    device; when ``stats`` is given, the steps and events of this product are added to it.
    """
    plan = check_config(cfg)
    _check_operands(x_q, w_q, 2, "X (M, K) and W (K, N)", "gemm_values")
    values = batched_gemm_values(x_q.unsqueeze(0), w_q.unsqueeze(0), cfg, stats=stats, kernel=kernel, plan=plan)
    return values[0].to(torch.float64)
