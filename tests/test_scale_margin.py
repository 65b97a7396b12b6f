"""The "margin" bias mode: per-layer power-of-two operand scaling margins for fixed-bias accumulators."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from lba_core import ConfigError, MacConfig
from lba_train.bias import (
    BIAS_MODES,
    calibrate_scale_margins,
    describe_scale_margins,
    margin_exponent,
    resolve_bias,
    scale_margins,
    set_scale_margins,
)
from lba_train.convert import lbaify, set_lba_config
from lba_train.layers import LBALinear
from lba_train.quantizers import TensorQuantizer


def _e4m3_grid(shape, generator, low=-2, high=8) -> torch.Tensor:
    """Values every e4m3 shift by up to 2^-4 keeps normal: 3-bit significands, exponents in [low, high]."""
    significand = 1 + torch.randint(0, 8, shape, generator=generator).double() / 8
    exponent = torch.randint(low, high, shape, generator=generator).double()
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0).double()
    return sign * significand * 2.0**exponent


def test_margin_is_a_mode():
    assert "margin" in BIAS_MODES


def test_quantizer_margin_shifts_scaled_values_exactly():
    generator = torch.Generator().manual_seed(1)
    x = _e4m3_grid((64,), generator)
    quantizer = TensorQuantizer("e4m3")
    plain, plain_scale = quantizer(x)
    quantizer.margin = 3
    shifted, shifted_scale = quantizer(x)
    assert torch.equal(shifted_scale, plain_scale * 8)
    assert torch.equal(shifted * 8, plain)  # every value still normal: the shift is exact
    assert torch.equal(shifted * shifted_scale, plain * plain_scale)
    assert "margin 2^-3" in repr(quantizer)


@pytest.mark.parametrize("acc", ["fp32", "bf16"])
@pytest.mark.parametrize("exact", [True, False])
def test_layer_output_is_unchanged_by_a_margin_without_underflow(acc, exact):
    """The margin is undone exactly by the rescale: the same output bits when no operand underflows and no
    partial sum leaves the accumulator's range (fp32, bf16: scaling by 2^-7 keeps every sum in range)."""
    generator = torch.Generator().manual_seed(2)
    linear = nn.Linear(16, 8, bias=False)
    with torch.no_grad():
        linear.weight.copy_(_e4m3_grid((8, 16), generator, -2, 5).float())
    layer = LBALinear.from_float(linear, MacConfig("e4m3", acc))
    layer.exact_accumulation = exact
    x = _e4m3_grid((5, 16), generator, -2, 5).float()
    with torch.no_grad():
        plain = layer(x)
        set_scale_margins(nn.Sequential(layer), {"0": 7})
        assert (layer.input_quantizer.margin, layer.weight_quantizer.margin) == (4, 3)
        shifted = layer(x)  # the cached quantized weight is recomputed for the new margin
    assert torch.equal(plain, shifted)


def test_margin_rule_uses_the_bias_calibration_headroom():
    fp16 = MacConfig("e4m3", "fp16")  # max 131008 here: top binade 16
    assert margin_exponent(fp16, Counter({20: 1000, 3: 5})) == 4
    assert margin_exponent(fp16, Counter({16: 10})) == 0
    assert margin_exponent(fp16, Counter({2: 10})) == 0  # never a negative margin
    # one value in 100 001 above binade 10 is within the 1e-4 allowance: binade 10 decides
    assert margin_exponent(fp16, Counter({30: 1, 10: 100_000})) == 0
    assert margin_exponent(fp16, Counter({30: 11, 10: 100_000})) == 14
    assert margin_exponent(fp16, Counter()) == 0


def _mlp_and_data(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(), nn.Linear(48, 10))
    batches = [torch.randn(32, 64) * 3 for _ in range(2)]
    test = torch.randn(128, 64) * 3
    return model, batches, test


def test_resolve_bias_margin_sets_margins_and_keeps_the_bias():
    model, batches, _ = _mlp_and_data()
    cfg = MacConfig("e4m3", "fp16")
    lba = lbaify(model, cfg)
    assert resolve_bias(cfg, "margin", lba, batches) == cfg
    margins = scale_margins(lba)
    assert list(margins) == ["0", "2", "4", "lba_products"]  # the interceptor computes no product here
    assert all(margins[name] > 0 for name in ("0", "2", "4")) and margins["lba_products"] == 0
    assert describe_scale_margins(margins) == "/".join(str(margins[name]) for name in ("0", "2", "4")) + "/0"
    # recalibrating does not see the margins already set
    assert calibrate_scale_margins(lba, cfg, batches) == margins
    with pytest.raises(ConfigError, match="batches"):
        resolve_bias(cfg, "margin", lba)
    with pytest.raises(ConfigError, match="whole number"):
        set_scale_margins(lba, {"0": -1})
    with pytest.raises(ConfigError, match="does not have"):
        set_scale_margins(lba, {"nope": 1})
    assert describe_scale_margins({"a": 0, "b": 0}) == "0"
    wide = lbaify(model, MacConfig("e4m3", "fp32"))  # K * 448^2 is far below fp32's top: nothing to observe
    resolve_bias(MacConfig("e4m3", "fp32"), "margin", wide, batches)
    assert describe_scale_margins(scale_margins(wide)) == "0"


def test_calibrated_margin_fp16_matches_e5m10_with_a_calibrated_bias():
    """Consistency: a margin on fp16 and a calibrated bias on e5m10 both move the partial sums' top binade
    to the accumulator's top; their outputs agree closely, while fp16 with the naive scaling saturates."""
    model, batches, test = _mlp_and_data()
    reference = lbaify(model, MacConfig("e4m3", "fp32"))
    margin = lbaify(model, MacConfig("e4m3", "fp16"))
    resolve_bias(MacConfig("e4m3", "fp16"), "margin", margin, batches)
    biased = lbaify(model, MacConfig("e4m3", "e5m10"))
    calibrated = resolve_bias(MacConfig("e4m3", "e5m10"), "calibrate", biased, batches)
    set_lba_config(biased, calibrated)
    assert calibrated.acc.bias == 12 and set(scale_margins(margin).values()) == {0, 3}
    naive = lbaify(model, MacConfig("e4m3", "fp16"))
    with torch.no_grad():
        outputs = {name: net(test) for name, net in
                   (("fp32", reference), ("margin", margin), ("biased", biased), ("naive", naive))}

    def error(name):
        return ((outputs[name] - outputs["fp32"]).norm() / outputs["fp32"].norm()).item()

    # measured: every layer gets m = 3 and e5m10 the bias 15 - 3 = 12, and the outputs are the same bits
    # (relative error to fp32 0.0198 for both, 127/128 argmax agreement; the naive fp16: 0.91, 91/128)
    assert torch.equal(outputs["margin"], outputs["biased"])
    assert error("margin") < 0.05
    assert error("naive") > 10 * error("margin")  # the naive scaling does saturate fp16 here
