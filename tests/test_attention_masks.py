"""Masked attention on the accumulator is F.scaled_dot_product_attention of the pinned torch: boolean masks (a
fully masked row gives zeros), additive masks (-inf rows give zeros, transformers' finfo.min rows the mean of V),
is_causal, scale, GQA, dropout with an injected mask; and transformers' Llama with left padding."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lba_core import FloatFormat, MacConfig
from lba_train import attention, lbaify
from lba_train.products import products_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Near-float: binary32 precision (8 exponent, 23 fraction bits) for the operands and the accumulator. The
#: operands' bias is 200 (largest value 2^56): max-abs scaling puts each operand's largest magnitude at the
#: format's largest value, and with fp32's own bias (2^128) every product would overflow the e8m23 accumulator.
NEAR_FLOAT = MacConfig(FloatFormat(8, 23, bias=200), "e8m23")


class _Attend(nn.Module):
    """Calls F.scaled_dot_product_attention with the keyword arguments it is given."""

    def forward(self, query, key, value, kwargs):
        return F.scaled_dot_product_attention(query, key, value, **kwargs)


def _converted() -> nn.Module:
    with pytest.warns(UserWarning, match="no layer was converted"):
        return lbaify(_Attend(), NEAR_FLOAT)


def _masks(generator: torch.Generator, length: int, keys: int) -> list[dict]:
    """Random boolean and additive masks with fully masked rows, is_causal, scale, GQA."""
    boolean = torch.rand(2, 1, length, keys, generator=generator) > 0.4
    boolean[0, 0, 1] = False  # a fully masked row
    boolean[1, 0, -1] = False
    additive_inf = torch.zeros(2, 1, length, keys).masked_fill(~boolean, float("-inf"))
    additive_min = torch.zeros(2, 1, length, keys).masked_fill(~boolean, torch.finfo(torch.float32).min)
    noise = torch.randn(length, keys, generator=generator)
    return [{"attn_mask": boolean}, {"attn_mask": additive_inf}, {"attn_mask": additive_min},
            {"attn_mask": additive_min + noise}, {"is_causal": True}, {"is_causal": True, "scale": 0.3},
            {"attn_mask": boolean[:, :, :, :].expand(2, 4, length, keys), "scale": 1.7}, {}]


def test_sdpa_masks_match_torch_near_float():
    generator = torch.Generator().manual_seed(0)
    converted = _converted()
    compared = 0
    for length, keys in ((5, 5), (3, 7)):
        query = torch.randn(2, 4, length, 8, generator=generator)
        key = torch.randn(2, 4, keys, 8, generator=generator)
        value = torch.randn(2, 4, keys, 6, generator=generator)
        for kwargs in _masks(generator, length, keys):
            expected = F.scaled_dot_product_attention(query, key, value, **kwargs)
            got = converted(query, key, value, kwargs)
            assert torch.isfinite(got).all(), kwargs
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{kwargs}: {m}")
            compared += 1
    assert compared == 16
    # the fully masked rows: zeros for boolean and -inf masks, the mean of V for finfo.min
    query, key, value = (torch.randn(1, 1, 3, 4, generator=generator) for _ in range(3))
    mask = torch.tensor([[True, True, False], [False, False, False], [True, False, True]])
    assert torch.equal(converted(query, key, value, {"attn_mask": mask})[0, 0, 1], torch.zeros(4))
    finfo_mask = torch.zeros(3, 3).masked_fill(~mask, torch.finfo(torch.float32).min)
    torch.testing.assert_close(converted(query, key, value, {"attn_mask": finfo_mask})[0, 0, 1], value[0, 0].mean(0))


def test_sdpa_grouped_query_attention():
    generator = torch.Generator().manual_seed(1)
    converted = _converted()
    query = torch.randn(2, 6, 5, 8, generator=generator)
    key, value = torch.randn(2, 2, 5, 8, generator=generator), torch.randn(2, 2, 5, 8, generator=generator)
    for kwargs in ({"enable_gqa": True}, {"enable_gqa": True, "is_causal": True}):
        torch.testing.assert_close(converted(query, key, value, kwargs),
                                   F.scaled_dot_product_attention(query, key, value, **kwargs), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        attention.scaled_dot_product_attention(torch.matmul, query[:, :5], key, value, enable_gqa=True)


def test_sdpa_dropout_with_an_injected_mask():
    """Dropout in training: with the same keep mask, the accumulator's attention is torch's math kernel."""
    generator = torch.Generator().manual_seed(2)
    query, key, value = (torch.randn(2, 2, 4, 8, generator=generator) for _ in range(3))
    keep = torch.rand(2, 2, 4, 4, generator=generator) >= 0.3
    expected, _ = torch.ops.aten._scaled_dot_product_attention_math(query, key, value, None, 0.3, False, keep)
    converted = _converted()
    products = products_of(converted)
    got = attention.scaled_dot_product_attention(products, query, key, value, dropout_p=0.3, dropout_mask=keep)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    drawn = converted(query, key, value, {"dropout_p": 0.3})  # a drawn mask: some weights dropped, the rest scaled
    assert drawn.shape == expected.shape and torch.isfinite(drawn).all()
    with pytest.raises(ValueError, match="dropout_p must be in"):
        converted(query, key, value, {"dropout_p": 1.5})


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_llama_left_padding_equals_pytorch_near_float():
    """The crash of issue 27: a left-padded Llama batch (sdpa attention, GQA, rotary) gave NaN, then 'cannot
    quantize NaN'. It now runs and equals PyTorch within float tolerance."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                         attn_implementation="sdpa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LlamaForCausalLM(config).eval()
    ids = torch.randint(1, 64, (3, 7), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones(3, 7, dtype=torch.long)
    attention_mask[1, :3] = 0  # left padding
    attention_mask[2, :6] = 0
    inputs = {"input_ids": ids, "attention_mask": attention_mask}
    converted = lbaify(model, NEAR_FLOAT, example_inputs=inputs)
    assert converted.lba_coverage.accumulator_share == 1.0, converted.lba_coverage.summary()
    with torch.no_grad():
        expected = model(**inputs).logits
        got = converted(**inputs).logits
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
