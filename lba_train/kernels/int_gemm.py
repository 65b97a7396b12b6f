"""The GEMM kernel of integer and fixed-point accumulators (docs/arithmetic.md §8), bit-exact to lba_core.dot.

Two paths, chosen per output row:

- **Exact matmul.** When every product lies on the accumulator's grid (F >= -(qa + qb)), the operands scaled
  by powers of two are integers whose products are the grid units of a*b. If no partial sum of an output
  can leave the accumulator's range, the chain never wraps or saturates, so the result is the plain sum:
  one binary64 matmul, exact because every partial sum is an integer below 2^53. The range test uses the
  A2Q-style bound max_k|A_ik| * sum_k|B_kj| first, then the exact sum_k |A_ik| |B_kj| for rows that fail it.
  Such outputs raise no event (no product rounds, nothing overflows, every non-zero addend changes acc).
- **Sequential chain.** Other rows run the contract literally, one k at a time from k = 0 (saturation is
  order-dependent), on int64 grid units: compiled per output on the CPU when Numba is installed
  (``int_chain_numba``), else vectorized over the row block and all columns in PyTorch (any device).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from lba_core import ConfigError, FixedFormat, MacConfig, derive_fixed_datapath

BINARY64_SIGNIFICAND_BITS = 53
#: Grid units of one product must stay below this so that acc + p never overflows int64.
INT64_PRODUCT_LIMIT_BITS = 62
#: Rows of one chain block: bounds the (rows, columns) int64 temporaries.
CHAIN_BLOCK_ELEMENTS = 1 << 20
NUMBA_AVAILABLE = importlib.util.find_spec("numba") is not None


@dataclass(frozen=True)
class FixedGemmPlan:
    """The kernel's view of a MacConfig with a fixed-point accumulator.

    ``a_shift``/``b_shift``: X * 2^a_shift and W * 2^b_shift are integers whose product is a*b in grid units
    (only meaningful when ``grid_exact``).
    """

    acc: FixedFormat
    toward_zero: bool
    chunk_size: int | None
    grid_exact: bool
    a_shift: int
    b_shift: int

    def steps_per_output(self, length: int) -> int:
        if self.chunk_size is None:
            return length
        return length + -(-length // self.chunk_size)


def plan_fixed_gemm(cfg: MacConfig) -> FixedGemmPlan:
    """Check that cfg can be simulated exactly on binary64 operands and int64 grid units."""
    if not cfg.fixed_acc:
        raise ConfigError(f"{cfg.name}: plan_fixed_gemm needs a fixed-point accumulator")
    datapath = derive_fixed_datapath(cfg)
    qa, bits_a, top_a = datapath.a_grid
    qb, bits_b, top_b = datapath.b_grid
    if bits_a + bits_b > BINARY64_SIGNIFICAND_BITS:
        raise ConfigError(
            f"lba_matmul: exact products of {cfg.a_format.name} x {cfg.b_format.name} need {bits_a + bits_b} "
            f"significand bits, more than binary64's {BINARY64_SIGNIFICAND_BITS}"
        )
    frac = cfg.acc.frac_bits
    if top_a + top_b + frac > INT64_PRODUCT_LIMIT_BITS:
        raise ConfigError(
            f"lba_matmul: products of {cfg.a_format.name} x {cfg.b_format.name} reach 2^{top_a + top_b} and need "
            f"{top_a + top_b + frac} bits on the grid of {cfg.acc.name}; at most {INT64_PRODUCT_LIMIT_BITS} are simulated"
        )
    return FixedGemmPlan(
        acc=cfg.acc,
        toward_zero=cfg.rounding == "rtz",
        chunk_size=cfg.chunk_size,
        grid_exact=datapath.grid_exact,
        a_shift=-qa,
        b_shift=frac + qa,
    )


def gemm_values(x_q: torch.Tensor, w_q: torch.Tensor, cfg: MacConfig, count: bool,
                plan: FixedGemmPlan | None = None) -> tuple[torch.Tensor, list[int]]:
    """Accumulator values (float64, (M, N)) of X @ W and the [overflow, underflow, swamp] counts.

    ``x_q`` (M, K) and ``w_q`` (K, N) are float64 values of the operand formats, on one device; ``plan`` is
    ``plan_fixed_gemm(cfg)`` where the caller has it.
    """
    plan = plan_fixed_gemm(cfg) if plan is None else plan
    rows = x_q.shape[0]
    values = x_q.new_zeros((rows, w_q.shape[1]))
    events = [0, 0, 0]
    if values.numel() == 0:
        return values, events
    chain_rows = torch.arange(rows, device=x_q.device)
    if plan.grid_exact and x_q.shape[1] > 0:
        chain_rows = exact_rows(x_q, w_q, plan, values)
    if len(chain_rows) and NUMBA_AVAILABLE and x_q.device.type == "cpu":
        values[chain_rows], events = chain_numba(x_q[chain_rows], w_q, plan, count)
        return values, events
    block = max(1, CHAIN_BLOCK_ELEMENTS // max(1, w_q.shape[1]))
    for start in range(0, len(chain_rows), block):
        index = chain_rows[start : start + block]
        block_values, block_events = chain(x_q[index], w_q, plan, count)
        values[index] = block_values
        events = [total + part for total, part in zip(events, block_events)]
    return values, events


def exact_rows(x_q: torch.Tensor, w_q: torch.Tensor, plan: FixedGemmPlan, values: torch.Tensor) -> torch.Tensor:
    """Fill ``values`` for the rows whose outputs provably stay in range; return the other rows' indices."""
    a = torch.ldexp(x_q, torch.tensor(plan.a_shift, dtype=torch.float64, device=x_q.device))
    b = torch.ldexp(w_q, torch.tensor(plan.b_shift, dtype=torch.float64, device=x_q.device))
    a_abs, b_abs = a.abs(), b.abs()
    length = a.shape[1]
    if length * float(a_abs.max()) * float(b_abs.max()) >= 2.0**BINARY64_SIGNIFICAND_BITS:
        return torch.arange(a.shape[0], device=a.device)  # a binary64 matmul could round: chain everything
    limit = float(plan.acc.max_int)
    # A2Q-style bound: |every partial sum| <= max_k |a_ik| * sum_k |b_kj|.
    cheap = a_abs.amax(dim=1, keepdim=True) * b_abs.sum(dim=0, keepdim=True)
    doubtful = (cheap > limit).any(dim=1).nonzero().flatten()
    if len(doubtful):
        tight = a_abs[doubtful] @ b_abs  # exact: integers below 2^53
        doubtful = doubtful[(tight > limit).any(dim=1)]
    safe = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
    safe[doubtful] = False
    scale = torch.tensor(-plan.acc.frac_bits, dtype=torch.float64, device=a.device)
    values[safe] = torch.ldexp(a[safe] @ b, scale)
    return doubtful


