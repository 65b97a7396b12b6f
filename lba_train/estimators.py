"""Fine-grained gradient estimators through the low-bit-width accumulation chain (docs/estimators.md).

The forward pass of a quantized matmul is the chain s_k = R_acc(s_{k-1} + p_k), p_k = R_prod(x_k w_k), per
output (docs/arithmetic.md §4-5). The plain straight-through estimator ("ste") treats every step as an exact
add. The fine-grained estimators replace d out / d p_k by D[m, n, k], built from each step's local derivative:

- ``*-of``:   0 where the accumulator rounding of the step saturated, else 1;
- ``*-diff``: the share of the addend that reached the sum, (s_k - s_{k-1}) / p_k clipped to [0, 1];
- ``immediate-*``: D is the local derivative at the step where p_k enters;
- ``recursive-*``: D is that times the derivatives w.r.t. the running sum of every later step (chunk adder
  steps included), i.e. the chain rule along the whole chain.

Then grad_x[m,k] = sum_n g[m,n] D[m,n,k] w[k,n] and grad_w[k,n] = sum_m g[m,n] D[m,n,k] x[m,k] (a straight
-through R_prod). The backward recomputes the chain (nothing of size M*N*K is stored) in a Numba kernel.
"""

from __future__ import annotations

import numpy as np
import torch

from lba_core import ConfigError, MacConfig

from .kernels import estimators_numba as kernel
from .kernels import numba_gemm
from .kernels.plan import IDENTITY_PRODUCT, plan_gemm

ESTIMATORS = ("ste", "recursive-of", "immediate-of", "recursive-diff", "immediate-diff")

#: Rows of X are split into this many parallel blocks, each with a private partial grad_w. A constant (not the
#: thread count) so that the summation order, hence every bit of the result, is the same on every machine.
PARALLEL_BLOCKS = 8
#: Outputs of one row whose chains the kernel advances together (and whose D it holds at once).
COLUMN_TILE = 64


def check_estimator(estimator: str, where: str | None = None) -> str:
    """Return ``estimator`` if it names one of :data:`ESTIMATORS`, else raise ConfigError listing them.

    The one check of an estimator name: the GEMMs, the layers, lbaify and the command line all call it.
    ``where`` (the caller or option) starts the message.
    """
    if estimator not in ESTIMATORS:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}unknown gradient estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    return estimator


def _kernel_arguments(cfg: MacConfig, estimator: str, length: int) -> tuple:
    """The chain kernel's arguments: the GEMM plan's roundings (which also vets cfg), chunking and the rule."""
    plan = plan_gemm(cfg)
    chunked = plan.chunk_size is not None
    return (
        plan.product if plan.product is not None else IDENTITY_PRODUCT,
        plan.acc,
        numba_gemm.STEP_CODES[plan.step],
        plan.chunk_size if chunked else max(length, 1),  # the kernel's chunk length: one chunk is the whole row
        chunked,
        kernel.DIFF_RULE if estimator.endswith("-diff") else kernel.OF_RULE,
        estimator.startswith("recursive"),
    )


def dot_derivatives(a, b, cfg: MacConfig, estimator: str) -> tuple[float, np.ndarray]:
    """One dot product: (its accumulator value, D_k = d out / d p_k for k = 0..K-1) under ``estimator``.

    ``a`` and ``b`` are 1-D sequences of values already in the operand formats.
    """
    check_estimator(estimator)
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"dot_derivatives: a and b must be 1-D of equal length, got {a.shape} and {b.shape}")
    length = a.shape[0]
    # "ste" needs only the chain's value: any rule computes it.
    args = _kernel_arguments(cfg, "immediate-of" if estimator == "ste" else estimator, length)
    scratch = kernel.tile_scratch(length, args[3], 1)  # args[3]: the chunk length
    kernel.tile_derivatives(a, b.reshape(length, 1), 0, 1, *args, *scratch)
    entering, total = scratch[0], scratch[5]
    return float(total[0]), np.ones(length) if estimator == "ste" else entering[:, 0].copy()


def gemm_backward(
    x_q: torch.Tensor, w_q: torch.Tensor, grad_out: torch.Tensor, cfg: MacConfig, estimator: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_w) of Y = X @ W computed on the LBA accumulator, under a fine-grained ``estimator``.

    ``x_q`` (M, K) and ``w_q`` (K, N) hold values already in the operand formats; ``grad_out`` is (M, N).
    The gradients come back in the dtypes and on the device of ``x_q`` and ``w_q``.
    """
    check_estimator(estimator)
    if x_q.dim() != 2 or w_q.dim() != 2 or grad_out.dim() != 2:
        raise ValueError(
            f"gemm_backward: expected 2-D x_q, w_q, grad_out, got shapes {tuple(x_q.shape)}, "
            f"{tuple(w_q.shape)}, {tuple(grad_out.shape)}"
        )
    rows, length = x_q.shape
    if w_q.shape[0] != length or tuple(grad_out.shape) != (rows, w_q.shape[1]):
        raise ValueError(
            f"gemm_backward: shapes do not chain: x_q {tuple(x_q.shape)} @ w_q {tuple(w_q.shape)} "
            f"vs grad_out {tuple(grad_out.shape)}"
        )
    x = x_q.detach().to("cpu", torch.float64)
    w = w_q.detach().to("cpu", torch.float64)
    g = grad_out.detach().to("cpu", torch.float64)
    if estimator == "ste":
        grad_x, grad_w = g @ w.T, x.T @ g
    else:
        args = _kernel_arguments(cfg, estimator, length)
        if not (torch.isfinite(x).all() and torch.isfinite(w).all()):
            raise ValueError("gemm_backward: x_q and w_q must be finite values of the operand formats")
        blocks = max(1, min(rows, PARALLEL_BLOCKS))
        grad_x_np, grad_w_np = kernel.chain_backward(
            x.contiguous().numpy(), w.contiguous().numpy(), g.contiguous().numpy(), *args, blocks, COLUMN_TILE
        )
        grad_x, grad_w = torch.from_numpy(grad_x_np), torch.from_numpy(grad_w_np)
    return grad_x.to(x_q.device, x_q.dtype), grad_w.to(w_q.device, w_q.dtype)
