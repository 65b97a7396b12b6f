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

Intercepted: torch.matmul / Tensor.matmul / ``@``, torch.mm, torch.bmm, torch.baddbmm, torch.addmm and
F.linear, F.scaled_dot_product_attention (its math: QK^T, scale, mask, softmax, dropout, ·V). Calls with
``out=`` and everything else run unchanged in float. Composite Python functions that dispatch as a whole
cannot be looked into (their body runs with the mode popped): nn.MultiheadAttention's
F.multi_head_attention_forward is one, so lbaify swaps nn.MultiheadAttention for
:class:`UnfusedMultiheadAttention`, the same computation op by op, whose products the mode sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .gemm import lba_matmul
from .layers import LBAMatMul

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
        """The math of F.scaled_dot_product_attention with both products on the accumulator; the scale, the
        mask and the softmax are the float epilogue between them."""
        if enable_gqa:
            repeats = query.shape[-3] // key.shape[-3]
            key, value = key.repeat_interleave(repeats, -3), value.repeat_interleave(repeats, -3)
        scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
        scores = self(query, key.transpose(-2, -1)) * scale
        if is_causal:
            causal = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else (
                scores + attn_mask)
        weights = torch.softmax(scores, dim=-1)
        if dropout_p > 0:
            weights = F.dropout(weights, dropout_p, training=True)
        return self(weights, value)

    def extra_repr(self) -> str:
        return f"torch-function products, {self._lba_repr()}"


def _epilogue(input: torch.Tensor, product: torch.Tensor, beta, alpha) -> torch.Tensor:
    """beta * input + alpha * product, in float, outside the MAC (as the layers add their bias)."""
    scaled = product if alpha == 1 else alpha * product
    return scaled + (input if beta == 1 else beta * input) if beta != 0 else scaled


_HANDLERS = {
    torch.matmul: LBAProducts.matmul,
    torch.Tensor.matmul: LBAProducts.matmul,
    torch.Tensor.__matmul__: LBAProducts.matmul,
    torch.mm: LBAProducts.matmul,
    torch.Tensor.mm: LBAProducts.matmul,
    torch.bmm: LBAProducts.__call__,
    torch.Tensor.bmm: LBAProducts.__call__,
    torch.addmm: LBAProducts.addmm,
    torch.Tensor.addmm: LBAProducts.addmm,
    torch.baddbmm: LBAProducts.baddbmm,
    torch.Tensor.baddbmm: LBAProducts.baddbmm,
    F.linear: LBAProducts.linear,
    F.scaled_dot_product_attention: LBAProducts.scaled_dot_product_attention,
}


class _Interception(TorchFunctionMode):
    """Routes the products of :data:`_HANDLERS` to an :class:`LBAProducts` while it is not suspended."""

    def __init__(self, products: LBAProducts) -> None:
        super().__init__()
        self.products = products

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is None or self.products.suspended or "out" in kwargs:
            return func(*args, **kwargs)
        return handler(self.products, *args, **kwargs)


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """nn.MultiheadAttention's mask convention as an additive mask: a boolean True means "not allowed"."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


class UnfusedMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention computed op by op with F.linear and torch.matmul (the math of
    F.multi_head_attention_forward), so that the products interception puts them on the accumulator.
    Same parameters and state dict; ``is_causal`` is a hint, as in nn.MultiheadAttention (``attn_mask``
    carries the mask)."""

    @classmethod
    def from_float(cls, module: nn.MultiheadAttention) -> UnfusedMultiheadAttention:
        parameter = module.out_proj.weight
        layer = cls(module.embed_dim, module.num_heads, module.dropout, module.in_proj_bias is not None,
                    module.bias_k is not None, module.add_zero_attn, module.kdim, module.vdim, module.batch_first,
                    device=parameter.device, dtype=parameter.dtype)
        layer.load_state_dict(module.state_dict())
        layer.train(module.training)
        return layer

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        del is_causal
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        length, batch, _ = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        if self._qkv_same_embed_dim:
            weights = self.in_proj_weight.chunk(3)
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        q, k, v = (F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))
        mask = _additive_mask(attn_mask, q.dtype)
        padding = _additive_mask(key_padding_mask, q.dtype)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.repeat(1, batch, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, batch, 1)])
            mask = None if mask is None else F.pad(mask, (0, 1))
            padding = None if padding is None else F.pad(padding, (0, 1))
        q, k, v = (t.reshape(t.shape[0], batch, heads, head_dim).permute(1, 2, 0, 3) for t in (q, k, v))
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(batch, heads, 1, head_dim)], dim=2)
            v = torch.cat([v, v.new_zeros(batch, heads, 1, head_dim)], dim=2)
            mask = None if mask is None else F.pad(mask, (0, 1))
            padding = None if padding is None else F.pad(padding, (0, 1))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(head_dim)
        if mask is not None:
            scores = scores + (mask.reshape(batch, heads, *mask.shape[-2:]) if mask.dim() == 3 else mask)
        if padding is not None:
            scores = scores + padding.reshape(batch, 1, 1, -1)
        attention = torch.softmax(scores, dim=-1)
        if self.dropout > 0 and self.training:
            attention = F.dropout(attention, self.dropout)
        output = self.out_proj(torch.matmul(attention, v).permute(2, 0, 1, 3).reshape(length, batch, -1))
        if self.batch_first and not unbatched:
            output = output.transpose(0, 1)
        if not need_weights:
            returned = None
        else:
            returned = attention.mean(dim=1) if average_attn_weights else attention
        if unbatched:
            output = output.squeeze(1)
            returned = None if returned is None else returned.squeeze(0)
        return output, returned


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