def keep(s: torch.Tensor, acc: FixedFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept grid units, overflowed) of exact int64 sums: clamp, or reduce modulo 2^W into the range."""
    overflow = (s < acc.min_int) | (s > acc.max_int)
    if acc.saturate:
        return s.clamp(acc.min_int, acc.max_int), overflow
    return torch.remainder(s - acc.min_int, acc.code_count) + acc.min_int, overflow


def chain_numba(x: torch.Tensor, w: torch.Tensor, plan: FixedGemmPlan, count: bool) -> tuple[torch.Tensor, list[int]]:
    """:func:`chain` compiled with Numba (CPU tensors); bit-identical."""
    from . import int_chain_numba  # compiled (or loaded from the on-disk cache) on first use

    acc = plan.acc
    units, events = int_chain_numba.chain(
        x.contiguous().numpy(), w.T.contiguous().numpy(), 2.0**acc.frac_bits, plan.toward_zero,
        acc.min_int, acc.max_int, acc.saturate, plan.chunk_size or 0, count,
    )
    return torch.ldexp(torch.from_numpy(units).to(torch.float64), torch.tensor(-acc.frac_bits, dtype=torch.float64)), events.tolist()


def chain(x: torch.Tensor, w: torch.Tensor, plan: FixedGemmPlan, count: bool) -> tuple[torch.Tensor, list[int]]:
    """The contract's sequential chain (docs §5, §8) for float64 X (R, K) and W (K, N)."""
    acc = plan.acc
    scale = torch.tensor(acc.frac_bits, dtype=torch.float64, device=x.device)
    shape = (x.shape[0], w.shape[1])
    partial = torch.zeros(shape, dtype=torch.int64, device=x.device)
    total = torch.zeros_like(partial)
    events = torch.zeros(3, dtype=torch.int64, device=x.device)
    length = x.shape[1]
    for k in range(length):
        exact = torch.ldexp(x[:, k : k + 1] * w[k : k + 1, :], scale)  # a*b exact (plan), times 2^F exact
        grid = torch.trunc(exact) if plan.toward_zero else torch.round(exact)  # torch.round: ties to even
        p = grid.to(torch.int64)
        kept, overflow = keep(partial + p, acc)
        if count:
            underflow = (p == 0) & (exact != 0)
            swamp = (p != 0) & (kept == partial)
            events += torch.stack([overflow.sum(), underflow.sum(), swamp.sum()])
        partial = kept
        if plan.chunk_size is not None and ((k + 1) % plan.chunk_size == 0 or k == length - 1):
            kept, overflow = keep(total + partial, acc)
            if count:
                events[0] += overflow.sum()
                events[2] += ((partial != 0) & (kept == total)).sum()
            total = kept
            partial = torch.zeros_like(partial)
    result = total if plan.chunk_size is not None else partial
    return torch.ldexp(result.to(torch.float64), -scale), events.tolist()
