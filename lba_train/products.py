"""Matrix products a model computes with torch functions instead of modules, put on the accumulator.

Module swapping (lba_train.convert) reaches nn.Linear, nn.Conv1d/Conv2d, transformers' Conv1D and
:class:`~lba_train.layers.MatMul`. Attention products in most models are calls of ``torch.matmul``,
``F.scaled_dot_product_attention`` and the like inside the attention class's forward. :class:`LBAProducts`
intercepts them with a ``TorchFunctionMode`` that is active while the converted model's forward runs (a
forward pre-hook enters it, a forward hook that runs even on errors leaves it) and routes each one to
``lba_matmul``/``lba_bmm`` with the layers' operand quantization (per-tensor max-abs scales for both operands)
and estimator. Modules that compute their own products (the LBA layers, and float modules kept in high
precision by ``skip`` or ``keep_first_last``) suspend the interception while they run, so that nothing is
converted twice and nothing skipped is converted.

Intercepted (:data:`_HANDLERS`; docs/operations.md gives the order of every sum): torch.matmul /
Tensor.matmul / ``@`` / linalg.matmul, mm, bmm, mv, dot, vdot, inner, addmm, baddbmm, addbmm, addmv,
tensordot, einsum (lba_train.einsum), linalg.multi_dot and chain_matmul (left to right), F.linear,
F.bilinear, F.conv1d/2d/3d and F.conv_transpose1d/2d/3d (lba_train.lowering) and
F.scaled_dot_product_attention (lba_train.attention). Calls with ``out=`` and everything else run unchanged
in float. Composite Python functions that dispatch as a whole cannot be looked into: lbaify swaps
nn.MultiheadAttention and the recurrent layers for unrolled equivalents (lba_train.attention,
lba_train.recurrent) whose products the mode sees.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from . import attention, einsum, lowering
from .attention import UnfusedMultiheadAttention
from .coverage import AccumulatorCoverage
from .gemm import lba_bmm, lba_matmul
from .layers import LBAMatMul

__all__ = ["AccumulatorCoverage", "LBAProducts", "PRODUCTS_NAME", "UnfusedMultiheadAttention", "add_suspension",
           "attach_products", "products_of"]

#: Name of the interceptor in lba_layers() and event tables, and of the model attribute that holds it.
PRODUCTS_NAME = "lba_products"


class LBAProducts(LBAMatMul):
    """The accumulator for the products a model computes with torch functions (see the module docstring).

    It is an :class:`LBAMatMul` (configuration, estimator, quantizers, event counters, exact accumulation),
    so :func:`~lba_train.convert.set_lba_config`, the event tables and the bias calibration treat it as one
    more LBA layer. ``suspended`` counts the modules currently running that compute their own products.
    """

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.suspended = 0
        self._modes: list[_Interception] = []

    # ------------------------------------------------------------------ hooks
    def enter(self, _module, _args) -> None:
        mode = _Interception(self)
        mode.__enter__()
        self._modes.append(mode)

    def leave(self, _module, _args, _output) -> None:
        self._modes.pop().__exit__(None, None, None)

    def suspend(self, _module, _args) -> None:
        self.suspended += 1

    def resume(self, _module, _args, _output) -> None:
        self.suspended -= 1

    # ------------------------------------------------------------------ the products
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a @ b for a (..., M, K) and b (..., K, N) broadcast as torch.matmul does; a 2-D b is one GEMM over
        all rows of a."""
        return self._rows_times_matrix(a, b) if b.dim() == 2 else super().forward(a, b)

    def gemm_operands(self, a: torch.Tensor, b: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(a.reshape(-1, a.shape[-1]), b)] if b.dim() == 2 else super().gemm_operands(a, b)

    def _rows_times_matrix(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        qx, x_scale = self.input_quantizer(x)
        qw, w_scale = self.weight_quantizer(w)
        rows = qx.reshape(-1, x.shape[-1])
        if self.exact_accumulation:
            y = rows.to(torch.float64) @ qw.to(torch.float64)
        else:
            y = lba_matmul(rows, qw, self.cfg, estimator=self.estimator, stats=self.stats)
        y = y.reshape(*x.shape[:-1], w.shape[-1]).to(torch.float64)
        return (y * (x_scale * w_scale)).to(torch.promote_types(x.dtype, w.dtype))

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """torch.matmul's semantics (1-D operands, broadcast batches) on the accumulator."""
        if a.dim() == 1 and b.dim() == 1:
            return self.matmul(a.unsqueeze(0), b.unsqueeze(1)).reshape(())
        if a.dim() == 1:
            return self.matmul(a.unsqueeze(0), b).squeeze(-2)
        if b.dim() == 1:
            return self.matmul(a, b.unsqueeze(1)).squeeze(-1)
        return self(a, b)

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        y = self(x, weight.t())
        return y if bias is None else y + bias

    def addmm(self, input, mat1, mat2, *, beta=1, alpha=1) -> torch.Tensor:
        return _epilogue(input, self(mat1, mat2), beta, alpha)

    def baddbmm(self, input, batch1, batch2, *, beta=1, alpha=1) -> torch.Tensor:
        return _epilogue(input, self(batch1, batch2), beta, alpha)

    def scaled_dot_product_attention(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                     scale=None, enable_gqa=False) -> torch.Tensor:
        """F.scaled_dot_product_attention with both products on the accumulator (lba_train.attention)."""
        return attention.scaled_dot_product_attention(self, query, key, value, attn_mask, dropout_p, is_causal,
                                                      scale, enable_gqa)

    # ------------------------------------------------------------------ lowered products (lba_train.lowering)
    def _values(self, qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
        """Accumulator values (float64) of qa @ qb for quantized operands; a 2-D qb is one GEMM for all rows."""
        if qb.dim() == 2:
            rows = qa.reshape(-1, qa.shape[-1])
            if self.exact_accumulation:
                y = rows.to(torch.float64) @ qb.to(torch.float64)
            else:
                y = lba_matmul(rows, qb, self.cfg, estimator=self.estimator, stats=self.stats)
            return y.reshape(*qa.shape[:-1], qb.shape[-1]).to(torch.float64)
        batch = torch.broadcast_shapes(qa.shape[:-2], qb.shape[:-2])
        left = qa.expand(*batch, *qa.shape[-2:]).reshape(-1, *qa.shape[-2:])
        right = qb.expand(*batch, *qb.shape[-2:]).reshape(-1, *qb.shape[-2:])
        if self.exact_accumulation:
            y = torch.bmm(left.to(torch.float64), right.to(torch.float64))
        else:
            y = lba_bmm(left, right, self.cfg, estimator=self.estimator, stats=self.stats)
        return y.reshape(*batch, qa.shape[-2], qb.shape[-1]).to(torch.float64)

    def _lowered(self, lower, exact, x: torch.Tensor, weight: torch.Tensor, bias, *geometry) -> torch.Tensor:
        """``lower(product, qx, qw, *geometry)`` on the quantized operands, rescaled, plus the bias in float.
        With exact accumulation, ``exact`` (the torch function) on the quantized operands in float64, so that
        the MAC count of the wide pass is torch's."""
        qx, x_scale = self.input_quantizer(x)
        qw, w_scale = self.weight_quantizer(weight)
        if self.exact_accumulation:
            y = exact(qx.to(torch.float64), qw.to(torch.float64), None, *geometry)
        else:
            y = lower(self._values, qx, qw, *geometry)
        y = (y.to(torch.float64) * (x_scale * w_scale)).to(torch.promote_types(x.dtype, weight.dtype))
        return y if bias is None else y + bias.reshape(-1, *([1] * (weight.dim() - 2)))

    def convolution(self, exact, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
        return self._lowered(lowering.convolution, exact, x, weight, bias, stride, padding, dilation, groups)

    def conv_transpose(self, exact, x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                       dilation=1) -> torch.Tensor:
        return self._lowered(lowering.conv_transpose, exact, x, weight, bias, stride, padding, output_padding,
                             groups, dilation)

    def bilinear(self, input1, input2, weight, bias=None) -> torch.Tensor:
        """nn.Bilinear's x1^T W_o x2 as two sums on the accumulator: over x1's features first (one product of
        x1 with W arranged (I1, O * I2)), then, per output, over x2's features."""
        out_features, in1, in2 = weight.shape
        leading = input1.shape[:-1]
        partial = self(input1.reshape(-1, in1), weight.permute(1, 0, 2).reshape(in1, out_features * in2))
        y = self(partial.reshape(-1, out_features, in2), input2.reshape(-1, in2, 1)).reshape(*leading, out_features)
        return y if bias is None else y + bias

    def einsum(self, *args) -> torch.Tensor:
        equation, operands = einsum.parse_arguments(args)
        if len(operands) < 2:
            return torch.einsum(equation, *operands)  # one operand: sums and diagonals, no products
        return einsum.einsum(self, equation, operands)

    def tensordot(self, a, b, dims=2) -> torch.Tensor:
        return lowering.tensordot(self, a, b, dims)

    def addbmm(self, input, batch1, batch2, *, beta=1, alpha=1) -> torch.Tensor:
        return _epilogue(input, self(*lowering.addbmm_operands(batch1, batch2)), beta, alpha)

    def addmv(self, input, mat, vec, *, beta=1, alpha=1) -> torch.Tensor:
        return _epilogue(input, self.matmul(mat, vec), beta, alpha)

    def inner(self, a, b) -> torch.Tensor:
        if a.dim() == 0 or b.dim() == 0:
            return a * b  # a scaling, no sum
        return lowering.tensordot(self, a, b, ([-1], [-1]))

    def multi_dot(self, tensors) -> torch.Tensor:
        return lowering.multi_dot(self.matmul, tensors)

    def chain_matmul(self, *matrices) -> torch.Tensor:
        return lowering.multi_dot(self.matmul, matrices)

    def rmatmul(self, b, a) -> torch.Tensor:
        return self.matmul(a, b)

    def extra_repr(self) -> str:
        return f"torch-function products, {self._lba_repr()}"


def _epilogue(input: torch.Tensor, product: torch.Tensor, beta, alpha) -> torch.Tensor:
    """beta * input + alpha * product, in float, outside the MAC (as the layers add their bias)."""
    scaled = product if alpha == 1 else alpha * product
    return scaled + (input if beta == 1 else beta * input) if beta != 0 else scaled


def _convolution(exact):
    return lambda products, *args, **kwargs: products.convolution(exact, *args, **kwargs)


def _conv_transpose(exact):
    return lambda products, *args, **kwargs: products.conv_transpose(exact, *args, **kwargs)


#: torch function -> LBAProducts method (the products lbaify intercepts; docs/operations.md lists them).
_HANDLERS = {
    torch.matmul: LBAProducts.matmul,
    torch.Tensor.matmul: LBAProducts.matmul,
    torch.Tensor.__matmul__: LBAProducts.matmul,
    torch.Tensor.__rmatmul__: LBAProducts.rmatmul,
    torch.linalg.matmul: LBAProducts.matmul,
    torch.mm: LBAProducts.matmul,
    torch.Tensor.mm: LBAProducts.matmul,
    torch.mv: LBAProducts.matmul,
    torch.Tensor.mv: LBAProducts.matmul,
    torch.dot: LBAProducts.matmul,
    torch.Tensor.dot: LBAProducts.matmul,
    torch.vdot: LBAProducts.matmul,
    torch.Tensor.vdot: LBAProducts.matmul,
    torch.inner: LBAProducts.inner,
    torch.Tensor.inner: LBAProducts.inner,
    torch.bmm: LBAProducts.__call__,
    torch.Tensor.bmm: LBAProducts.__call__,
    torch.addmm: LBAProducts.addmm,
    torch.Tensor.addmm: LBAProducts.addmm,
    torch.baddbmm: LBAProducts.baddbmm,
    torch.Tensor.baddbmm: LBAProducts.baddbmm,
    torch.addbmm: LBAProducts.addbmm,
    torch.Tensor.addbmm: LBAProducts.addbmm,
    torch.addmv: LBAProducts.addmv,
    torch.Tensor.addmv: LBAProducts.addmv,
    torch.tensordot: LBAProducts.tensordot,
    torch.einsum: LBAProducts.einsum,
    torch.linalg.multi_dot: LBAProducts.multi_dot,
    torch.chain_matmul: LBAProducts.chain_matmul,
    F.linear: LBAProducts.linear,
    F.bilinear: LBAProducts.bilinear,
    F.conv1d: _convolution(F.conv1d),
    F.conv2d: _convolution(F.conv2d),
    F.conv3d: _convolution(F.conv3d),
    F.conv_transpose1d: _conv_transpose(F.conv_transpose1d),
    F.conv_transpose2d: _conv_transpose(F.conv_transpose2d),
    F.conv_transpose3d: _conv_transpose(F.conv_transpose3d),
    F.scaled_dot_product_attention: LBAProducts.scaled_dot_product_attention,
}


class _Interception(TorchFunctionMode):
    """Routes the products of :data:`_HANDLERS` to an :class:`LBAProducts` while it is not suspended."""

    def __init__(self, products: LBAProducts) -> None:
        super().__init__()
        self.products = products

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        handler = _HANDLERS.get(func)
        if handler is None or self.products.suspended or kwargs.get("out") is not None:
            return func(*args, **kwargs)
        kwargs.pop("out", None)  # torch.tensordot hands out=None on
        return handler(self.products, *args, **kwargs)


def products_of(model: nn.Module) -> LBAProducts | None:
    """The interceptor lbaify attached to ``model``, if any."""
    products = model.__dict__.get(PRODUCTS_NAME)
    return products if isinstance(products, LBAProducts) else None


def attach_products(model: nn.Module, products: LBAProducts, own_products: list[nn.Module]) -> None:
    """Make ``products`` intercept the torch-function products of ``model``'s forward, except inside the
    modules ``own_products`` (LBA layers and modules kept in float), which suspend it while they run.

    The interceptor is a plain attribute, not a submodule: containers such as nn.Sequential call every
    submodule in their forward. It has no parameters, so state dicts are unchanged.
    """
    object.__setattr__(model, PRODUCTS_NAME, products)
    model.register_forward_pre_hook(products.enter)
    model.register_forward_hook(products.leave, always_call=True)
    for module in own_products:
        add_suspension(module, products)


def add_suspension(module: nn.Module, products: LBAProducts) -> None:
    module.register_forward_pre_hook(products.suspend)
    module.register_forward_hook(products.resume, always_call=True)
