"""Integer PTQ (per-channel weights, calibrated frozen activation ranges) and the A2Q overflow bound."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lba_core import ConfigError, MacConfig
from lba_train import EventStats, FinetuneOptions, finetune, lbaify
from lba_train.ptq import a2q_l1_bound, apply_a2q, integer_ptq


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))


def test_integer_ptq_freezes_the_calibrated_maxima_and_scales_weights_per_channel(one_torch_thread):
    cfg = MacConfig("int8", "int32")
    model = lbaify(small_model(), cfg)
    batches = [torch.randn(8, 20) * (i + 1) for i in range(3)]
    integer_ptq(model, cfg, batches)
    first, second = model[0], model[2]
    assert torch.equal(first.input_quantizer.amax, torch.cat(batches).abs().max().to(torch.float64))
    hidden = torch.relu(first(torch.cat(batches)))  # frozen ranges: the same forward as calibration saw
    assert second.input_quantizer.frozen and first.weight_quantizer.per_channel
    assert torch.isclose(second.input_quantizer.amax, hidden.abs().max().to(torch.float64), rtol=1e-2)


def test_integer_ptq_leaves_floating_point_operands_alone():
    cfg = MacConfig("e4m3", "fx48.18")
    model = lbaify(small_model(), cfg)
    integer_ptq(model, cfg, [torch.randn(4, 20)])
    assert not model[0].input_quantizer.frozen and not model[0].weight_quantizer.per_channel


@pytest.mark.parametrize("acc,bound", [("int16_sat", 255), ("int16", 255), ("int20", 4095), ("int32", 16777215)])
def test_a2q_bound(acc, bound):
    assert a2q_l1_bound(MacConfig("int8", acc)) == bound
    assert a2q_l1_bound(MacConfig("int4", acc, weight="int8")) == (2 ** (int(acc[3:5]) - 1) - 1) // 8


def test_a2q_needs_integer_operands_and_accumulator():
    with pytest.raises(ConfigError, match="A2Q"):
        a2q_l1_bound(MacConfig("e4m3", "int16_sat"))
    with pytest.raises(ConfigError, match="A2Q"):
        a2q_l1_bound(MacConfig("int8", "fx24.4"))


def test_a2q_weights_never_overflow_even_on_worst_case_activations(one_torch_thread):
    """Every channel's integer weights within the bound; activations at +-128 (signs matching the weights')
    drive each partial sum to its largest magnitude, and the 16-bit accumulator still never overflows."""
    cfg = MacConfig("int8", "int16_sat")
    model = lbaify(small_model(1), cfg)
    bound = apply_a2q(model, cfg)
    layer = model[0]
    with torch.no_grad():
        layer.weight.mul_(50)  # far beyond what the bound allows
    w_int, _ = layer.weight_quantizer(layer.weight)
    assert w_int.abs().sum(dim=1).max() <= bound
    worst = torch.where(w_int < 0, -128.0, 127.0).to(torch.float64)  # (N, K): one worst-case input per output
    stats = EventStats()
    from lba_train import lba_matmul

    values = lba_matmul(worst, w_int.T.to(torch.float64), cfg, stats=stats)
    assert stats.overflow == 0 and stats.steps > 0
    assert values.abs().max() <= 128 * bound


def test_finetune_runs_integer_ptq_and_a2q(one_torch_thread):
    torch.manual_seed(0)
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    result = finetune(small_model(), loader, loader, MacConfig("int8", "int16_sat"),
                      options=FinetuneOptions(epochs=(0, 1), a2q=True, calibration_batches=2))
    layer = result.model[0]
    assert layer.input_quantizer.frozen and layer.weight_quantizer.l1_bound == 255
    assert sum(row.get("overflow", 0) for row in result.events) == 0
    assert result.cfg.acc.name == "int16_sat"
