"""Every GEMM of a model on the accumulator: module swapping (Conv1d, transformers' Conv1D) and the interception of
torch-function products (lba_train.products), checked against lba_train.reference_dot and by MAC counts.

The transformers part builds randomly initialised, tiny GPT-2, DistilBERT and ViT models offline (no download) and
is skipped when the ``transformers`` package is missing (it is part of the ``test`` extra).
"""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lba_core import FloatFormat, MacConfig
from lba_train import LayerOptions, lbaify, reference_dot
from lba_train.convert import accumulator_coverage, lba_layers, set_collect_stats, set_lba_config
from lba_train.layers import LBAConv1d
from lba_train.products import PRODUCTS_NAME, products_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A narrow, chunked accumulator biased for max-abs-scaled e4m3 operands, so that rounding and events matter.
CFG = MacConfig("e4m3", FloatFormat(5, 4, bias=-2), chunk_size=4)
#: Products whose outputs are compared with reference_dot, per intercepted call.
SAMPLES_PER_CALL = 24


class _Recorder:
    """Records, for every product the interceptor computes, its quantized operands, their scales and its output."""

    def __init__(self, model: nn.Module):
        self.products = products_of(model)
        self.calls: list[tuple] = []
        self._operands: list = []
        self.handles = [
            self.products.input_quantizer.register_forward_hook(self._operand),
            self.products.weight_quantizer.register_forward_hook(self._operand),
            self.products.register_forward_hook(self._call),
        ]

    def _operand(self, _quantizer, _inputs, output):
        self._operands.append(output)

    def _call(self, _module, _inputs, output):
        (qa, a_scale), (qb, b_scale) = self._operands[-2:]
        self.calls.append((qa.detach(), a_scale, qb.detach(), b_scale, output.detach()))
        self._operands.clear()

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _check_against_reference(calls, cfg: MacConfig, generator: torch.Generator) -> tuple[int, int]:
    """(compared, mismatches) of sampled outputs of recorded products against reference_dot, rescaled as the
    interceptor rescales (float64 product with the two scales, then the output's dtype)."""
    compared = mismatches = 0
    for qa, a_scale, qb, b_scale, output in calls:
        batch = torch.broadcast_shapes(qa.shape[:-2], qb.shape[:-2])
        qa = qa.expand(*batch, *qa.shape[-2:]).reshape(-1, *qa.shape[-2:])
        qb = qb.expand(*batch, *qb.shape[-2:]).reshape(-1, *qb.shape[-2:])
        flat = output.reshape(-1, output.shape[-2], output.shape[-1])
        for _ in range(SAMPLES_PER_CALL):
            index = int(torch.randint(flat.shape[0], (1,), generator=generator))
            row = int(torch.randint(flat.shape[1], (1,), generator=generator))
            column = int(torch.randint(flat.shape[2], (1,), generator=generator))
            value = reference_dot(qa[index, row], qb[index, :, column], cfg)
            expected = (torch.tensor(value, dtype=torch.float64) * (a_scale * b_scale)).to(output.dtype)
            compared += 1
            mismatches += int(not torch.equal(flat[index, row, column], expected))
    return compared, mismatches


