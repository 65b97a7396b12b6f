"""LBA layers, operand quantizers and lbaify, checked against the exact reference (lba_train.reference_dot)."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lba_core import ConfigError, FloatFormat, MacConfig
from lba_train import lba_matmul, quantize, reference_dot
from lba_train.convert import event_stats_table, lba_layers, lbaify, set_collect_stats, set_lba_config
from lba_train.layers import LayerOptions, LBAConv2d, LBALinear, LBAMatMul, MatMul
from lba_train.quantize import binary32_quantizer_holds
from lba_train.quantizers import TensorQuantizer, max_abs_scale, round_ste

# A narrow accumulator biased for max-abs-scaled e4m3 operands, so that every event type occurs.
CFG = MacConfig("e4m3", FloatFormat(4, 3, bias=-6), chunk_size=4)
CFG_FULL = MacConfig("e4m3", FloatFormat(5, 6, bias=0))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ quantizers
def test_quantizer_is_r_f_of_the_scaled_tensor(comparisons):
    x = torch.randn(7, 9, dtype=torch.float64, generator=_generator(1)) * 3
    quantizer = TensorQuantizer("e4m3")
    q, scale = quantizer(x)
    fmt = FloatFormat.parse("e4m3")
    assert float(scale) == float(x.abs().max()) / float(fmt.max_value)
    expected = quantize(x / scale, fmt)
    assert float(q.abs().max()) == float(fmt.max_value)  # max|x| maps onto the format's max
    comparisons("TensorQuantizer vs quantize(x / s)", x.numel(), int((q != expected).sum()))
    assert torch.equal(q, expected)


def test_per_channel_and_power_of_two_scales():
    weight = torch.randn(4, 3, 2, 2, dtype=torch.float64, generator=_generator(2))
    weight[2] = 0
    quantizer = TensorQuantizer("e4m3", per_channel=True, power_of_two=True)
    q, scale = quantizer(weight)
    assert scale.shape == (4, 1, 1, 1)
    fmt_max = 480.0
    for channel in range(4):
        s = float(scale[channel])
        mantissa, _ = torch.frexp(torch.tensor(s, dtype=torch.float64))
        assert float(mantissa) == 0.5, "a power-of-two scale"
        amax = float(weight[channel].abs().max())
        if amax == 0:
            assert s == 1.0
        else:
            assert amax / s <= fmt_max < 2 * amax / s  # the smallest power of two that avoids saturation
    assert torch.equal(q, quantize(weight / scale, "e4m3"))


def test_max_abs_scale_of_zero_is_one():
    assert float(max_abs_scale(torch.tensor(0.0), FloatFormat.parse("e4m3"))) == 1.0


def test_ste_passes_gradient_inside_and_clips_saturated_values():
    quantizer = TensorQuantizer("e4m3")
    quantizer.freeze(torch.tensor(1.0))  # range [-1, 1] -> [-480, 480]; values beyond saturate
    x = torch.tensor([0.5, -0.25, 2.0, -3.0, 1.0], dtype=torch.float64, requires_grad=True)
    q, scale = quantizer(x)
    assert q.tolist()[2:4] == [480.0, -480.0]
    q.sum().backward()
    assert x.grad.tolist() == [1 / float(scale)] * 2 + [0.0, 0.0] + [1 / float(scale)]


def test_quantizer_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        TensorQuantizer("e4m3")(torch.tensor([1.0, float("nan")]))


@pytest.mark.parametrize("name", ["e4m3", "e5m2", "e4m3_sub", "e3m8_b-11", "e8m7"])
def test_float32_quantizer_pass_is_the_float64_rounding(name, comparisons):
    """float32 activations take one compiled pass: the same values (float32), mask and scale as the float64
    path, on the format's boundaries (ties, min_normal, the subnormal range, max, beyond max, +-Inf, -0)."""
    fmt = FloatFormat.parse(name)
    quantum = 2.0 ** (fmt.emin - fmt.man_bits)
    edges = [0.0, -0.0, quantum / 2, quantum * 1.5, float(fmt.min_normal) * (1 - 2.0**-9), float(fmt.min_normal),
             float(fmt.max_value), float(fmt.max_value) * 1.01, 1 + 2.0 ** -(fmt.man_bits + 1), float("inf")]
    boundary = torch.tensor(edges + [-v for v in edges], dtype=torch.float32)
    scaled = torch.cat([boundary, torch.randn(4096, generator=_generator(3)) * float(fmt.max_value) / 4])
    for tensor in (scaled, scaled.detach().requires_grad_()):
        fast = round_ste(tensor, fmt)
        wide = tensor.detach().to(torch.float64).requires_grad_(tensor.requires_grad)
        reference = round_ste(wide, fmt)
        # e8m7 reaches 2^128: not a binary32 format, so it takes (and is compared with) the float64 path.
        assert fast.dtype == (torch.float32 if binary32_quantizer_holds(fmt) else torch.float64)
        comparisons(f"round_ste float32 pass vs float64 ({name})", fast.numel(),
                    int((fast.detach().to(torch.float64) != reference.detach()).sum()))
        assert torch.equal(fast.detach().to(torch.float64), reference.detach())
        assert not torch.signbit(fast.detach()[fast.detach() == 0]).any()  # +0, never -0
        if tensor.requires_grad:
            fast.sum().backward()
            reference.sum().backward()
            assert torch.equal(tensor.grad.to(torch.float64), wide.grad)
    with pytest.raises(ValueError, match=f"cannot quantize NaN into {fmt.name}"):
        round_ste(torch.tensor([1.0, float("nan")]), fmt)


