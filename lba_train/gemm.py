"""Bit-true matrix products on a low-bit-width accumulator: lba_matmul, lba_bmm, lba_linear, lba_conv2d.

Every output element equals ``lba_core.dot`` of its row and column (docs/arithmetic.md §5): operands are
taken as values of the input/weight formats (others are rounded into them, RNE with underflow on, §3),
k = 0 is accumulated first, chunks and the chunk adder follow ``cfg.chunk_size``. Nothing is scaled here.

Results are float32 when every accumulator value is exact in float32, float64 otherwise. Gradients follow
``estimator``: "ste" differentiates the exact product of the quantized operands; any other name is handed
to ``lba_train.estimators.gemm_backward``. The kernels and their dispatch are in ``lba_train.kernels``;
docs/simulator.md explains the design.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lba_core import MacConfig

from .estimators import check_estimator
from .events import EventStats
from .kernels import check_config
from .kernels.fused_plan import result_dtype as fused_result_dtype
from .kernels.dispatch import KERNELS, all_finite, batched_gemm_values
from .quantize import fits_dtype, quantize_operand

STE = "ste"


def _check_call(cfg: MacConfig, estimator: str, stats: EventStats | None, caller: str):
    """Check a call's configuration and options before any work; returns the kernels' plan (derived once)."""
    if not isinstance(cfg, MacConfig):
        raise TypeError(f"{caller}: cfg must be a lba_core.MacConfig, got {type(cfg).__name__}")
    plan = check_config(cfg)  # rejects configurations the kernels cannot simulate exactly, before any work
    check_estimator(estimator, caller)
    if cfg.fixed_acc and estimator != STE:
        raise ValueError(f"{caller}: estimator {estimator!r} needs a floating-point accumulator; {cfg.acc.name} takes 'ste'")
    if cfg.fused_acc and estimator != STE:  # the estimators model a sequential chain's steps (docs/simulator.md)
        raise ValueError(f"{caller}: estimator {estimator!r} models a sequential chain; the fused accumulator {cfg.acc.name} takes 'ste'")
    if stats is not None and not isinstance(stats, EventStats):
        raise TypeError(f"{caller}: stats must be a lba_train.events.EventStats or None, got {type(stats).__name__}")
    return plan


def _check_tensor(tensor, name: str, caller: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{caller}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_complex():
        raise TypeError(f"{caller}: {name} is complex; the accumulator works on real values")
    if not tensor.is_floating_point():
        raise ValueError(f"{caller}: {name} has dtype {tensor.dtype}; pass a floating-point tensor (float16, "
                         "bfloat16, float32 or float64), whose values are rounded into the operand format")
    if all_finite(tensor):
        return  # one pass over the operand in the common case; the two checks below only name the culprit
    if torch.isnan(tensor).any():
        raise ValueError(f"{caller}: {name} contains NaN, which no format can hold")
    if torch.isinf(tensor).any():
        raise ValueError(f"{caller}: {name} contains +-inf, which the operand formats cannot hold (finite values "
                         "beyond a format's largest saturate to it; scale the operands first, as the LBA layers do)")


def _check_kernel(kernel, caller: str) -> str:
    if kernel != "auto" and kernel not in KERNELS:
        raise ValueError(f"{caller}: unknown GEMM kernel {kernel!r}; choose auto or one of {', '.join(KERNELS)}")
    return kernel


def output_dtype(cfg: MacConfig) -> torch.dtype:
    """float32 when it holds every accumulator value of cfg exactly, else float64."""
    if cfg.fused_acc:
        return fused_result_dtype(check_config(cfg))
    return torch.float32 if fits_dtype(cfg.acc, torch.float32, cfg.underflow) else torch.float64


class _LBAMatMulFunction(torch.autograd.Function):
    """Y[b] = X[b] @ W[b] on the accumulator for (B, M, K) and (B, K, N), in one kernel call.

    Saves only the quantized operands (float32 where they are exact in it, else float64).
    """

    @staticmethod
    def forward(ctx, x, w, cfg, estimator, stats, plan, kernel):
        x_q = quantize_operand(x, cfg.a_format, "lba_matmul")
        w_q = quantize_operand(w, cfg.b_format, "lba_matmul")
        values = batched_gemm_values(x_q, w_q, cfg, stats=stats, plan=plan, kernel=kernel)
        ctx.save_for_backward(x_q, w_q)
        ctx.cfg, ctx.estimator = cfg, estimator
        ctx.x_dtype = x.dtype if x.is_floating_point() else torch.float32
        ctx.w_dtype = w.dtype if w.is_floating_point() else torch.float32
        return values.to(output_dtype(cfg))

    @staticmethod
    def backward(ctx, grad_out):
        x_q, w_q = (tensor.to(torch.float64) for tensor in ctx.saved_tensors)
        grad = grad_out.to(torch.float64)
        if ctx.estimator == STE:
            grad_x = grad @ w_q.transpose(1, 2) if ctx.needs_input_grad[0] else None
            grad_w = x_q.transpose(1, 2) @ grad if ctx.needs_input_grad[1] else None
        else:
            from .estimators import gemm_backward  # lazily: only fine-grained estimators need it

            pairs = [gemm_backward(x_q[b], w_q[b], grad[b], ctx.cfg, ctx.estimator) for b in range(x_q.shape[0])]
            grad_x = torch.stack([pair[0] for pair in pairs])
            grad_w = torch.stack([pair[1] for pair in pairs])
        grad_x = grad_x.to(ctx.x_dtype) if grad_x is not None and ctx.needs_input_grad[0] else None
        grad_w = grad_w.to(ctx.w_dtype) if grad_w is not None and ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None, None, None, None, None


def lba_matmul(
    x: torch.Tensor, w: torch.Tensor, cfg: MacConfig, *, estimator: str = STE, stats: EventStats | None = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """X @ W with every output accumulated on the MAC of ``cfg``, bit-exact to ``lba_core.dot``.

    ``x`` is (..., K), ``w`` is (K, N); the result is (..., N), float32 when the accumulator format fits in
    it, else float64. ``stats`` (an EventStats) receives the steps and events of this product. ``kernel``:
    "auto" or a kernel by name ("triton", "numba", "torch"; docs/simulator.md).

    Operands are floating-point tensors whose values are rounded into the operand formats (RNE, R_F of
    docs/arithmetic.md §3); finite values beyond a format's largest value saturate to it. Integer and bool
    tensors, NaN and +-inf raise ValueError naming the argument.
    """
    caller = "lba_matmul"
    plan = _check_call(cfg, estimator, stats, caller)
    _check_kernel(kernel, caller)
    _check_tensor(x, "x", caller)
    _check_tensor(w, "w", caller)
    if w.dim() != 2:
        raise ValueError(f"{caller}: w must be 2-D (K, N), got shape {tuple(w.shape)}")
    if x.dim() < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"{caller}: x (..., K) and w (K, N) do not chain: shapes {tuple(x.shape)} and {tuple(w.shape)}"
        )
    if x.device != w.device:
        raise ValueError(f"{caller}: x and w are on different devices ({x.device} and {w.device})")
    leading = x.shape[:-1]
    y = _LBAMatMulFunction.apply(x.reshape(1, math.prod(leading), x.shape[-1]), w.unsqueeze(0), cfg, estimator, stats,
                                 plan, kernel)
    return y.reshape(*leading, w.shape[1])


def lba_bmm(
    a: torch.Tensor, b: torch.Tensor, cfg: MacConfig, *, estimator: str = STE, stats: EventStats | None = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """Batched (B, M, K) @ (B, K, N) on the accumulator, for products of two activations (attention).

    ``a`` takes the input format, ``b`` the weight format (the same unless cfg.weight is set). The whole
    batch is one kernel call (``kernel`` and the operand rules as in :func:`lba_matmul`).
    """
    caller = "lba_bmm"
    plan = _check_call(cfg, estimator, stats, caller)
    _check_kernel(kernel, caller)
    _check_tensor(a, "a", caller)
    _check_tensor(b, "b", caller)
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"{caller}: expected (B, M, K) and (B, K, N), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"{caller}: a and b are on different devices ({a.device} and {b.device})")
    return _LBAMatMulFunction.apply(a, b, cfg, estimator, stats, plan, kernel)


def lba_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cfg: MacConfig,
    *,
    estimator: str = STE,
    stats: EventStats | None = None,
) -> torch.Tensor:
    """``nn.functional.linear`` on the accumulator: weight is (N, K) as in nn.Linear.

    The bias is not part of the MAC: it is added to the accumulator's result in the result's dtype
    (float32 or float64), as an accelerator's higher-precision epilogue would.
    """
    caller = "lba_linear"
    _check_tensor(weight, "weight", caller)
    if weight.dim() != 2:
        raise ValueError(f"{caller}: weight must be 2-D (N, K), got shape {tuple(weight.shape)}")
    y = lba_matmul(x, weight.T, cfg, estimator=estimator, stats=stats)
    return y if bias is None else y + _bias(bias, weight.shape[0], y.dtype, caller)


def _bias(bias: torch.Tensor, channels: int, dtype: torch.dtype, caller: str) -> torch.Tensor:
    _check_tensor(bias, "bias", caller)
    if bias.shape != (channels,):
        raise ValueError(f"{caller}: bias must have shape ({channels},), got {tuple(bias.shape)}")
    return bias.to(dtype)


def _pair(value, name: str, caller: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{caller}: {name} must be an int or a pair of ints, got {value!r}")
    return pair


def conv2d_grouped_operands(
    x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
    dilation: tuple[int, int], groups: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv2d as one batched matrix product, by im2col, the groups as the batch: (patches (G, B*L, K),
    filters (G, K, C_out/G)).

    K runs over (C_in/groups, kh, kw) with kw fastest, the contract's order (docs/arithmetic.md §5); L over
    the output positions, row-major, after the batch index. The one place that lowers a convolution:
    lba_conv2d and the bias calibration use it (through :func:`conv2d_gemm_operands`). Arguments are as
    checked by lba_conv2d (4-D x and weight, explicit integer pairs).
    """
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    # (B, C_in * kh * kw, L) with the channel slowest and kw fastest.
    columns = F.unfold(x, (kernel_h, kernel_w), dilation=dilation, padding=padding, stride=stride)
    batch, _, positions = columns.shape
    per_group = group_channels * kernel_h * kernel_w
    patches = columns.reshape(batch, groups, per_group, positions).permute(1, 0, 3, 2)
    patches = patches.reshape(groups, batch * positions, per_group)
    filters = weight.reshape(groups, out_channels // groups, per_group).transpose(1, 2)
    return patches, filters


def conv2d_gemm_operands(
    x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
    dilation: tuple[int, int], groups: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`conv2d_grouped_operands` per group: (patches (B, L, K), filters (K, C_out/groups))."""
    patches, filters = conv2d_grouped_operands(x, weight, stride, padding, dilation, groups)
    batch = x.shape[0]
    return [(patches[g].reshape(batch, -1, patches.shape[2]), filters[g]) for g in range(groups)]


def lba_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cfg: MacConfig,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    estimator: str = STE,
    stats: EventStats | None = None,
) -> torch.Tensor:
    """``nn.functional.conv2d`` (zero padding) on the accumulator, lowered by im2col.

    Each output is a dot product over K = C_in/groups * kh * kw in the order (C_in, kh, kw), kw fastest
    (docs/arithmetic.md §5); padded positions contribute zero products. x is (B, C_in, H, W) or
    (C_in, H, W); weight is (C_out, C_in/groups, kh, kw). The bias is added after accumulation.
    """
    caller = "lba_conv2d"
    _check_tensor(x, "x", caller)
    _check_tensor(weight, "weight", caller)
    stride, padding, dilation = (_pair(stride, "stride", caller), _pair(padding, "padding", caller),
                                 _pair(dilation, "dilation", caller))
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(
            f"{caller}: need stride >= 1, dilation >= 1, padding >= 0; got {stride}, {dilation}, {padding}"
        )
    if x.dim() == 3:
        batched = lba_conv2d(x.unsqueeze(0), weight, bias, cfg, stride, padding, dilation, groups,
                             estimator=estimator, stats=stats)
        return batched[0]
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"{caller}: expected x (B, C, H, W) and weight (O, C/groups, kh, kw), "
            f"got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    batch, in_channels, height, width = x.shape
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    if not isinstance(groups, int) or groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(f"{caller}: groups={groups!r} must divide C_in={in_channels} and C_out={out_channels}")
    if group_channels != in_channels // groups:
        raise ValueError(
            f"{caller}: weight has {group_channels} input channels per group, x gives {in_channels // groups}"
        )
    out_h = (height + 2 * padding[0] - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{caller}: the kernel {kernel_h}x{kernel_w} does not fit the padded input {height}x{width}")
    # One kernel call for all groups (depthwise convolutions included): the groups are the batch.
    patches, filters = conv2d_grouped_operands(x, weight, stride, padding, dilation, groups)
    plan = _check_call(cfg, estimator, stats, caller)
    y = _LBAMatMulFunction.apply(patches, filters, cfg, estimator, stats, plan, "auto")  # (G, B*L, C_out/G)
    y = y.reshape(groups, batch, out_h * out_w, out_channels // groups).permute(1, 0, 3, 2)
    y = y.reshape(batch, out_channels, out_h, out_w)
    return y if bias is None else y + _bias(bias, out_channels, y.dtype, caller).view(1, -1, 1, 1)
