"""Per-call overhead of the GEMM functions: the plan is derived once per call, a grouped or depthwise
convolution is one kernel call, and its values equal the per-group products (docs/simulator.md)."""

from __future__ import annotations

import copy

import torch

import lba_train.gemm
from lba_core import MacConfig
from lba_train import lba_conv2d, lba_linear, lba_matmul
from lba_train.events import EventStats
from lba_train.gemm import conv2d_gemm_operands
from lba_train.kernels import dispatch, plan


def counting(monkeypatch, module, name: str) -> list:
    calls = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_the_plan_and_the_datapath_are_derived_once_per_configuration(monkeypatch):
    """The first call with a configuration derives its plan and datapath once; later calls with an equal
    configuration (any GEMM function) reuse the memoized plan; a refused configuration is refused every time."""
    import pytest

    from lba_core import ConfigError

    dispatch.check_config.cache_clear()
    x, w = torch.randn(3, 40), torch.randn(40, 5)
    plans = counting(monkeypatch, dispatch, "plan_gemm")
    datapaths = counting(monkeypatch, plan, "derive_datapath")
    fixed_plans = counting(monkeypatch, dispatch.int_gemm, "plan_fixed_gemm")
    fixed_datapaths = counting(monkeypatch, dispatch.int_gemm, "derive_fixed_datapath")
    for cfg in [MacConfig("e4m3", "e4m7"), MacConfig("e4m3", "fp32", chunk_size=8)]:
        plans.clear(), datapaths.clear()
        lba_matmul(x, w, cfg)
        assert len(plans) == 1 and len(datapaths) == 1, cfg.name
        plans.clear(), datapaths.clear()
        lba_linear(x, w.T, torch.zeros(5), cfg, stats=EventStats())
        lba_matmul(x, w, MacConfig(cfg.input, cfg.acc, chunk_size=cfg.chunk_size))  # equal, not the same object
        assert len(plans) == 0 and len(datapaths) == 0, cfg.name
    lba_matmul(x, w, MacConfig("int8", "int24"))
    lba_matmul(x, w, MacConfig("int8", "int24"))
    assert len(fixed_plans) == 1 and len(fixed_datapaths) == 1
    for _ in range(2):
        with pytest.raises(ConfigError, match="significand bits"):
            lba_matmul(x, w, MacConfig("e8m26", "e8m23"))


def test_the_fixed_point_datapath_is_one_derivation_for_the_circuit_and_the_kernel():
    """rtl.check_fixed_config returns lba_core's FixedDatapathPlan; int_gemm's shifts come from the same grid."""
    import rtl
    from lba_core import derive_fixed_datapath
    from lba_train.kernels.int_gemm import plan_fixed_gemm

    for cfg in [MacConfig("int8", "int24"), MacConfig("e4m3", "fx20.8_sat"), MacConfig("e4m3", "fx24.20")]:
        path = derive_fixed_datapath(cfg)
        assert rtl.check_fixed_config(cfg) == path
        kernel = plan_fixed_gemm(cfg)
        assert (kernel.a_shift, kernel.b_shift) == (-path.a_grid[0], cfg.acc.frac_bits + path.a_grid[0])
        assert kernel.grid_exact == (path.grid_shift >= 0)


