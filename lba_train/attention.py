"""F.scaled_dot_product_attention with its two products on the accumulator, exactly as torch 2.13 defines it.

The math of torch's reference implementation (``aten._scaled_dot_product_attention_math``): with
``enable_gqa`` the key and value heads are repeated (``repeat_interleave`` over the head dimension) to the
query's head count; S = Q·K^T is a product on the accumulator; the scale (``1/sqrt(E)`` unless ``scale`` is
given), the causal mask (top-left aligned lower triangle, as torch's ``is_causal``), the boolean mask (True
takes part) or the additive mask, the softmax and the dropout are the float epilogue; P·V is the second product
on the accumulator. A query row with no allowed key (every score -inf: a fully masked boolean row, or an
additive -inf row) gives zero weights and so a zero output, as torch's ``_safe_softmax``; an additive mask of
``finfo.min`` (transformers' padding masks) is finite, so such a row averages V, as in torch.

Dropout in training draws a keep mask with ``torch.rand`` (keep where the draw >= p) and scales the kept
weights by ``1/(1 - p)``; ``dropout_mask`` (a boolean or 0/1 tensor of the weights' shape) replaces the draw,
so that a test can give torch's math kernel and this function the same mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_arguments(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask, dropout_p,
                     is_causal: bool) -> None:
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2:
            raise ValueError(f"scaled_dot_product_attention: {name} must be a tensor of at least 2 dimensions")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal=True, not both")
    if not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), got {dropout_p!r}")


def repeat_kv_heads(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GQA: the key and value heads repeated (each head ``Hq/Hk`` times in a row) to the query's head count."""
    heads, kv_heads = query.shape[-3], key.shape[-3]
    if heads % kv_heads or heads % value.shape[-3]:
        raise ValueError(f"scaled_dot_product_attention: enable_gqa needs the query heads ({heads}) to be a "
                         f"multiple of the key/value heads ({kv_heads}, {value.shape[-3]})")
    return (key.repeat_interleave(heads // kv_heads, -3), value.repeat_interleave(heads // value.shape[-3], -3))


def attention_scores(product: Product, query: torch.Tensor, key: torch.Tensor, attn_mask=None,
                     is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """scale · Q·K^T (the product by ``product``) with the causal, boolean or additive mask applied."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = product(query, key.transpose(-2, -1)) * scale
    if is_causal:
        allowed = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(scores.dtype)
    return scores


def safe_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension; a row whose scores are all -inf gives zeros (torch's _safe_softmax)."""
    weights = torch.softmax(scores, dim=-1)
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
    return weights.masked_fill(empty, 0.0)


def scaled_dot_product_attention(product: Product, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None, enable_gqa: bool = False,
                                 dropout_mask: torch.Tensor | None = None) -> torch.Tensor:
    """F.scaled_dot_product_attention with Q·K^T and P·V computed by ``product(a, b)`` (a @ b, broadcast)."""
    _check_arguments(query, key, value, attn_mask, dropout_p, is_causal)
    if enable_gqa:
        key, value = repeat_kv_heads(query, key, value)
    weights = safe_softmax(attention_scores(product, query, key, attn_mask, is_causal, scale))
    if dropout_p > 0 or dropout_mask is not None:
        if dropout_mask is None:
            dropout_mask = torch.rand(weights.shape, device=weights.device) >= dropout_p
        weights = weights * dropout_mask.to(weights.dtype) / (1 - dropout_p)
    return product(weights, value)


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