def test_per_tensor_range_of_an_all_negative_tensor():
    x = -torch.rand(5, 7, generator=_generator(4)) - 1
    assert float(TensorQuantizer("e4m3").observed_amax(x)) == float(x.abs().max())
    assert float(TensorQuantizer("e4m3").observed_amax(torch.zeros(0))) == 0.0


# ------------------------------------------------------------------------------------------------ layers
def _reference_matrix(a_rows: torch.Tensor, b_cols: torch.Tensor, cfg: MacConfig) -> torch.Tensor:
    """(M, K) @ (K, N) by the exact reference, one dot product at a time."""
    out = torch.empty(a_rows.shape[0], b_cols.shape[1], dtype=torch.float64)
    for i in range(a_rows.shape[0]):
        for j in range(b_cols.shape[1]):
            out[i, j] = reference_dot(a_rows[i], b_cols[:, j], cfg)
    return out


@pytest.mark.parametrize("cfg", [CFG, CFG_FULL], ids=lambda c: c.name)
@pytest.mark.parametrize("per_channel", [False, True])
def test_lba_linear_matches_reference(cfg, per_channel, comparisons):
    torch.manual_seed(3)
    dense = nn.Linear(11, 5).double()
    layer = LBALinear.from_float(dense, cfg, LayerOptions(per_channel_weights=per_channel))
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    y = layer(x)
    a, a_scale = layer.input_quantizer(x)
    b, b_scale = layer.weight_quantizer(layer.weight)
    macs = _reference_matrix(a.reshape(-1, 11).detach(), b.detach().t(), cfg).reshape(2, 3, 5)
    expected = macs * (a_scale * b_scale.reshape(-1)) + dense.bias.detach()
    mismatches = int((y.detach() != expected).sum())
    comparisons(f"LBALinear {cfg.name} per_channel={per_channel}", y.numel(), mismatches)
    assert mismatches == 0
    assert layer.stats.steps == 6 * 5 * (11 + 3) if cfg.chunk_size == 4 else layer.stats.steps == 6 * 5 * 11


