"""Products of torch functions lowered to (batched) matrix products, in the order the accumulator sums them.

Every function takes ``product(a, b)``: a @ b for (..., M, K) and (..., K, N) (a 2-D b is one matrix for all
rows), which computes the sums; here is only the geometry, so that one lowering serves the accumulator and
its exact reference. The order of each sum (docs/operations.md):

* convolution (1-, 2-, 3-D): im2col; K runs over (C_in/groups, k_1, ..., k_n) with the last kernel index
  fastest; padded positions contribute zero products (as lba_conv2d);
* transposed convolution: the convolution, with stride 1 and the same dilation, of the input with
  ``stride - 1`` zeros inserted between its elements, padded by ``dilation * (k - 1) - padding`` on each side
  (plus ``output_padding`` at the end), with the kernel flipped in every spatial dimension and its two
  channel dimensions swapped: K runs over (C_in/groups, k_1, ..., k_n) of the flipped kernel (the last kernel
  element first) and includes the zero products of the inserted zeros and the padding;
* tensordot: K runs over the contracted dimensions in the order they are listed, row-major;
* addbmm: one sum over K' = batch x K, batch slowest (the sum over the batch is part of the reduction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _tuple(value, dims: int, name: str) -> tuple[int, ...]:
    values = (value,) * dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) == 1 and dims > 1:
        values = values * dims
    if len(values) != dims:
        raise ValueError(f"convolution: {name} must be an int or {dims} ints, got {value!r}")
    return values


def conv_padding(padding, kernel: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dimension; 'same' puts an odd extra element after, as torch does."""
    if padding == "valid":
        return [(0, 0)] * len(kernel)
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [(total // 2, total - total // 2) for total in totals]
    return [(p, p) for p in _tuple(padding, len(kernel), "padding")]


def im2col(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: list[tuple[int, int]],
           dilation: Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(B, C, *S) -> ((B, L, C * prod(kernel)) patches with C slowest and the last kernel index fastest,
    the output's spatial shape). Negative padding crops."""
    pads = [amount for before_after in reversed(padding) for amount in before_after]
    x = F.pad(x, pads) if any(pads) else x
    dims = len(kernel)
    for i, (k, s, d) in enumerate(zip(kernel, stride, dilation)):
        x = x.unfold(2 + i, d * (k - 1) + 1, s)[..., ::d]
    out_shape = tuple(x.shape[2:2 + dims])
    if min(out_shape, default=1) < 1:
        raise ValueError("convolution: the kernel does not fit the padded input")
    order = (0, *range(2, 2 + dims), 1, *range(2 + dims, 2 + 2 * dims))
    patches = x.permute(order).reshape(x.shape[0], math.prod(out_shape), -1)
    return patches, out_shape


def convolution(product: Product, x: torch.Tensor, weight: torch.Tensor, stride=1, padding=0, dilation=1,
                groups: int = 1) -> torch.Tensor:
    """F.conv1d/2d/3d (no bias) of ``x`` (B, C_in, *S) or unbatched (C_in, *S) and ``weight``
    (C_out, C_in/groups, *k), by im2col; all groups in one batched product."""
    dims = weight.dim() - 2
    if x.dim() == dims + 1:
        return convolution(product, x.unsqueeze(0), weight, stride, padding, dilation, groups)[0]
    if x.dim() != dims + 2:
        raise ValueError(f"conv{dims}d: expected a {dims + 2}-D input, got shape {tuple(x.shape)}")
    stride, dilation = _tuple(stride, dims, "stride"), _tuple(dilation, dims, "dilation")
    kernel = tuple(weight.shape[2:])
    out_channels, group_channels = weight.shape[:2]
    if x.shape[1] != group_channels * groups or out_channels % groups:
        raise ValueError(f"conv{dims}d: input channels {x.shape[1]}, weight {tuple(weight.shape)} and groups={groups} "
                         "do not match")
    patches, out_shape = im2col(x, kernel, stride, conv_padding(padding, kernel, dilation), dilation)
    return _grouped_gemm(product, patches, weight, groups, out_shape)


def conv_transpose(product: Product, x: torch.Tensor, weight: torch.Tensor, stride=1, padding=0,
                   output_padding=0, groups: int = 1, dilation=1) -> torch.Tensor:
    """F.conv_transpose1d/2d/3d (no bias) as the convolution of the zero-inserted input with the flipped
    kernel (module docstring); ``weight`` is (C_in, C_out/groups, *k)."""
    dims = weight.dim() - 2
    if x.dim() == dims + 1:
        return conv_transpose(product, x.unsqueeze(0), weight, stride, padding, output_padding, groups,
                              dilation)[0]
    if x.dim() != dims + 2:
        raise ValueError(f"conv_transpose{dims}d: expected a {dims + 2}-D input, got shape {tuple(x.shape)}")
    stride, dilation = _tuple(stride, dims, "stride"), _tuple(dilation, dims, "dilation")
    padding, output_padding = _tuple(padding, dims, "padding"), _tuple(output_padding, dims, "output_padding")
    in_channels, group_out = weight.shape[:2]
    if x.shape[1] != in_channels or in_channels % groups:
        raise ValueError(f"conv_transpose{dims}d: input channels {x.shape[1]}, weight {tuple(weight.shape)} and "
                         f"groups={groups} do not match")
    kernel = weight.shape[2:]
    spatial = x.shape[2:]
    inserted = x.new_zeros(*x.shape[:2], *[(n - 1) * s + 1 for n, s in zip(spatial, stride)])
    inserted[(slice(None), slice(None), *[slice(None, None, s) for s in stride])] = x
    pads = [(d * (k - 1) - p, d * (k - 1) - p + op) for k, d, p, op in zip(kernel, dilation, padding, output_padding)]
    flipped = weight.flip(list(range(2, 2 + dims)))
    group_in = in_channels // groups
    swapped = flipped.reshape(groups, group_in, group_out, *kernel).transpose(1, 2)
    swapped = swapped.reshape(groups * group_out, group_in, *kernel)
    patches, out_shape = im2col(inserted, kernel, (1,) * dims, pads, dilation)
    return _grouped_gemm(product, patches, swapped, groups, out_shape)


def _grouped_gemm(product: Product, patches: torch.Tensor, weight: torch.Tensor, groups: int,
                  out_shape: tuple[int, ...]) -> torch.Tensor:
    batch, positions, _ = patches.shape
    out_channels, group_channels = weight.shape[:2]
    per_group = group_channels * math.prod(weight.shape[2:])
    a = patches.reshape(batch, positions, groups, per_group).permute(2, 0, 1, 3).reshape(groups, -1, per_group)
    b = weight.reshape(groups, out_channels // groups, per_group).transpose(1, 2)
    y = product(a, b) if groups > 1 else product(a[0], b[0]).unsqueeze(0)
    y = y.reshape(groups, batch, positions, out_channels // groups).permute(1, 0, 3, 2)
    return y.reshape(batch, out_channels, *out_shape)


def tensordot(product: Product, a: torch.Tensor, b: torch.Tensor, dims=2) -> torch.Tensor:
    """torch.tensordot as one matrix product: K runs over the contracted dimensions as listed, row-major."""
    if isinstance(dims, torch.Tensor):
        dims = dims.tolist() if dims.dim() else int(dims)
    if isinstance(dims, int):
        if dims < 0:
            raise ValueError(f"tensordot: dims must be >= 0, got {dims}")
        dims_a, dims_b = list(range(a.dim() - dims, a.dim())), list(range(dims))
    else:
        dims_a, dims_b = ([d] if isinstance(d, int) else list(d) for d in dims)
    dims_a = [d % a.dim() for d in dims_a]
    dims_b = [d % b.dim() for d in dims_b]
    if len(dims_a) != len(dims_b) or any(a.shape[i] != b.shape[j] for i, j in zip(dims_a, dims_b)):
        raise ValueError(f"tensordot: cannot contract dimensions {dims_a} of {tuple(a.shape)} with {dims_b} of "
                         f"{tuple(b.shape)}")
    free_a = [d for d in range(a.dim()) if d not in dims_a]
    free_b = [d for d in range(b.dim()) if d not in dims_b]
    k = math.prod(a.shape[d] for d in dims_a)
    left = a.permute(free_a + dims_a).reshape(-1, k)
    right = b.permute(dims_b + free_b).reshape(k, -1)
    return product(left, right).reshape(*[a.shape[d] for d in free_a], *[b.shape[d] for d in free_b])


def addbmm_operands(batch1: torch.Tensor, batch2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_b batch1[b] @ batch2[b] as one (M, B*K) @ (B*K, N) product, batch slowest in K."""
    batches, rows, inner = batch1.shape
    return batch1.permute(1, 0, 2).reshape(rows, batches * inner), batch2.reshape(batches * inner, -1)


def multi_dot(matmul: Product, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.linalg.multi_dot with the products taken left to right (((A B) C) ...), not torch's cheapest
    order: the order changes the sums, so it is pinned. 1-D first/last operands are a row/column vector."""
    tensors = list(tensors)
    if len(tensors) < 2:
        raise ValueError("multi_dot: expected at least two tensors")
    result = tensors[0]
    for tensor in tensors[1:]:
        result = matmul(result, tensor)
    return result