# ---------------------------------------------------------------------------------------------------- coverage
@dataclass
class AccumulatorCoverage:
    """What of a converted model runs on the accumulator and what stays in float.

    ``converted``: module name -> LBA layer type; ``kept_float``: module name -> type of the modules with
    products that stay in float (skipped, kept first/last, or of a kind lbaify cannot convert);
    ``intercepts_products``: whether torch-function products are intercepted. After
    :func:`accumulator_coverage` ran a forward: ``macs_accumulator`` and ``macs_float`` (multiply-accumulates
    of that forward) and ``float_ops`` (float MACs per operator).
    """

    converted: dict[str, str] = field(default_factory=dict)
    kept_float: dict[str, str] = field(default_factory=dict)
    intercepts_products: bool = True
    macs_accumulator: int | None = None
    macs_float: int | None = None
    float_ops: dict[str, int] = field(default_factory=dict)

    @property
    def accumulator_share(self) -> float | None:
        """Fraction of the measured forward's MACs that ran on the accumulator (None before a measurement)."""
        if self.macs_accumulator is None:
            return None
        total = self.macs_accumulator + self.macs_float
        return self.macs_accumulator / total if total else 0.0

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for kind in self.converted.values():
            kinds[kind] = kinds.get(kind, 0) + 1
        parts = [f"{len(self.converted)} layers on the accumulator ("
                 + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) + ")"]
        if self.intercepts_products:
            parts.append("torch-function products intercepted")
        if self.kept_float:
            parts.append(f"{len(self.kept_float)} kept in float ({', '.join(self.kept_float)})")
        if self.macs_accumulator is not None:
            parts.append(f"{100 * self.accumulator_share:.2f}% of {self.macs_accumulator + self.macs_float:,} "
                         "forward MACs on the accumulator")
            if self.float_ops:
                parts.append("float MACs: " + ", ".join(f"{op} {macs:,}" for op, macs in self.float_ops.items()))
        return "; ".join(parts)


def _macs_of_call(op, args, out) -> int:
    """Multiply-accumulates of one aten call that computes products (0 for every other operator)."""
    if op in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm):
        a, b = args[-2], args[-1]
        return math.prod(a.shape) * b.shape[-1]
    if op in (aten.mv, aten.addmv):
        return math.prod(args[-2].shape)
    if op is aten.dot:
        return args[0].numel()
    if op is aten.convolution:
        weight, transposed = args[1], args[6]
        per_output = math.prod(weight.shape[1:])
        return args[0].numel() * per_output if transposed else out.numel() * per_output
    if op in _ATTENTION_OPS:
        query, key, value = args[:3]
        return math.prod(query.shape[:-1]) * key.shape[-2] * (query.shape[-1] + value.shape[-1])
    return 0


aten = torch.ops.aten
_ATTENTION_OPS = tuple(
    getattr(aten, name) for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                                     "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    if hasattr(aten, name)
)


class _MacCounter(TorchDispatchMode):
    """Counts the MACs of the products that run in torch, per aten operator; with ``outside_only``, only those
    outside the LBA layers (whose kernels may use torch's matmul for exact partial sums)."""

    def __init__(self, layers: list[nn.Module], outside_only: bool) -> None:
        super().__init__()
        self.macs: dict[str, int] = {}
        self.depth = 0  # LBA layers currently running
        self.outside_only = outside_only
        self.handles = []
        for layer in layers:
            self.handles.append(layer.register_forward_pre_hook(self._enter_layer))
            self.handles.append(layer.register_forward_hook(self._leave_layer, always_call=True))

    def _enter_layer(self, _module, _args) -> None:
        self.depth += 1

    def _leave_layer(self, _module, _args, _output) -> None:
        self.depth -= 1

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        macs = _macs_of_call(func.overloadpacket, args, out)
        if macs and not (self.outside_only and self.depth):
            name = func.overloadpacket.__name__
            self.macs[name] = self.macs.get(name, 0) + macs
        return out


def _torch_macs(model: nn.Module, layers: list[nn.Module], args: tuple, kwargs: dict, outside_only: bool):
    """MACs per aten operator of the products that ran in torch during one forward (outside ``layers``)."""
    with _MacCounter(layers, outside_only) as counter:
        model(*args, **kwargs)
    return counter.macs


def measure_macs(model: nn.Module, layers: list[nn.Module], args: tuple, kwargs: dict) -> tuple[int, dict]:
    """(MACs of the forward on the accumulator, float MACs per operator), from two forwards: as converted
    (what runs in torch outside the LBA layers is float) and with ``exact_accumulation`` on every LBA layer
    (then every product runs in torch, so the count is the total). Counters and modes are restored."""
    saved = [(layer, layer.stats, layer.exact_accumulation) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        for layer in layers:
            layer.stats = None
        with torch.no_grad():
            float_ops = _torch_macs(model, layers, args, kwargs, outside_only=True)
            for layer in layers:
                layer.exact_accumulation = True
            total = sum(_torch_macs(model, layers, args, kwargs, outside_only=False).values())
    finally:
        for layer, stats, exact in saved:
            layer.stats, layer.exact_accumulation = stats, exact
        model.train(was_training)
    return total - sum(float_ops.values()), float_ops