@pytest.mark.parametrize("groups,stride,padding", [(1, 1, 1), (2, 2, 0), (1, 1, "same")])
def test_lba_conv2d_matches_reference(groups, stride, padding, comparisons):
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, groups=groups).double()
    layer = LBAConv2d.from_float(conv, CFG)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    y = layer(x).detach()
    a, a_scale = layer.input_quantizer(x)
    b, b_scale = layer.weight_quantizer(layer.weight)
    pad = 1 if padding == "same" else padding
    cols = F.unfold(a.detach(), 3, padding=pad, stride=stride)  # (N, C*9, L), K ordered (C, kh, kw)
    per_group_k, per_group_n = 4 // groups * 9, 6 // groups
    expected = torch.empty_like(y)
    for g in range(groups):
        rows = cols[:, g * per_group_k: (g + 1) * per_group_k].transpose(1, 2).reshape(-1, per_group_k)
        filters = b.detach()[g * per_group_n: (g + 1) * per_group_n].reshape(per_group_n, -1).t()
        macs = _reference_matrix(rows, filters, CFG).reshape(2, -1, per_group_n).transpose(1, 2)
        expected[:, g * per_group_n: (g + 1) * per_group_n] = macs.reshape(2, per_group_n, *y.shape[2:])
    expected = expected * (a_scale * b_scale) + conv.bias.detach().reshape(1, -1, 1, 1)
    mismatches = int((y != expected).sum())
    comparisons(f"LBAConv2d groups={groups} stride={stride} padding={padding}", y.numel(), mismatches)
    assert mismatches == 0


def test_lba_matmul_broadcasts_and_matches_reference(comparisons):
    torch.manual_seed(5)
    layer = LBAMatMul.from_float(MatMul(), CFG)
    a = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    b = torch.randn(3, 6, 5, dtype=torch.float64)
    y = layer(a, b).detach()
    assert y.shape == (2, 3, 4, 5)
    qa, a_scale = layer.input_quantizer(a)
    qb, b_scale = layer.weight_quantizer(b)
    mismatches = compared = 0
    for i in range(2):
        for h in range(3):
            expected = _reference_matrix(qa[i, h].detach(), qb[h].detach(), CFG) * (a_scale * b_scale)
            mismatches += int((y[i, h] != expected).sum())
            compared += expected.numel()
    comparisons("LBAMatMul (broadcast batch)", compared, mismatches)
    assert mismatches == 0


