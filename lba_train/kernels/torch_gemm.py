"""The portable GEMM kernel: pure PyTorch, vectorized over all outputs, one step of k at a time.

It runs wherever PyTorch runs (CPU without Numba, CUDA tensors until a dedicated GPU kernel is registered)
and uses the general exact step: the sum ``acc + p`` as a TwoSum pair, its rounding decided from both parts.
"""

from __future__ import annotations

import torch

from ..quantize import scale_by_power_of_two
from .plan import GemmPlan, RoundSpec


def two_sum(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) with high = fl(a + b) and high + low = a + b exactly (Knuth)."""
    high = a + b
    b_virtual = high - a
    low = (a - (high - b_virtual)) + (b - b_virtual)
    return high, low


def round_sum(a: torch.Tensor, b: torch.Tensor, spec: RoundSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R_F(a + b) of the exact sum, elementwise: (values, overflowed, underflowed).

    The same decision as ``numba_gemm.round_sum_general`` (whose docstring gives the argument), as masks.
    """
    high, low = two_sum(a, b)
    finite = torch.isfinite(high)  # an infinite high means |a + b| >= 2^1024 - 2^970, beyond every max
    zeros = torch.zeros_like(high)
    magnitude = torch.where(finite, high, zeros).abs()
    error = torch.where(finite, torch.where(high < 0, -low, low), zeros)
    fraction, frexp_exponent = torch.frexp(magnitude)
    exponent = frexp_exponent.to(torch.int64) - 1 - ((fraction == 0.5) & (error < 0)).to(torch.int64)
    if spec.clamp:
        exponent = exponent.clamp(min=spec.emin)
    quantum_exponent = exponent - spec.man_bits
    scaled = scale_by_power_of_two(magnitude, -quantum_exponent)
    steps = torch.floor(scaled)
    rest = scaled - steps
    scaled_error = scale_by_power_of_two(error, -quantum_exponent)
    borrow = (rest == 0) & (error < 0)
    steps = steps - borrow.to(steps.dtype)
    beyond_half = torch.where(
        borrow, 0.5 + scaled_error, torch.where(rest == 0.5, error, (rest - 0.5) + scaled_error)
    )
    if not spec.toward_zero:
        odd = torch.remainder(steps, 2) == 1
        steps = steps + ((beyond_half > 0) | ((beyond_half == 0) & odd)).to(steps.dtype)
    rounded = scale_by_power_of_two(steps, quantum_exponent)
    overflowed = (rounded > spec.max_value) | ~finite
    rounded = torch.where(overflowed, torch.full_like(rounded, spec.max_value), rounded)
    if spec.flush:
        rounded = torch.where(rounded < spec.min_normal, zeros, rounded)
    values = torch.copysign(rounded, high) + 0.0  # + 0.0 turns -0 into +0
    underflowed = (rounded == 0) & (high != 0)
    return values, overflowed, underflowed


def gemm(x: torch.Tensor, w: torch.Tensor, plan: GemmPlan, count: bool) -> tuple[torch.Tensor, list[int]]:
    """Y[b] = X[b] @ W[b] on the accumulator for X (B, M, K) and W (B, K, N), all batch entries at once.

    Returns (Y float64, [overflow, underflow, swamp]).
    """
    x, w = x.to(torch.float64), w.to(torch.float64)
    batch, rows, length = x.shape
    columns = w.shape[2]
    partial = x.new_zeros((batch, rows, columns))
    total = x.new_zeros((batch, rows, columns))
    events = torch.zeros(3, dtype=torch.int64, device=x.device)

    def step(acc: torch.Tensor, addend: torch.Tensor, extra_overflow=None, extra_underflow=None) -> torch.Tensor:
        value, overflowed, underflowed = round_sum(acc, addend, plan.acc)
        if count:
            if extra_overflow is not None:
                overflowed = overflowed | extra_overflow
                underflowed = underflowed | extra_underflow
            swamped = (addend != 0) & (value == acc)
            events.add_(torch.stack([overflowed.sum(), underflowed.sum(), swamped.sum()]))
        return value

    for k in range(length):
        product = x[:, :, k : k + 1] * w[:, k : k + 1, :]  # exact (plan_gemm checked the formats)
        product_overflow = product_underflow = None
        if plan.product is not None:
            product, product_overflow, product_underflow = round_sum(product, torch.zeros_like(product), plan.product)
        partial = step(partial, product, product_overflow, product_underflow)
        if plan.chunk_size is not None and ((k + 1) % plan.chunk_size == 0 or k == length - 1):
            total = step(total, partial)
            partial = torch.zeros_like(partial)
    result = total if plan.chunk_size is not None else partial
    return result, events.tolist()