# ------------------------------------------------------------------------------------------------ small models
class _Functional(nn.Module):
    """A block whose products are all torch functions: F.linear, addmm, baddbmm, bmm, @, 1-D matmul, SDPA."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(8, 6, generator=generator))
        self.bias = nn.Parameter(torch.randn(8, generator=generator))
        self.vector = nn.Parameter(torch.randn(8, generator=generator))

    def forward(self, x):  # x: (2, 4, 6)
        h = F.linear(x, self.weight, self.bias)  # (2, 4, 8)
        h = torch.addmm(self.bias, h.reshape(-1, 8), self.weight @ self.weight.t(), beta=0.5).reshape(2, 4, 8)
        h = torch.baddbmm(h, h, h.transpose(1, 2) @ h, alpha=0.25)
        q = h.reshape(2, 4, 2, 4).transpose(1, 2)  # (2, heads, 4, 4)
        attended = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        mask = torch.tensor([True, True, True, False]).expand(4, 4)
        attended = attended + F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        return torch.matmul(attended.transpose(1, 2).reshape(2, 4, 8), self.vector)  # (2, 4)


def test_torch_function_products_follow_their_float_semantics():
    """With a wide accumulator and exact products of fp16-rounded operands, every intercepted op agrees with
    the float op it replaces (up to the fp16 rounding of the operands)."""
    model = _Functional().double()
    x = torch.randn(2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    converted = lbaify(model, MacConfig("fp16", "fp32"), example_inputs=x)
    assert converted.lba_coverage.accumulator_share == 1.0 and not converted.lba_coverage.float_ops
    torch.testing.assert_close(converted(x), model(x), rtol=5e-3, atol=5e-3)
    set_lba_config(converted, exact_accumulation=True)
    torch.testing.assert_close(converted(x), model(x), rtol=5e-3, atol=5e-3)


def test_intercepted_products_equal_the_reference(comparisons):
    with pytest.warns(UserWarning, match="no layer was converted; only products computed with torch functions"):
        converted = lbaify(_Functional().double(), CFG)
    recorder = _Recorder(converted)
    converted(torch.randn(2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    recorder.remove()
    assert len(recorder.calls) == 10  # linear, w @ w^T, addmm, h^T @ h, baddbmm, 2 x 2 in SDPA, 1-D matmul
    compared, mismatches = _check_against_reference(recorder.calls, CFG, torch.Generator().manual_seed(3))
    comparisons("torch-function products vs reference_dot", compared, mismatches)
    assert mismatches == 0


def test_products_have_gradients_and_event_counters():
    with pytest.warns(UserWarning, match="no layer was converted"):
        converted = lbaify(_Functional(), CFG, LayerOptions(estimator="immediate-diff"))
    set_collect_stats(converted, True)
    converted(torch.randn(2, 4, 6)).sum().backward()
    assert converted.weight.grad is not None and torch.isfinite(converted.weight.grad).all()
    names = [name for name, _ in lba_layers(converted)]
    assert names == [PRODUCTS_NAME] and products_of(converted).stats.steps > 0


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.kept = _Functional()
        self.proj = nn.Linear(4, 6)

    def forward(self, x):  # x: (2, 3, 4)
        h = self.proj(self.conv(x).transpose(1, 2))  # (2, 4, 6)
        return self.kept(h) + h.sum()


def test_skipped_modules_keep_their_products_in_float_and_the_report_says_so():
    model = _Mixed()
    x = torch.randn(2, 3, 4)
    converted = lbaify(model, CFG, skip="kept", example_inputs=x)
    coverage = converted.lba_coverage
    assert coverage.converted == {"conv": "LBAConv1d", "proj": "LBALinear"}
    assert coverage.kept_float == {"kept": "_Functional"}
    on_accumulator = 2 * 4 * 4 * 9 + 2 * 4 * 4 * 6  # conv: 2 x 4 positions x 4 outputs x (3 x 3); proj
    assert coverage.macs_accumulator == on_accumulator and 0 < coverage.accumulator_share < 1
    assert set(coverage.float_ops) >= {"addmm", "bmm", "baddbmm"} and "kept" in coverage.summary()
    assert products_of(converted).stats is None or products_of(converted).stats.steps == 0
    converted(x)
    assert products_of(converted).stats.steps == 0, "nothing of the skipped module ran on the accumulator"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lbaify(nn.Sequential(nn.ReLU()), CFG, intercept=False)
        lbaify(nn.Sequential(nn.ReLU()), CFG, example_inputs=torch.randn(2))
    assert any("nothing was converted" in str(w.message) for w in caught)
    assert any("none of the" in str(w.message) for w in caught)


def test_lba_conv1d_matches_the_reference(comparisons):
    torch.manual_seed(4)
    conv = nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2).double()
    layer = LBAConv1d.from_float(conv, CFG)
    x = torch.randn(2, 4, 7, dtype=torch.float64)
    y = layer(x).detach()
    a, a_scale = layer.input_quantizer(x)
    b, b_scale = layer.weight_quantizer(layer.weight)
    expected = torch.empty_like(y)
    for (rows, filters), group in zip(layer.gemm_operands(a.detach(), b.detach()), range(2)):
        values = torch.tensor([[reference_dot(rows[i], filters[:, j], CFG) for j in range(filters.shape[1])]
                               for i in range(rows.shape[0])], dtype=torch.float64)
        expected[:, 3 * group: 3 * group + 3] = values.reshape(2, -1, 3).transpose(1, 2)
    expected = expected * (a_scale * b_scale) + conv.bias.detach().reshape(1, -1, 1)
    mismatches = int((y != expected).sum())
    comparisons("LBAConv1d groups=2 stride=2 vs reference_dot", y.numel(), mismatches)
    assert mismatches == 0
    exact = F.conv1d(a, b, None, 2, 1, 1, 2) * (a_scale * b_scale) + conv.bias.reshape(1, -1, 1)
    layer.exact_accumulation = True
    torch.testing.assert_close(layer(x), exact)


def test_tied_weights_stay_tied():
    class _Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embedding.weight

        def forward(self, ids):
            return self.head(self.embedding(ids))

    model = _Tied()
    converted = lbaify(model, CFG)
    assert converted.head.weight is converted.embedding.weight and converted.head.weight is not model.head.weight
    converted(torch.tensor([[1, 2, 3]])).sum().backward()
    assert converted.embedding.weight.grad is not None


def test_sequential_roots_and_a_second_lbaify():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    converted = lbaify(model, CFG)
    assert len(converted) == 3, "the interceptor is not a submodule: nn.Sequential still calls three modules"
    again = lbaify(converted, CFG)
    assert accumulator_coverage(again, torch.randn(3, 4)).accumulator_share == 1.0
    assert set(again.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("variant", [
    {}, {"batch_first": True, "add_bias_kv": True}, {"kdim": 3, "vdim": 5, "add_zero_attn": True}, {"bias": False},
], ids=["plain", "batch_first-bias_kv", "kdim-vdim-zero_attn", "no-bias"])
def test_unfused_multihead_attention_is_nn_multihead_attention(variant):
    from lba_train.products import UnfusedMultiheadAttention

    torch.manual_seed(6)
    reference = nn.MultiheadAttention(8, 2, **variant).double().eval()
    unfused = UnfusedMultiheadAttention.from_float(reference)
    batch_first = variant.get("batch_first", False)
    shape = (2, 5) if batch_first else (5, 2)
    query = torch.randn(*shape, 8, dtype=torch.float64)
    key = torch.randn(*((2, 4) if batch_first else (4, 2)), variant.get("kdim", 8), dtype=torch.float64)
    value = torch.randn(*key.shape[:2], variant.get("vdim", 8), dtype=torch.float64)
    padding = torch.tensor([[False, False, True, False], [False, False, False, False]])
    attn_mask = torch.randn(5, 4, dtype=torch.float64)
    float_padding = torch.zeros(2, 4, dtype=torch.float64).masked_fill(padding, float("-inf"))
    for kwargs in ({}, {"key_padding_mask": float_padding, "attn_mask": attn_mask},
                   {"key_padding_mask": padding, "attn_mask": torch.randn(4, 5, 4, dtype=torch.float64) > 1.5,
                    "average_attn_weights": False},
                   {"need_weights": False}):
        expected, expected_weights = reference(query, key, value, **kwargs)
        got, weights = unfused(query, key, value, **kwargs)
        torch.testing.assert_close(got, expected)
        assert (weights is None) == (expected_weights is None)
        if weights is not None:
            torch.testing.assert_close(weights, expected_weights)
    if not batch_first:  # unbatched inputs
        torch.testing.assert_close(unfused(query[:, 0], key[:, 0], value[:, 0])[0],
                                   reference(query[:, 0], key[:, 0], value[:, 0])[0])


def test_torch_transformer_encoder_runs_on_the_accumulator():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True).eval()
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 6, 16)
    converted = lbaify(encoder, CFG, example_inputs=x)
    assert converted.lba_coverage.accumulator_share == 1.0, converted.lba_coverage.summary()
    wide = lbaify(encoder, MacConfig("fp16", "fp32"))
    with torch.no_grad():
        torch.testing.assert_close(wide(x), encoder(x), rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------------------ transformers
needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="transformers is not installed (pip install -e '.[test]')")


def _gpt2(attention: str):
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=16, vocab_size=64, bos_token_id=0,
                        eos_token_id=0, attn_implementation=attention)
    return GPT2Model(config), {"input_ids": torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))}


def _distilbert(attention: str):
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(n_layers=2, dim=32, n_heads=2, hidden_dim=64, vocab_size=64,
                              max_position_embeddings=16, attn_implementation=attention)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return DistilBertModel(config), {"input_ids": ids, "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3])}


def _vit(attention: str):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, attn_implementation=attention)
    return ViTModel(config), {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))}


@needs_transformers
@pytest.mark.parametrize(("build", "attention"), [(_gpt2, "sdpa"), (_gpt2, "eager"), (_distilbert, "sdpa"),
                                                  (_vit, "eager")],
                         ids=["gpt2-sdpa", "gpt2-eager", "distilbert-sdpa", "vit-eager"])
def test_transformers_models_run_on_the_accumulator(build, attention, comparisons):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own notices about the tiny configurations
        model, inputs = build(attention)
    model.eval()
    converted = lbaify(model, CFG, example_inputs=inputs)
    coverage = converted.lba_coverage
    assert coverage.accumulator_share >= 0.99, coverage.summary()
    assert not any(type(module).__name__ in ("Linear", "Conv1D", "Conv2d") for module in converted.modules())
    recorder = _Recorder(converted)
    with torch.no_grad():
        output = converted(**inputs).last_hidden_state
    recorder.remove()
    assert torch.isfinite(output).all()
    assert len(recorder.calls) == 2 * 2, "Q K^T and softmax V in each of the two layers"
    compared, mismatches = _check_against_reference(recorder.calls, CFG, torch.Generator().manual_seed(5))
    name = f"{build.__name__[1:]} ({attention}) attention products vs reference_dot"
    comparisons(name, compared, mismatches)
    assert mismatches == 0
    if attention == "sdpa":  # the same model, wide formats: the converted forward is the float one
        wide = lbaify(model, MacConfig("fp16", "fp32"))
        with torch.no_grad():
            torch.testing.assert_close(wide(**inputs).last_hidden_state, model(**inputs).last_hidden_state,
                                       rtol=2e-2, atol=2e-2)