def test_ste_gradient_of_linear_is_the_float_gradient_of_the_quantized_operands():
    torch.manual_seed(6)
    layer = LBALinear.from_float(nn.Linear(8, 3, bias=False).double(), CFG_FULL)
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 3, dtype=torch.float64)
    (layer(x) * upstream).sum().backward()
    b, b_scale = layer.weight_quantizer(layer.weight)
    a, a_scale = layer.input_quantizer(x)
    # y = s_a s_b (A B^T), dA/dx = 1/s_a (no value saturates under max-abs scaling). The GEMM hands the
    # gradient through its float32 output, hence float32 tolerance.
    assert torch.allclose(x.grad, b_scale * upstream @ b.detach(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(layer.weight.grad, a_scale * upstream.t() @ a.detach(), rtol=1e-5, atol=1e-7)


def test_set_config_and_underflow_switch_take_effect(comparisons):
    torch.manual_seed(7)
    # An accumulator whose smallest normal is large: many partial sums flush to zero when underflow is on.
    cfg = MacConfig("e4m3", FloatFormat(3, 4, bias=-12))
    layer = LBALinear.from_float(nn.Linear(16, 4, bias=False).double(), cfg)
    x = torch.randn(8, 16, dtype=torch.float64)
    a, a_scale = layer.input_quantizer(x)
    b, b_scale = layer.weight_quantizer(layer.weight)
    outputs = {}
    for underflow in (True, False):
        layer.set_underflow(underflow)
        assert layer.cfg.underflow is underflow
        expected = _reference_matrix(a.detach(), b.detach().t(), cfg.replace(underflow=underflow))
        expected = expected * (a_scale * b_scale)
        outputs[underflow] = layer(x).detach()
        comparisons(f"LBALinear underflow={underflow}", expected.numel(), int((outputs[underflow] != expected).sum()))
        assert torch.equal(outputs[underflow], expected)
    assert not torch.equal(outputs[True], outputs[False])
    layer.set_config(CFG_FULL)
    assert layer.cfg == CFG_FULL and "e5m6_b0" in repr(layer)


def test_layer_options_and_errors():
    dense = nn.Linear(4, 2)
    layer = LBALinear.from_float(dense, CFG, LayerOptions(collect_stats=False, estimator="ste"))
    assert layer.stats is None
    layer(torch.randn(3, 4))
    layer.set_collect_stats(True)
    layer(torch.randn(3, 4))
    assert layer.stats.steps == 3 * 2 * (4 + 1)
    assert "cfg=e4m3xe4m3-e4m3_b-6-rne-c4" in repr(layer) and "stats=on" in repr(layer)
    assert torch.equal(layer.weight, dense.weight) and layer.weight is not dense.weight
    with pytest.raises(ConfigError, match="MacConfig"):
        LBALinear.from_float(dense, "e4m3")
    with pytest.raises(ConfigError, match="estimator"):
        LBALinear.from_float(dense, CFG, LayerOptions(estimator="magic"))
    with pytest.raises(TypeError, match="nn.Linear"):
        LBALinear.from_float(nn.Conv2d(1, 1, 1), CFG)
    with pytest.raises(ConfigError, match="padding_mode"):
        LBAConv2d.from_float(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), CFG)


def test_exact_accumulation_is_the_float_product_of_quantized_operands():
    torch.manual_seed(8)
    layer = LBALinear.from_float(nn.Linear(6, 3).double(), CFG)
    layer.exact_accumulation = True
    x = torch.randn(5, 6, dtype=torch.float64)
    a, a_scale = layer.input_quantizer(x)
    b, b_scale = layer.weight_quantizer(layer.weight)
    expected = (a @ b.t()) * (a_scale * b_scale) + layer.bias
    assert torch.allclose(layer(x), expected, rtol=1e-14, atol=0)


# ------------------------------------------------------------------------------------------------ lbaify
class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.scores = MatMul()

    def forward(self, x):
        y = self.conv(x).flatten(2)
        return self.scores(y, y.transpose(1, 2)).flatten(1)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(1, 2, 3, padding=1)
        self.body = nn.Sequential(_Block(), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.body(self.first(x)))


def _kinds(model):
    return {name: type(module).__name__ for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d, MatMul, LBAMatMul))}


def test_lbaify_converts_nested_modules_in_a_copy():
    model = _Net()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    converted = lbaify(model, CFG)
    assert converted is not model
    assert _kinds(converted) == {
        "first": "LBAConv2d", "body.0.conv": "LBAConv2d", "body.0.scores": "LBAMatMul",
        "head.0": "LBALinear", "head.1": "LBALinear",
    }
    assert set(_kinds(model).values()) == {"Conv2d", "MatMul", "Linear"}
    for name, p in converted.named_parameters():
        assert torch.equal(p, before[name])
    assert converted(torch.randn(2, 1, 2, 2)).shape == (2, 3)


def test_lbaify_skip_rules_and_keep_first_last():
    model = _Net()
    by_name = _kinds(lbaify(model, CFG, skip="head.1"))
    assert by_name["head.1"] == "Linear" and by_name["head.0"] == "LBALinear"
    by_container = _kinds(lbaify(model, CFG, skip=["body"]))
    assert by_container["body.0.conv"] == "Conv2d" and by_container["body.0.scores"] == "MatMul"
    by_type = _kinds(lbaify(model, CFG, skip=nn.Linear))
    assert by_type["head.0"] == "Linear" and by_type["first"] == "LBAConv2d"
    by_predicate = _kinds(lbaify(model, CFG, skip=lambda name, module: name.startswith("head")))
    assert by_predicate["head.0"] == "Linear" and by_predicate["body.0.conv"] == "LBAConv2d"
    first_last = _kinds(lbaify(model, CFG, keep_first_last=True))
    assert first_last["first"] == "Conv2d" and first_last["head.1"] == "Linear"
    assert first_last["head.0"] == "LBALinear" and first_last["body.0.scores"] == "LBAMatMul"
    assert lbaify(model, CFG, inplace=True) is model and _kinds(model)["first"] == "LBAConv2d"
    with pytest.raises(ConfigError, match="skip"):
        lbaify(_Net(), CFG, skip=[3])
    with pytest.raises(ConfigError, match="MacConfig"):
        lbaify(_Net(), "e4m3")


