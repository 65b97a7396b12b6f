"""The GPU GEMM kernel (Triton): every output's accumulation chain, bit-true, one program per output tile.

Each program owns a BLOCK_M x BLOCK_N tile of one batch entry and walks k = 0 .. K-1 in the contract's order,
one exact step per k for the whole tile, in binary64 lanes with the same three step algorithms as the Numba
kernel (docs/simulator.md): the exact sum, round-to-odd by TwoSum, or the general step; roundings work on
the bit pattern (int64) or on exact power-of-two scalings built from bit patterns, so nothing depends on the
GPU's libm. Kernels are compiled with ``enable_fp_fusion=False``: contracting ``a - (high - b)`` and friends
into FMAs would break TwoSum. Event counts are summed per program and added up on the host (deterministic).

With ``TRITON_INTERPRET=1`` in the environment when this module is first imported, Triton's interpreter runs
the same kernels on CPU tensors (that is how the tests prove them bit-exact on a machine without a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton import knobs

from .plan import STEP_EXACT_SUM, STEP_GENERAL, STEP_ROUND_TO_ODD, GemmPlan, RoundSpec

BLOCK_M = 32
BLOCK_N = 64
STEP_CODES = {STEP_EXACT_SUM: 0, STEP_ROUND_TO_ODD: 1, STEP_GENERAL: 2}
EXPONENT_MASK = 0x7FF
FRACTION_MASK = (1 << 52) - 1


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return bool(knobs.runtime.interpret)


@triton.jit
def _power_of_two(exponent):
    """2^exponent as binary64 for -1022 <= exponent <= 1023 (built from the bit pattern)."""
    return ((exponent.to(tl.int64) + 1023) << 52).to(tl.float64, bitcast=True)


@triton.jit
def _scale(value, exponent):
    """value * 2^exponent, exact; split in two so that neither factor leaves binary64's normal range."""
    half = exponent // 2
    return (value * _power_of_two(half)) * _power_of_two(exponent - half)


@triton.jit
def _round_bits(value, max_value, min_normal, quantum, inverse_quantum, MAN_BITS: tl.constexpr,
                TOWARD_ZERO: tl.constexpr, CLAMP: tl.constexpr, FLUSH: tl.constexpr):
    """R_F of a binary64 value standing for the exact real (numba_gemm.round_binary64, element-wise)."""
    bits = value.to(tl.int64, bitcast=True)
    shift: tl.constexpr = 52 - MAN_BITS
    dropped = (tl.full(bits.shape, 1, tl.int64) << shift) - 1
    if not TOWARD_ZERO:
        bits = bits + ((dropped >> 1) + ((bits >> shift) & 1))
    magnitude = tl.abs((bits & ~dropped).to(tl.float64, bitcast=True))
    if CLAMP:
        absolute = tl.abs(value)
        scaled = absolute * inverse_quantum
        two_52 = tl.full(scaled.shape, 4503599627370496.0, tl.float64)
        nearest = (scaled + two_52) - two_52
        if TOWARD_ZERO:
            nearest = nearest - tl.where(nearest > scaled, 1.0, 0.0).to(tl.float64)
        magnitude = tl.where(absolute < min_normal, nearest * quantum, magnitude)
    overflowed = magnitude > max_value
    magnitude = tl.where(overflowed, max_value, magnitude)
    if FLUSH:
        magnitude = tl.where(magnitude < min_normal, 0.0, magnitude).to(tl.float64)
    result = tl.where(value < 0.0, -magnitude, magnitude) + 0.0
    return result, overflowed, (magnitude == 0.0) & (value != 0.0)


@triton.jit
def _two_sum(a, b):
    high = a + b
    b_virtual = high - a
    low = (a - (high - b_virtual)) + (b - b_virtual)
    return high, low


@triton.jit
def _sum_to_odd(a, b):
    """a + b rounded to odd at 53 bits (numba_gemm.round_sum_odd before its final rounding)."""
    high, low = _two_sum(a, b)
    bits = high.to(tl.int64, bitcast=True)
    low_bits = low.to(tl.int64, bitcast=True)
    inexact_and_even = -((low != 0.0).to(tl.int64) & ~bits & 1)
    toward = ((low_bits ^ bits) >> 63) | 1
    return (bits + (inexact_and_even & toward)).to(tl.float64, bitcast=True)


