"""lba_matmul, lba_bmm, lba_linear and lba_conv2d against explicit loops over lba_train.reference_dot.

The references here are written independently of the GEMM code: plain Python loops that build each output's
operand vectors in the contract's order (docs/arithmetic.md §5) and call the exact reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lba_train
from lba_core import ConfigError, MacConfig
from lba_train import EventStats, lba_bmm, lba_conv2d, lba_linear, lba_matmul, reference_dot
from lba_train.quantize import quantize
from support.gemm import count_mismatches, reference_gemm


CONFIGS = [
    MacConfig("e4m3", "e4m7"),
    MacConfig("e4m3", "e5m10", chunk_size=4, rounding="rtz"),
    MacConfig("e5m2_sub", "e6m5_sub", product="e5m4", underflow=False),
    MacConfig("e4m3", "e8m23", weight="e5m2"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[cfg.name for cfg in CONFIGS])
def test_lba_matmul_rounds_real_operands_and_matches_the_reference(cfg, comparisons):
    """Unquantized float32 operands with leading batch dimensions: every element vs reference_dot."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 19, generator=generator) * 6
    w = torch.randn(19, 11, generator=generator) * 6
    stats = EventStats()
    y = lba_matmul(x, w, cfg, stats=stats)
    assert y.shape == (2, 3, 11)
    rows = x.reshape(-1, 19).double()
    expected = reference_gemm(rows, w, cfg)[0].reshape(2, 3, 11)
    mismatches = count_mismatches(y, expected)
    comparisons(f"lba_matmul {cfg.name}", expected.size, mismatches)
    assert mismatches == 0
    assert stats.steps == 6 * 11 * (19 + (-(-19 // cfg.chunk_size) if cfg.chunk_size else 0))


def test_output_dtype_is_float32_only_when_it_holds_every_accumulator_value():
    x, w = torch.randn(2, 4), torch.randn(4, 3)
    assert lba_matmul(x, w, MacConfig("e4m3", "e4m7")).dtype == torch.float32
    assert lba_matmul(x, w, MacConfig("e4m3", "e5m10")).dtype == torch.float32
    assert lba_matmul(x, w, MacConfig("e4m3", "e8m23")).dtype == torch.float64  # max is 2^128 * (2 - 2^-23)
    assert lba_matmul(x, w, MacConfig("e4m3", "e6m30")).dtype == torch.float64  # 30 fraction bits
    assert lba_matmul(x.double(), w.double(), MacConfig("e4m3", "e4m7")).dtype == torch.float32


def test_representable_operands_pass_unchanged_and_empty_shapes_work():
    cfg = MacConfig("e4m3", "e4m7")
    x = quantize(torch.randn(3, 5), cfg.input)
    w = quantize(torch.randn(5, 4), cfg.input)
    exact = (x.double() @ w.double()).numpy()
    y = lba_matmul(x, w, MacConfig("e4m3", "e8m23"))  # wide enough: a few products, no rounding at all
    assert np.array_equal(y.numpy(), exact)
    assert torch.equal(lba_matmul(torch.zeros(3, 0), torch.zeros(0, 4), cfg), torch.zeros(3, 4))
    assert lba_matmul(torch.zeros(0, 5), torch.zeros(5, 4), cfg).shape == (0, 4)
    assert lba_matmul(torch.randn(5), torch.randn(5, 4), cfg).shape == (4,)


def test_lba_bmm_matches_a_loop_over_the_batch(comparisons):
    cfg = MacConfig("e4m3", "e4m5", chunk_size=3, weight="e5m2")
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(3, 4, 10, generator=generator) * 3
    b = torch.randn(3, 10, 6, generator=generator) * 3
    y = lba_bmm(a, b, cfg)
    expected = np.stack([reference_gemm(a[i], b[i], cfg)[0] for i in range(3)])
    mismatches = count_mismatches(y, expected)
    comparisons("lba_bmm", expected.size, mismatches)
    assert y.shape == (3, 4, 6) and mismatches == 0


def test_lba_linear_uses_the_nn_linear_layout_and_adds_the_bias_afterwards(comparisons):
    cfg = MacConfig("e4m3", "e4m4")
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, 12, generator=generator) * 4
    weight = torch.randn(7, 12, generator=generator) * 4  # (N, K)
    bias = torch.randn(7, generator=generator)
    y = lba_linear(x, weight, bias, cfg)
    accumulated = reference_gemm(x, weight.T, cfg)[0]
    expected = (torch.from_numpy(accumulated).float() + bias).numpy()  # bias outside the MAC, in float32
    mismatches = count_mismatches(y, expected.astype(np.float64))
    comparisons("lba_linear", expected.size, mismatches)
    assert y.dtype == torch.float32 and mismatches == 0
    assert torch.equal(lba_linear(x, weight, None, cfg), torch.from_numpy(accumulated).float())


def conv_reference(x, weight, cfg, stride, padding, dilation, groups) -> np.ndarray:
    """Direct convolution: each output's window walked as (c, i, j), j fastest, zeros outside the input."""
    batch, _, height, width = x.shape
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    out_h = (height + 2 * padding - dilation * (kernel_h - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kernel_w - 1) - 1) // stride + 1
    per_group = out_channels // groups
    result = np.zeros((batch, out_channels, out_h, out_w))
    for n in range(batch):
        for o in range(out_channels):
            group = o // per_group
            for oy in range(out_h):
                for ox in range(out_w):
                    window, filt = [], []
                    for c in range(group_channels):
                        for i in range(kernel_h):
                            for j in range(kernel_w):
                                y = oy * stride - padding + i * dilation
                                x_pos = ox * stride - padding + j * dilation
                                inside = 0 <= y < height and 0 <= x_pos < width
                                window.append(float(x[n, group * group_channels + c, y, x_pos]) if inside else 0.0)
                                filt.append(float(weight[o, c, i, j]))
                    result[n, o, oy, ox] = reference_dot(window, filt, cfg)
    return result


@pytest.mark.parametrize(
    "stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 0, 1, 2), (1, 2, 2, 1)], ids=["pad", "stride-groups", "dilation"]
)
def test_lba_conv2d_matches_a_direct_convolution(stride, padding, dilation, groups, comparisons):
    cfg = MacConfig("e4m3", "e4m6", chunk_size=5)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, 5, generator=generator) * 3
    weight = torch.randn(6, 4 // groups, 3, 2, generator=generator) * 3
    bias = torch.randn(6, generator=generator)
    stats = EventStats()
    y = lba_conv2d(x, weight, bias, cfg, stride=stride, padding=padding, dilation=dilation, groups=groups, stats=stats)
    expected = conv_reference(x, weight, cfg, stride, padding, dilation, groups)
    expected = (torch.from_numpy(expected).float() + bias.view(1, -1, 1, 1)).numpy()
    reference_shape = torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups).shape
    mismatches = count_mismatches(y, expected.astype(np.float64))
    comparisons(f"lba_conv2d s{stride} p{padding} d{dilation} g{groups}", expected.size, mismatches)
    assert y.shape == reference_shape and mismatches == 0
    assert stats.steps > 0
    unbatched = lba_conv2d(x[0], weight, bias, cfg, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert torch.equal(unbatched, y[0])


def test_event_statistics_match_the_reference_counts(comparisons):
    cfg = MacConfig("e4m3", "e4m3", chunk_size=4)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(4, 13, generator=generator) * 20
    w = torch.randn(13, 5, generator=generator) * 20
    stats = EventStats()
    lba_matmul(x, w, cfg, stats=stats)
    _, expected = reference_gemm(x, w, cfg)
    comparisons("event counts lba_matmul", 4 * 5, int(stats != expected))
    assert stats == expected and stats.overflow > 0 and stats.swamp > 0
    assert stats.as_dict()["overflow_rate"] == stats.overflow / stats.steps
    merged = EventStats().merge(stats).merge(stats)
    assert merged.steps == 2 * stats.steps
    merged.reset()
    assert merged == EventStats() and merged.rates == {"overflow": 0.0, "underflow": 0.0, "swamp": 0.0}


def test_ste_backward_is_the_gradient_of_the_exact_product_of_quantized_operands():
    cfg = MacConfig("e4m3", "e4m5")
    generator = torch.Generator().manual_seed(6)
    x = (torch.randn(2, 3, 8, generator=generator) * 3).requires_grad_()
    w = (torch.randn(8, 4, generator=generator) * 3).requires_grad_()
    grad_out = torch.randn(2, 3, 4, generator=generator)
    lba_matmul(x, w, cfg).backward(grad_out)
    x_q = quantize(x.detach().double(), cfg.input).requires_grad_()
    w_q = quantize(w.detach().double(), cfg.input).requires_grad_()
    (x_q @ w_q).backward(grad_out.double())
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    assert torch.equal(x.grad, x_q.grad.float()) and torch.equal(w.grad, w_q.grad.float())


def test_ste_backward_passes_torch_gradcheck():
    """gradcheck the backward through a wrapper whose forward is the exact (differentiable) product.

    The accumulator's forward is piecewise constant, so finite differences of it say nothing. The wrapper's
    value is the exact product (its finite differences give the exact Jacobian) while its gradient flows only
    through lba_matmul's backward: the STE must return exactly that Jacobian at representable operands.
    """
    cfg = MacConfig("e5m10", "e8m23")
    x = quantize(torch.randn(3, 4, dtype=torch.float64), cfg.input).requires_grad_()
    w = quantize(torch.randn(4, 2, dtype=torch.float64), cfg.input).requires_grad_()

    def ste_only(a, b):
        lba = lba_matmul(a, b, cfg)
        return lba - lba.detach() + (a @ b).detach()

    assert torch.autograd.gradcheck(ste_only, (x, w), eps=1e-6, atol=1e-6, check_undefined_grad=False)


def test_other_estimators_go_to_gemm_backward(monkeypatch):
    estimators = pytest.importorskip("lba_train.estimators")
    name = next(e for e in estimators.ESTIMATORS if e != "ste")
    calls = []

    def fake_backward(x_q, w_q, grad_out, cfg, estimator):
        calls.append((x_q.shape, w_q.shape, grad_out.shape, cfg, estimator, x_q.dtype))
        return torch.full_like(x_q, 2.0), torch.full_like(w_q, 3.0)

    monkeypatch.setattr(estimators, "gemm_backward", fake_backward)
    cfg = MacConfig("e4m3", "e4m7")
    x = torch.randn(2, 3, 5, requires_grad=True)
    w = torch.randn(5, 4, requires_grad=True)
    lba_matmul(x, w, cfg, estimator=name).sum().backward()
    assert calls == [((6, 5), (5, 4), (6, 4), cfg, name, torch.float64)]
    assert torch.equal(x.grad, torch.full_like(x, 2.0)) and torch.equal(w.grad, torch.full_like(w, 3.0))


def test_bad_input_is_refused_with_a_clear_error():
    cfg = MacConfig("e4m3", "e4m7")
    x, w = torch.randn(2, 3), torch.randn(3, 4)
    with pytest.raises(ValueError, match="unknown gradient estimator"):
        lba_matmul(x, w, cfg, estimator="magic")
    with pytest.raises(ValueError, match="do not chain"):
        lba_matmul(x, torch.randn(4, 4), cfg)
    with pytest.raises(ValueError, match="w must be 2-D"):
        lba_matmul(x, torch.randn(3, 4, 1), cfg)
    with pytest.raises(ValueError, match="NaN"):
        lba_matmul(torch.tensor([[float("nan"), 1.0, 2.0]]), w, cfg)
    with pytest.raises(ConfigError, match="significand bits"):
        lba_matmul(x, w, MacConfig("e8m26", "e8m23"))
    with pytest.raises(TypeError, match="MacConfig"):
        lba_matmul(x, w, "e4m3")
    with pytest.raises(TypeError, match="EventStats"):
        lba_matmul(x, w, cfg, stats={})
    with pytest.raises(ValueError, match=r"\(B, M, K\)"):
        lba_bmm(x, w, cfg)
    with pytest.raises(ValueError, match="bias must have shape"):
        lba_linear(x, torch.randn(4, 3), torch.randn(5), cfg)
    with pytest.raises(ValueError, match="groups"):
        lba_conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 1, 2, 2), None, cfg, groups=2)


def test_infinite_operands_are_refused_and_large_finite_ones_saturate():
    """+-inf is an error naming the operand (issue 27); a finite value beyond the format saturates (R_F)."""
    cfg = MacConfig("e4m3", "e5m10")
    with pytest.raises(ValueError, match="x contains"):
        lba_matmul(torch.tensor([[float("inf"), 1.0]]), torch.tensor([[1.0], [1.0]]), cfg)
    y = lba_matmul(torch.tensor([[1e30, 1.0]]), torch.tensor([[1.0], [1.0]]), cfg)
    assert y.item() == reference_dot([480.0, 1.0], [1.0, 1.0], cfg)


def test_public_names_are_exported():
    for name in ["lba_matmul", "lba_bmm", "lba_linear", "lba_conv2d", "EventStats"]:
        assert name in lba_train.__all__ and hasattr(lba_train, name)