def test_lbaify_layer_options_and_no_loose_keywords():
    options = LayerOptions(estimator="immediate-diff", collect_stats=False, per_channel_weights=True)
    converted = lbaify(_Net(), CFG, options)
    for _, layer in lba_layers(converted):
        assert layer.estimator == "immediate-diff" and layer.stats is None
    assert converted.first.weight_quantizer.per_channel
    # The loose keywords and the positional skip of earlier releases were dropped (no compatibility shims).
    with pytest.raises(TypeError):
        lbaify(_Net(), CFG, estimator="immediate-diff")
    with pytest.raises(TypeError, match="LayerOptions"):
        lbaify(_Net(), CFG, "head.1")
    assert _kinds(lbaify(_Net(), CFG, skip="head.1"))["head.1"] == "Linear"
    with pytest.raises(TypeError):
        LBALinear.from_float(nn.Linear(3, 2), CFG, collect_stats=False)
    assert LBALinear.from_float(nn.Linear(3, 2), CFG, LayerOptions(collect_stats=False)).stats is None
    with pytest.raises(ConfigError, match="LayerOptions.estimator: unknown gradient estimator 'magic'"):
        LayerOptions(estimator="magic")
    with pytest.raises(ConfigError, match="LayerOptions.collect_stats"):
        LayerOptions(collect_stats="yes")
    with pytest.raises(TypeError, match="estimator"):
        lbaify(_Net(), CFG, LayerOptions(), estimator="ste")


def test_one_estimator_check_everywhere():
    """The GEMM, the layers, lbaify's options and set_lba_config reject an unknown name alike."""
    x, w = torch.randn(2, 3), torch.randn(3, 2)
    for call in (lambda: lba_matmul(x, w, CFG, estimator="magic"),
                 lambda: LBALinear(3, 2, cfg=CFG, estimator="magic"),
                 lambda: LayerOptions(estimator="magic"),
                 lambda: set_lba_config(lbaify(_Net(), CFG), estimator="magic")):
        with pytest.raises(ConfigError, match="unknown gradient estimator 'magic'; choose one of ste, "):
            call()


def test_lbaify_converts_multihead_attention_only_with_interception():
    model = nn.Sequential(nn.Linear(4, 4), nn.MultiheadAttention(4, 2))
    converted = lbaify(model, CFG)
    assert type(converted[1]).__name__ == "UnfusedMultiheadAttention" and type(converted[1].out_proj) is LBALinear
    with pytest.warns(UserWarning, match="MultiheadAttention"):
        kept = lbaify(model, CFG, intercept=False)
    assert type(kept[0]) is LBALinear and type(kept[1]) is nn.MultiheadAttention
    assert type(kept[1].out_proj) is not LBALinear and kept.lba_coverage.kept_float == {"1": "MultiheadAttention"}


def test_helpers_reconfigure_and_report_events():
    model = lbaify(_Net(), CFG)
    assert set_lba_config(model, underflow=False) == 6  # five layers and the torch-function products
    assert all(not layer.cfg.underflow for _, layer in lba_layers(model))
    set_lba_config(model, CFG_FULL, estimator="ste")
    assert all(layer.cfg == CFG_FULL for _, layer in lba_layers(model))
    set_collect_stats(model, True)
    model(torch.randn(2, 1, 2, 2))
    rows = event_stats_table(model)
    assert [row["layer"] for row in rows] == ["first", "body.0.conv", "body.0.scores", "head.0", "head.1",
                                              "lba_products"]
    assert rows[3]["steps"] == 2 * 8 * 4 and set(rows[3]) >= {"overflow_rate", "underflow_rate", "swamp_rate"}
    set_collect_stats(model, False)
    assert "steps" not in event_stats_table(model)[0]