@triton.jit
def _round_general(a, b, max_value, min_normal, MAN_BITS: tl.constexpr, EMIN: tl.constexpr,
                   TOWARD_ZERO: tl.constexpr, CLAMP: tl.constexpr, FLUSH: tl.constexpr):
    """R_F(a + b) of the exact sum for any plan (numba_gemm.round_sum_general / torch_gemm.round_sum).

    floor(log2 |high|) comes from the exponent field (binary64 subnormals are scaled by 2^64 first).
    """
    high, low = _two_sum(a, b)
    high_bits = high.to(tl.int64, bitcast=True)
    finite = ((high_bits >> 52) & EXPONENT_MASK) != EXPONENT_MASK  # no NaN can arise: inputs are finite
    magnitude = tl.where(finite, tl.abs(high), 0.0).to(tl.float64)
    error = tl.where(finite, tl.where(high < 0.0, -low, low), 0.0).to(tl.float64)
    magnitude_bits = magnitude.to(tl.int64, bitcast=True)
    subnormal = ((magnitude_bits >> 52) & EXPONENT_MASK) == 0
    lifted = tl.where(subnormal, magnitude * 18446744073709551616.0, magnitude).to(tl.float64)
    lifted_bits = lifted.to(tl.int64, bitcast=True)
    exponent = ((lifted_bits >> 52) & EXPONENT_MASK) - 1023 - tl.where(subnormal, 64, 0)
    power_of_two = (lifted_bits & FRACTION_MASK) == 0
    exponent = exponent - (power_of_two & (error < 0.0)).to(tl.int64)
    if CLAMP:
        exponent = tl.maximum(exponent, EMIN)
    quantum_exponent = exponent - MAN_BITS
    scaled = _scale(magnitude, -quantum_exponent)
    steps = tl.floor(scaled)
    rest = scaled - steps
    scaled_error = _scale(error, -quantum_exponent)
    borrow = (rest == 0.0) & (error < 0.0)
    steps = steps - borrow.to(tl.float64)
    beyond_half = tl.where(borrow, 0.5 + scaled_error, tl.where(rest == 0.5, error, (rest - 0.5) + scaled_error))
    if not TOWARD_ZERO:
        odd = (steps - 2.0 * tl.floor(steps * 0.5)) == 1.0
        steps = steps + ((beyond_half > 0.0) | ((beyond_half == 0.0) & odd)).to(tl.float64)
    rounded = _scale(steps, quantum_exponent)
    overflowed = (rounded > max_value) | ~finite
    rounded = tl.where(overflowed, max_value, rounded)
    if FLUSH:
        rounded = tl.where(rounded < min_normal, 0.0, rounded).to(tl.float64)
    values = tl.where(high < 0.0, -rounded, rounded) + 0.0
    return values, overflowed, (rounded == 0.0) & (high != 0.0)


@triton.jit
def _accumulate(previous, addend, max_value, min_normal, quantum, inverse_quantum, STEP: tl.constexpr,
                MAN_BITS: tl.constexpr, EMIN: tl.constexpr, TOWARD_ZERO: tl.constexpr, CLAMP: tl.constexpr,
                FLUSH: tl.constexpr):
    """R_acc(previous + addend) with the plan's step: (value, overflowed, underflowed)."""
    if STEP == 2:
        value, overflowed, underflowed = _round_general(previous, addend, max_value, min_normal, MAN_BITS, EMIN,
                                                        TOWARD_ZERO, CLAMP, FLUSH)
    else:
        if STEP == 1:
            total = _sum_to_odd(previous, addend)
        else:
            total = previous + addend  # exact: the plan proved that binary64 holds every such sum
        value, overflowed, underflowed = _round_bits(total, max_value, min_normal, quantum, inverse_quantum,
                                                     MAN_BITS, TOWARD_ZERO, CLAMP, FLUSH)
    return value, overflowed, underflowed


