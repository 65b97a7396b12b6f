"""The GPU kernel of the fused (tensor-core) dot-product accumulator (Triton), bit-true, one program per tile.

The same algorithm as the Numba kernel (fused_numba; docs/simulator.md), in binary64 lanes for every spec:
per group, e_max as the largest power 2^(e_a + e_b) of the products (and of the running result), every term
a * b * 2^(F - e_max) truncated toward zero (an exact float-to-int conversion), the exact sum, one rounding
into the output on the bit pattern (no libm), +-Inf or saturation above its range, -0 made +0; promotion
into an fp32 total with binary32 addition (RNE). Compiled with ``enable_fp_fusion=False``, so that no
product is contracted into an FMA with a sum.

With ``TRITON_INTERPRET=1`` set before this module is first imported, Triton's interpreter runs it on CPU
tensors (that is how tests/test_fused_kernels.py proves it bit-exact without a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fused_plan import FusedSpec, needs_zero_select, output_limits, scale_floor

BLOCK_M = 16
BLOCK_N = 32
STAT_COUNT = 6  # overflow, underflow, terms, zeroed, mass, truncated (as fused_numba)
EXPONENT_BITS = 0x7FF0000000000000


@triton.jit
def _round_output(value, quantum, inverse_quantum, output_min, overflow, overflow_value,
                  OUT_FRAC: tl.constexpr, RNE: tl.constexpr):
    """fused_lanes.round_output, element-wise in binary64: (result, overflowed, underflowed)."""
    drop: tl.constexpr = 52 - OUT_FRAC
    bits = value.to(tl.int64, bitcast=True)
    dropped = (tl.full(bits.shape, 1, tl.int64) << drop) - 1
    if RNE:
        bits = bits + ((dropped >> 1) + ((bits >> drop) & 1))
    normal = tl.abs((bits & ~dropped).to(tl.float64, bitcast=True))
    steps = tl.minimum(tl.abs(value) * inverse_quantum, 4503599627370496.0)  # 2^52: only small steps are kept
    if RNE:
        steps = (steps + 4503599627370496.0) - 4503599627370496.0  # ties to even
    small = steps.to(tl.int64).to(tl.float64) * quantum
    magnitude = tl.where(tl.abs(value) < output_min, small, normal)
    overflowed = magnitude >= overflow
    magnitude = tl.where(overflowed, overflow_value, magnitude)
    result = tl.where(value < 0, -magnitude, magnitude) + 0.0
    return result, overflowed, (magnitude == 0.0) & (value != 0.0)


@triton.jit
def _fused_kernel(x_ptr, w_ptr, px_ptr, pw_ptr, out_ptr, stats_ptr, M, N, K,
                  s_xb, s_xm, s_xk, s_wb, s_wk, s_wn,
                  big_f, zero_power, output_min, floor, quantum, inverse_quantum, overflow, overflow_value,
                  inverse_big_f,
                  GROUP: tl.constexpr, PROMOTE: tl.constexpr, OUT_FRAC: tl.constexpr, RNE: tl.constexpr,
                  ZERO_SELECT: tl.constexpr, COUNT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    entry = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    tile_ok = row_ok[:, None] & col_ok[None, :]
    out_offsets = entry * M * N + rows[:, None] * N + cols[None, :]
    start = tl.load(out_ptr + out_offsets, mask=tile_ok, other=0.0)  # the addend C
    if PROMOTE > 0:
        chain = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
        promoted = start.to(tl.float32)
    else:
        chain = start
        promoted = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    overflows = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    underflows = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    terms = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    zeroed = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    mass = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    lost = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    x_base = x_ptr + entry * s_xb + rows * s_xm
    px_base = px_ptr + entry * s_xb + rows * s_xm
    w_base = w_ptr + entry * s_wb + cols * s_wn
    pw_base = pw_ptr + entry * s_wb + cols * s_wn
    for k0 in range(0, K, GROUP):
        k1 = tl.minimum(k0 + GROUP, K)
        infinite = (chain == float("inf")) | (chain == float("-inf"))
        power = (chain.to(tl.int64, bitcast=True) & EXPONENT_BITS).to(tl.float64, bitcast=True)
        power = tl.maximum(power, output_min)
        powers = tl.where(chain == 0.0, zero_power, tl.where(infinite, 1.0, power))
        for k in range(k0, k1):
            pa = tl.load(px_base + k * s_xk, mask=row_ok, other=0.0)
            pb = tl.load(pw_base + k * s_wk, mask=col_ok, other=0.0)
            product_power = pa[:, None] * pb[None, :]
            if ZERO_SELECT:
                a = tl.load(x_base + k * s_xk, mask=row_ok, other=0.0)
                b = tl.load(w_base + k * s_wk, mask=col_ok, other=0.0)
                product_power = tl.where(a[:, None] * b[None, :] != 0.0, product_power, zero_power)
            powers = tl.maximum(powers, product_power)
        scales = big_f / tl.maximum(powers, floor)  # for the products: finite when every product is zero
        # the addend's term at its own e_max, which can lie below the floor (C far below every product)
        sums = tl.where(infinite, 0.0, chain * (big_f / powers)).to(tl.int64).to(tl.float64)
        for k in range(k0, k1):
            a = tl.load(x_base + k * s_xk, mask=row_ok, other=0.0)
            b = tl.load(w_base + k * s_wk, mask=col_ok, other=0.0)
            product = a[:, None] * b[None, :]
            kept = (product * scales).to(tl.int64).to(tl.float64)
            sums += kept
            if COUNT:
                nonzero = (product != 0.0) & tile_ok
                terms += tl.where(nonzero, 1.0, 0.0)
                zeroed += tl.where(nonzero & (kept == 0.0), 1.0, 0.0)
                exact = tl.where(nonzero, tl.abs(product), 0.0)
                mass += exact
                lost += tl.where(nonzero, exact - tl.abs(kept) / scales, 0.0)
        exact_sum = sums * (powers * inverse_big_f)
        value, overflowed, underflowed = _round_output(exact_sum, quantum, inverse_quantum, output_min, overflow,
                                                       overflow_value, OUT_FRAC, RNE)
        if COUNT:
            overflows += tl.where(overflowed & ~infinite & tile_ok, 1.0, 0.0)
            underflows += tl.where(underflowed & ~infinite & tile_ok, 1.0, 0.0)
        chain = tl.where(infinite, chain, value)
        if PROMOTE > 0:
            if (k1 % PROMOTE == 0) | (k1 == K):
                promoted = promoted + chain.to(tl.float32)  # binary32 addition: one RNE rounding
                chain = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
    if PROMOTE > 0:
        result = promoted.to(tl.float64)
    else:
        result = chain
    tl.store(out_ptr + out_offsets, result, mask=tile_ok)
    if COUNT:
        program = (entry * tl.num_programs(1) + pid_n) * tl.num_programs(0) + pid_m
        base = stats_ptr + program * 6
        tl.store(base + 0, tl.sum(tl.sum(overflows, axis=1), axis=0))
        tl.store(base + 1, tl.sum(tl.sum(underflows, axis=1), axis=0))
        tl.store(base + 2, tl.sum(tl.sum(terms, axis=1), axis=0))
        tl.store(base + 3, tl.sum(tl.sum(zeroed, axis=1), axis=0))
        tl.store(base + 4, tl.sum(tl.sum(mass, axis=1), axis=0))
        tl.store(base + 5, tl.sum(tl.sum(lost, axis=1), axis=0))


def operand_powers(values: torch.Tensor, man: int, emin: int, emax: int, name: str) -> torch.Tensor:
    """2^e of every operand (0 for zero) as float64 on the operands' device, after checking that each is a
    value of its format (ValueError naming ``name``), as fused_numba.decode_rows checks."""
    values = values.to(torch.float64)
    bits = values.view(torch.int64) & EXPONENT_BITS
    power = torch.clamp(bits.view(torch.float64), min=2.0**emin)
    scaled = values.abs() / power * 2.0**man
    ok = (scaled == torch.trunc(scaled)) & (scaled < 2.0 ** (man + 1)) & (power <= 2.0**emax) | (values == 0)
    if not bool(ok.all()):
        raise ValueError(f"fused GEMM: {int((~ok).sum())} entries of {name} are not finite values with {man} "
                         f"fraction bits and exponents up to {emax}")
    return torch.where(values == 0, torch.zeros_like(power), power)


def gemm(x: torch.Tensor, w: torch.Tensor, spec: FusedSpec, count: bool,
         addend: torch.Tensor | None = None) -> tuple[torch.Tensor, list[float]]:
    """Y[b] = X[b] @ W[b] + C[b] on the fused accumulator for (B, M, K), (B, K, N) operand values (one device).

    Returns (Y float64 (B, M, N), [overflow, underflow, terms, zeroed, mass, truncated]) as fused_numba.gemm.
    """
    x = x.to(torch.float64).contiguous()
    w = w.to(torch.float64).contiguous()
    px = operand_powers(x, spec.a_man, spec.a_emin, spec.a_emax, "X").contiguous()
    pw = operand_powers(w, spec.b_man, spec.b_emin, spec.b_emax, "W").contiguous()
    batch, rows, length = x.shape
    columns = w.shape[2]
    if addend is None:
        out = torch.zeros((batch, rows, columns), dtype=torch.float64, device=x.device)
    else:
        out = addend.to(device=x.device, dtype=torch.float64).contiguous().clone()
    grid = (triton.cdiv(rows, BLOCK_M), triton.cdiv(columns, BLOCK_N), batch)
    stats = torch.zeros(grid[0] * grid[1] * grid[2] * STAT_COUNT, dtype=torch.float64, device=x.device)
    if out.numel() == 0:
        return out, [0.0] * STAT_COUNT
    quantum, inverse_quantum, output_min, overflow, overflow_value = output_limits(spec)
    _fused_kernel[grid](
        x, w, px, pw, out, stats, rows, columns, length,
        x.stride(0), x.stride(1), x.stride(2), w.stride(0), w.stride(1), w.stride(2),
        2.0**spec.fraction_bits, 2.0**spec.e_zero, output_min, scale_floor(spec), quantum, inverse_quantum,
        overflow, overflow_value, 2.0**-spec.fraction_bits,
        GROUP=spec.group, PROMOTE=spec.promote_every, OUT_FRAC=spec.out_frac, RNE=spec.rne,
        ZERO_SELECT=needs_zero_select(spec), COUNT=count, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
        enable_fp_fusion=False,
    )
    totals = stats.view(-1, STAT_COUNT).sum(dim=0).tolist() if count else [0.0] * STAT_COUNT
    return out, totals