def test_a_depthwise_and_a_grouped_convolution_are_one_kernel_call(monkeypatch):
    cfg = MacConfig("e4m3", "e5m6", chunk_size=4)
    generator = torch.Generator().manual_seed(4)
    calls = counting(monkeypatch, lba_train.gemm, "batched_gemm_values")
    for channels, out_channels, groups, stride, padding in [(6, 6, 6, 1, 1), (8, 12, 4, 2, 0), (3, 4, 1, 1, 2)]:
        x = torch.randn(2, channels, 7, 6, generator=generator) * 3
        weight = torch.randn(out_channels, channels // groups, 3, 3, generator=generator)
        calls.clear()
        stats = EventStats()
        together = lba_conv2d(x, weight, None, cfg, stride, padding, groups=groups, stats=stats)
        assert len(calls) == 1
        # The same outputs, group by group, as separate products (the previous lowering).
        loop_stats = EventStats()
        parts = [lba_matmul(patches, filters, cfg, stats=loop_stats)
                 for patches, filters in conv2d_gemm_operands(x, weight, (stride, stride), (padding, padding),
                                                              (1, 1), groups)]
        expected = torch.cat(parts, dim=2).transpose(1, 2).reshape(together.shape)
        assert torch.equal(together, expected)
        assert stats == loop_stats


def test_frozen_weights_are_quantized_once_and_requantized_when_they_change(monkeypatch):
    """The layer's weight quantization is cached for frozen weights, keyed on the tensor's _version: in-place
    updates, load_state_dict and a fine-tuning step (requires_grad: never cached) all see the new weight."""
    from lba_train.layers import LBALinear

    cfg = MacConfig("e4m3", "e4m7")
    torch.manual_seed(0)
    layer = LBALinear(24, 6, cfg=cfg)
    x = torch.randn(5, 24)
    calls = counting(monkeypatch, layer.weight_quantizer, "forward")

    def fresh():  # the same layer, its weight quantized anew (its quantizer calls are not counted)
        counted = len(calls)
        other = copy.deepcopy(layer)
        other._weight_cache = None
        with torch.no_grad():
            y = other(x)
        del calls[counted:]
        return y

    layer.weight.requires_grad_(False)
    first = layer(x)
    assert torch.equal(layer(x), first) and len(calls) == 1  # cached
    with torch.no_grad():
        layer.weight.mul_(0.5)  # in place: _version bumps
    assert torch.equal(layer(x), fresh()) and len(calls) == 2
    layer.load_state_dict({"weight": torch.randn(6, 24), "bias": layer.bias.detach().clone()})
    assert torch.equal(layer(x), fresh()) and len(calls) == 3
    layer.weight_quantizer.freeze(torch.tensor(1.0))  # a calibrated range: new quantizer state
    assert torch.equal(layer(x), fresh()) and len(calls) == 4
    # Fine-tuning: the weight wants a gradient, so it is quantized with its graph every time.
    layer.weight.requires_grad_(True)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer(x)
    before.sum().backward()
    assert layer.weight.grad is not None and len(calls) == 5
    optimizer.step()
    after = layer(x)
    assert not torch.equal(after, before) and len(calls) == 6
    with torch.no_grad():  # evaluation during fine-tuning: cached from the updated weight, then reused
        assert torch.equal(layer(x), after) and torch.equal(layer(x), after) and len(calls) == 7


def test_narrow_tiles_of_a_batch_match_the_reference(comparisons):
    """Batches of products with <= 32 columns run on 32-column tiles: values and events vs lba_core.dot."""
    import numpy as np
    from support.gemm import batched_operands, reference_gemm

    from lba_train.kernels import numba_binary32
    from lba_train.kernels.dispatch import batched_gemm_values

    rng = np.random.default_rng(32)
    mismatches = compared = 0
    for cfg, columns in [(MacConfig("e4m3", "e4m7"), 20), (MacConfig("e4m3", "e5m10", chunk_size=4), 32),
                         (MacConfig("e4m3", "fp32"), 7)]:
        assert numba_binary32.tile_width(3, columns, False) == 32 and numba_binary32.tile_width(1, columns, False) == 64
        assert numba_binary32.tile_width(1, columns, True) == 32  # counting tiles are always 32 wide
        x, w = batched_operands(cfg, 3, 4, 13, columns, "codes", rng)
        stats, expected_stats = EventStats(), EventStats()
        got = batched_gemm_values(x, w, cfg, stats=stats).double().numpy()
        uncounted = batched_gemm_values(x, w, cfg).double().numpy()
        mismatches += int(np.sum(uncounted != got))
        for b in range(3):
            expected, entry_stats = reference_gemm(x[b], w[b], cfg)
            mismatches += int(np.sum(got[b] != expected))
            expected_stats.merge(entry_stats)
            compared += expected.size
        mismatches += stats != expected_stats
    comparisons("32-column tiles (batches of narrow products) vs lba_core.dot", compared, mismatches)
    assert mismatches == 0


def test_all_finite_finds_every_nan_and_inf():
    """The operand check's one compiled pass (CPU float32/float64) and PyTorch's (other dtypes) agree."""
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        x = torch.randn(37, 53).to(dtype)
        assert dispatch.all_finite(x) and dispatch.all_finite(x.T) and dispatch.all_finite(x[:0])
        for bad in (float("nan"), float("inf"), float("-inf")):
            for index in ((0, 0), (36, 52), (17, 3)):
                y = x.clone()
                y[index] = bad
                assert not dispatch.all_finite(y) and not dispatch.all_finite(y.T)
                assert not dispatch.all_finite(y.requires_grad_(dtype != torch.float16))
    assert dispatch.all_finite(torch.tensor(torch.finfo(torch.float32).max))