@triton.jit
def _gemm_kernel(
    x_ptr, w_ptr, out_ptr, events_ptr, constants_ptr, rows, columns, length, chunk,
    STEP: tl.constexpr, CHUNKED: tl.constexpr, COUNT: tl.constexpr, HAS_PRODUCT: tl.constexpr,
    ACC_MAN_BITS: tl.constexpr, ACC_EMIN: tl.constexpr, ACC_CLAMP: tl.constexpr, ACC_FLUSH: tl.constexpr,
    PROD_MAN_BITS: tl.constexpr, PROD_EMIN: tl.constexpr, PROD_CLAMP: tl.constexpr, PROD_FLUSH: tl.constexpr,
    TOWARD_ZERO: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One BLOCK_M x BLOCK_N tile of out[b] = x[b] @ w[b] (contiguous (B, M, K), (B, K, N), (B, M, N))."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    entry = tl.program_id(2)
    row_index = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    column_index = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = row_index < rows
    column_mask = column_index < columns
    x_rows = x_ptr + entry.to(tl.int64) * rows * length + row_index.to(tl.int64) * length
    w_columns = w_ptr + entry.to(tl.int64) * length * columns + column_index
    acc_max = tl.load(constants_ptr + 0)
    acc_min_normal = tl.load(constants_ptr + 1)
    acc_quantum = tl.load(constants_ptr + 2)
    acc_inverse_quantum = tl.load(constants_ptr + 3)
    prod_max = tl.load(constants_ptr + 4)
    prod_min_normal = tl.load(constants_ptr + 5)
    prod_quantum = tl.load(constants_ptr + 6)
    prod_inverse_quantum = tl.load(constants_ptr + 7)
    partial = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    total = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    overflows = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)
    underflows = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)
    swamps = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)
    for k in range(0, length):
        a = tl.load(x_rows + k, mask=row_mask, other=0.0)
        b = tl.load(w_columns + k * columns, mask=column_mask, other=0.0)
        p = a[:, None] * b[None, :]  # exact: plan_gemm checked that products fit in binary64
        product_overflowed = p != p  # all False, of the right shape
        product_underflowed = p != p
        if HAS_PRODUCT:
            if STEP == 2:
                p, product_overflowed, product_underflowed = _round_general(
                    p, tl.zeros_like(p), prod_max, prod_min_normal, PROD_MAN_BITS, PROD_EMIN, TOWARD_ZERO,
                    PROD_CLAMP, PROD_FLUSH)
            else:
                p, product_overflowed, product_underflowed = _round_bits(
                    p, prod_max, prod_min_normal, prod_quantum, prod_inverse_quantum, PROD_MAN_BITS, TOWARD_ZERO,
                    PROD_CLAMP, PROD_FLUSH)
        previous = partial
        partial, overflowed, underflowed = _accumulate(
            previous, p, acc_max, acc_min_normal, acc_quantum, acc_inverse_quantum, STEP, ACC_MAN_BITS, ACC_EMIN,
            TOWARD_ZERO, ACC_CLAMP, ACC_FLUSH)
        if COUNT:
            overflows += (overflowed | product_overflowed).to(tl.int32)
            underflows += (underflowed | product_underflowed).to(tl.int32)
            swamps += ((p != 0.0) & (partial == previous)).to(tl.int32)
        if CHUNKED:
            if ((k + 1) % chunk == 0) | (k == length - 1):
                previous_total = total
                total, overflowed, underflowed = _accumulate(
                    previous_total, partial, acc_max, acc_min_normal, acc_quantum, acc_inverse_quantum, STEP,
                    ACC_MAN_BITS, ACC_EMIN, TOWARD_ZERO, ACC_CLAMP, ACC_FLUSH)
                if COUNT:
                    overflows += overflowed.to(tl.int32)
                    underflows += underflowed.to(tl.int32)
                    swamps += ((partial != 0.0) & (total == previous_total)).to(tl.int32)
                partial = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    result = total if CHUNKED else partial
    out_index = entry.to(tl.int64) * rows * columns + row_index[:, None].to(tl.int64) * columns + column_index[None, :]
    tl.store(out_ptr + out_index, result, mask=row_mask[:, None] & column_mask[None, :])
    if COUNT:
        program = (entry * tl.num_programs(1) + pid_n) * tl.num_programs(0) + pid_m
        tl.store(events_ptr + program * 3 + 0, tl.sum(tl.sum(overflows.to(tl.int64), axis=1), axis=0))
        tl.store(events_ptr + program * 3 + 1, tl.sum(tl.sum(underflows.to(tl.int64), axis=1), axis=0))
        tl.store(events_ptr + program * 3 + 2, tl.sum(tl.sum(swamps.to(tl.int64), axis=1), axis=0))


def _constants(spec: RoundSpec | None) -> list[float]:
    if spec is None:
        return [0.0, 0.0, 0.0, 0.0]
    return [spec.max_value, spec.min_normal, spec.subnormal_quantum, spec.inverse_subnormal_quantum]


def gemm(x: torch.Tensor, w: torch.Tensor, plan: GemmPlan, count: bool) -> tuple[torch.Tensor, list[int]]:
    """Y[b] = X[b] @ W[b] on the accumulator for X (B, M, K), W (B, K, N) on a CUDA device (or on the CPU
    under TRITON_INTERPRET=1); returns (Y float64, [overflow, underflow, swamp])."""
    x = x.to(torch.float64).contiguous()
    w = w.to(torch.float64).contiguous()
    batch, rows, length = x.shape
    columns = w.shape[2]
    out = torch.zeros((batch, rows, columns), dtype=torch.float64, device=x.device)
    if out.numel() == 0 or length == 0:
        return out, [0, 0, 0]
    grid = (triton.cdiv(rows, BLOCK_M), triton.cdiv(columns, BLOCK_N), batch)
    events = torch.zeros((grid[0] * grid[1] * grid[2], 3), dtype=torch.int64, device=x.device)
    constants = torch.tensor(_constants(plan.acc) + _constants(plan.product), dtype=torch.float64, device=x.device)
    product = plan.product if plan.product is not None else plan.acc  # unused when HAS_PRODUCT is False
    _gemm_kernel[grid](
        x, w, out, events, constants, rows, columns, length, plan.chunk_size or 1,
        STEP=STEP_CODES[plan.step], CHUNKED=plan.chunk_size is not None, COUNT=count,
        HAS_PRODUCT=plan.product is not None,
        ACC_MAN_BITS=plan.acc.man_bits, ACC_EMIN=plan.acc.emin, ACC_CLAMP=plan.acc.clamp, ACC_FLUSH=plan.acc.flush,
        PROD_MAN_BITS=product.man_bits, PROD_EMIN=product.emin, PROD_CLAMP=product.clamp, PROD_FLUSH=product.flush,
        TOWARD_ZERO=plan.acc.toward_zero, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
        enable_fp_fusion=False,
    )
    return out, events.sum(dim=0).tolist()
