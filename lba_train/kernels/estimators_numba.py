"""Numba kernels behind lba_train.estimators: the accumulation chain recomputed in the backward pass.

Each output's chain is rebuilt from its operands, one step at a time, with the GEMM kernel's own exact
roundings (``numba_gemm``, selected by the GemmPlan's step code), so the backward sees exactly the values the
forward produced. The local derivatives are defined in docs/estimators.md.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numba_gemm import (
    EXACT_SUM_CODE,
    GENERAL_CODE,
    ROUND_TO_ODD_CODE,
    round_binary64,
    round_step,
    round_sum_exact,
    round_sum_general,
    round_sum_odd,
)

OF_RULE = 0
DIFF_RULE = 1


@njit(cache=True)
def round_accumulate(previous, addend, acc_spec, step):
    """R_acc(previous + addend) with the GEMM's algorithm for ``step``: (value, accumulator overflowed)."""
    value, overflowed, _ = round_step(previous, addend, acc_spec, step)
    return value, overflowed


@njit(cache=True)
def round_product(a, b, prod_spec, step):
    """R_prod(a * b) as the GEMM's step computes it (a * b is exact in binary64: plan_gemm checked)."""
    if step == GENERAL_CODE:
        return round_sum_general(a * b, 0.0, prod_spec)[0]
    return round_binary64(a * b, prod_spec)[0]


@njit(cache=True)
def addend_share(total, other, addend, overflowed):
    """DIFF rule: the share of ``addend`` that reached ``total = R(other + addend)``, clipped to [0, 1]."""
    if addend == 0.0:
        return 0.0 if overflowed else 1.0
    share = (total - other) / addend
    return min(max(share, 0.0), 1.0)


@njit(cache=True)
def step_derivatives(total, previous, addend, overflowed, rule):
    """Local derivatives of ``total = R_acc(previous + addend)``: (d total/d addend, d total/d previous)."""
    if rule == OF_RULE:
        passed = 0.0 if overflowed else 1.0
        return passed, passed
    return addend_share(total, previous, addend, overflowed), addend_share(total, addend, previous, overflowed)


# The chain steps of one k for a tile of outputs, one copy per bit-pattern step algorithm: with the algorithm
# fixed and no product rounding (None: a compiled specialization), LLVM vectorizes the loop over the tile,
# which a per-element choice of the algorithm prevented (measured below in docs/simulator.md).
@njit(cache=True)
def exact_sum_steps(a, w, k, first_column, width, prod_spec, acc_spec, rule, entering, through, partial):
    for j in range(width):
        p = a * w[k, first_column + j]
        if prod_spec is not None:
            p = round_binary64(p, prod_spec)[0]
        previous = partial[j]
        value, overflowed, _ = round_sum_exact(previous, p, acc_spec)
        entering[k, j], through[k, j] = step_derivatives(value, previous, p, overflowed, rule)
        partial[j] = value


@njit(cache=True)
def round_to_odd_steps(a, w, k, first_column, width, prod_spec, acc_spec, rule, entering, through, partial):
    for j in range(width):
        p = a * w[k, first_column + j]
        if prod_spec is not None:
            p = round_binary64(p, prod_spec)[0]
        previous = partial[j]
        value, overflowed, _ = round_sum_odd(previous, p, acc_spec)
        entering[k, j], through[k, j] = step_derivatives(value, previous, p, overflowed, rule)
        partial[j] = value


@njit(cache=True)
def chain_steps(a, w, k, first_column, width, prod_spec, has_product, acc_spec, step, rule, entering, through,
                partial):
    """partial[j] <- R_acc(partial[j] + R_prod(a * w[k, first_column + j])) for the tile, with D's factors."""
    if step == EXACT_SUM_CODE:
        if has_product:
            exact_sum_steps(a, w, k, first_column, width, prod_spec, acc_spec, rule, entering, through, partial)
        else:
            exact_sum_steps(a, w, k, first_column, width, None, acc_spec, rule, entering, through, partial)
    elif step == ROUND_TO_ODD_CODE:
        if has_product:
            round_to_odd_steps(a, w, k, first_column, width, prod_spec, acc_spec, rule, entering, through, partial)
        else:
            round_to_odd_steps(a, w, k, first_column, width, None, acc_spec, rule, entering, through, partial)
    else:
        for j in range(width):
            p = round_product(a, w[k, first_column + j], prod_spec, step)
            previous = partial[j]
            value, overflowed = round_accumulate(previous, p, acc_spec, step)
            entering[k, j], through[k, j] = step_derivatives(value, previous, p, overflowed, rule)
            partial[j] = value


@njit(cache=True)
def tile_derivatives(x_row, w, first_column, width, prod_spec, acc_spec, step, chunk, chunk_adder, rule, recursive,
                     entering, through, chunk_entering, chunk_through, partial, total):
    """D[k, j] = d out_j / d p_kj for the outputs j of one row of X and the columns first_column + j of W.

    Writes D into ``entering[:, :width]`` and the chain's final values into ``total[:width]``. The other
    arrays are per-thread scratch: ``through`` (K, tile) and ``chunk_*`` (chunks, tile) receive the local
    derivatives w.r.t. the running sum and those of the chunk adder steps; ``partial`` and ``total`` (tile)
    are the accumulators. The chains of the tile's outputs advance together, one k at a time, so the
    independent steps of neighbouring outputs overlap instead of waiting on one chain's latency.
    """
    length = x_row.shape[0]
    chunks = (length + chunk - 1) // chunk
    # The identity R_prod (IDENTITY_PRODUCT: 52 fraction bits, no bounds) keeps every product unchanged.
    has_product = prod_spec[0] != 52 or prod_spec[2] != np.inf
    for j in range(width):
        partial[j] = 0.0
        total[j] = 0.0
    for c in range(chunks):
        for k in range(c * chunk, min(length, (c + 1) * chunk)):
            chain_steps(x_row[k], w, k, first_column, width, prod_spec, has_product, acc_spec, step, rule, entering,
                        through, partial)
        if chunk_adder:
            for j in range(width):
                value, overflowed = round_accumulate(total[j], partial[j], acc_spec, step)
                chunk_entering[c, j], chunk_through[c, j] = step_derivatives(value, total[j], partial[j], overflowed,
                                                                             rule)
                total[j] = value
                partial[j] = 0.0
    if not chunk_adder:
        for j in range(width):
            total[j] = partial[j]
    if recursive:
        # Reverse pass: suffix products of the derivatives w.r.t. the running sum, chunk adders included.
        for j in range(width):
            tail = 1.0
            for c in range(chunks - 1, -1, -1):
                running = chunk_entering[c, j] * tail if chunk_adder else 1.0
                for k in range(min(length, (c + 1) * chunk) - 1, c * chunk - 1, -1):
                    entering[k, j] *= running
                    running *= through[k, j]
                if chunk_adder:
                    tail *= chunk_through[c, j]


@njit(cache=True)
def tile_scratch(length, chunk, tile):
    """The per-thread arrays :func:`tile_derivatives` needs for outputs of depth ``length``."""
    chunks = max(1, (length + chunk - 1) // chunk)
    return (np.empty((length, tile)), np.empty((length, tile)), np.empty((chunks, tile)), np.empty((chunks, tile)),
            np.empty(tile), np.empty(tile))


@njit(parallel=True, cache=True)
def chain_backward(x, w, grad_out, prod_spec, acc_spec, step, chunk, chunk_adder, rule, recursive, blocks, tile):
    """grad_x[m,k] = sum_n g[m,n] D[m,n,k] w[k,n] and grad_w[k,n] = sum_m g[m,n] D[m,n,k] x[m,k].

    Rows of X are split into ``blocks`` parallel blocks; each block owns its rows of grad_x and a private
    partial grad_w (summed at the end in block order, so the result is deterministic for a given block
    count). D exists only for one row of X and ``tile`` columns of W at a time: memory O(K * tile) per block.
    """
    rows, length = x.shape
    columns = w.shape[1]
    grad_x = np.zeros((rows, length))
    partial_grad_w = np.zeros((blocks, length, columns))
    for block in prange(blocks):
        entering, through, chunk_entering, chunk_through, partial, total = tile_scratch(length, chunk, tile)
        grad_w = partial_grad_w[block]
        for m in range(block * rows // blocks, (block + 1) * rows // blocks):
            for first_column in range(0, columns, tile):
                width = min(tile, columns - first_column)
                tile_derivatives(x[m], w, first_column, width, prod_spec, acc_spec, step, chunk, chunk_adder, rule,
                                 recursive, entering, through, chunk_entering, chunk_through,
                                 partial, total)
                for k in range(length):
                    a = x[m, k]
                    row_sum = 0.0
                    for j in range(width):
                        weighted = grad_out[m, first_column + j] * entering[k, j]
                        row_sum += weighted * w[k, first_column + j]
                        grad_w[k, first_column + j] += weighted * a
                    grad_x[m, k] += row_sum
    grad_w = np.zeros((length, columns))
    for block in range(blocks):
        grad_w += partial_grad_w[block]
    return grad_x, grad_w
