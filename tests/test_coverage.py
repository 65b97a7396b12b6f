"""Coverage that cannot lie: MACs counted by the aten operations that run (fused RNN kernels, _trilinear, SDPA,
addbmm, convolutions, forward and backward), per module; lbaify names every module whose forward MACs stay in
float with its share, and strict=True raises instead."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lba_core import ConfigError, MacConfig
from lba_train import lbaify
from lba_train.coverage import MacCounter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = MacConfig("fp16", "fp32")


class _Fused(nn.Module):
    """Products torch runs in fused or less common aten operators."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4)
        self.bilinear = nn.Bilinear(3, 4, 2)
        self.conv = nn.Conv1d(2, 3, 3)

    def forward(self, x, q, k, v, b1, b2):
        return (self.lstm(x)[0].sum() + self.bilinear(x[0], x[1, :, :1].repeat(1, 4)).sum()
                + F.scaled_dot_product_attention(q, k, v).sum() + torch.addbmm(torch.zeros(2, 4), b1, b2).sum()
                + self.conv(x.permute(1, 2, 0)[:, :2]).sum())


def _fused_inputs():
    generator = torch.Generator().manual_seed(0)
    shapes = ((5, 2, 3), (1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 6), (3, 2, 5), (3, 5, 4))
    return tuple(torch.randn(*shape, generator=generator) for shape in shapes)


def test_the_counter_sees_fused_kernels_forward_and_backward():
    torch.manual_seed(0)
    model, inputs = _Fused(), _fused_inputs()
    with torch.no_grad(), MacCounter(model) as forward:
        model(*inputs)
    assert forward.sources["lstm (LSTM)"] == {"mkldnn_rnn_layer": 5 * 2 * (16 * 3 + 16 * 4)}
    assert forward.sources["bilinear (Bilinear)"] == {"_trilinear": 2 * 2 * 3 * 4}
    assert forward.sources["conv (Conv1d)"] == {"convolution": (2 * 3 * 3) * (2 * 3)}
    own = forward.sources["<model> (_Fused)"]
    assert own.pop("addbmm") == 3 * 2 * 5 * 4
    assert sum(own.values()) == 2 * 3 * 5 * (4 + 6), "Q K^T and P V of the attention, whichever kernel ran"
    with MacCounter(model) as both:
        model(*(tensor.requires_grad_() for tensor in inputs)).backward()
    assert both.macs["mkldnn_rnn_layer_backward"] == 2 * forward.macs["mkldnn_rnn_layer"]
    assert both.macs["convolution_backward"] == 2 * forward.macs["convolution"]  # grad of input and weight
    assert both.macs["_trilinear"] > forward.macs["_trilinear"]  # the backward's products are _trilinear too


class _LSTMHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_lstm_with_a_linear_head_is_no_longer_reported_at_100_percent():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 8)
    total = 2 * 5 * (64 * 8 + 64 * 16) + 2 * 16 * 4
    with pytest.warns(UserWarning) as caught:
        kept = lbaify(_LSTMHead(), CFG, intercept=False, example_inputs=x)
    coverage = kept.lba_coverage
    assert coverage.macs_accumulator + coverage.macs_float == total
    assert coverage.macs_accumulator == 2 * 16 * 4 and coverage.float_ops == {"mkldnn_rnn_layer": total - 128}
    share = f"{100 * (total - 128) / total:.2f}%"
    messages = [str(w.message) for w in caught]
    assert any("rnn (LSTM)" in message and share in message for message in messages), messages
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing stays in float: no warning
        converted = lbaify(_LSTMHead(), CFG, example_inputs=x)
    assert converted.lba_coverage.accumulator_share == 1.0
    assert converted.lba_coverage.macs_accumulator == total


class _EinsumHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = nn.Parameter(torch.randn(6, 6, 3))
        self.gru = nn.GRU(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        h = torch.einsum("bi,ijk->bjk", x, self.mix)
        return self.head(self.gru(h)[0][-1])


def test_einsum_and_gru_models_are_fully_on_the_accumulator():
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = lbaify(_EinsumHead(), CFG, example_inputs=x)
    assert converted.lba_coverage.accumulator_share == 1.0, converted.lba_coverage.summary()


class _OutArgument(nn.Module):
    """A product with out=: torch writes into the buffer, the interception lets it run in float."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        buffer = torch.empty(x.shape[0], 4)
        torch.matmul(x, self.inner.weight, out=buffer)
        return self.inner(buffer)


def test_float_products_are_named_with_their_share_and_strict_raises():
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning, match=r"50\.00% of the example forward's 96 MACs stay in float: "
                                         r"<model> \(_OutArgument\) 50\.00% \[mm\]"):
        lbaify(_OutArgument(), CFG, example_inputs=x)
    with pytest.raises(ConfigError, match=r"<model> \(_OutArgument\) 50\.00% \[mm\].*strict=True"):
        lbaify(_OutArgument(), CFG, example_inputs=x, strict=True)
    with pytest.raises(ConfigError, match=r"rnn \(LSTM\) stay in float \(they need intercept=True\)"):
        lbaify(_LSTMHead(), CFG, intercept=False, strict=True)  # known before any forward
    with pytest.raises(ConfigError, match="strict must be True or False"):
        lbaify(_OutArgument(), CFG, strict="yes")


def test_what_skip_keeps_in_float_is_reported_but_not_warned_about():
    x = torch.randn(2, 5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = lbaify(_LSTMHead(), CFG, skip="rnn", example_inputs=x, strict=True)
    coverage = converted.lba_coverage
    assert coverage.kept_by_request == ["rnn"] and list(coverage.float_sources) == ["rnn (LSTM)"]
    assert 0 < coverage.accumulator_share < 0.02


def test_convolutions_with_other_padding_modes_are_intercepted():
    """A Conv2d with padding_mode='reflect' pads with F.pad and calls F.conv2d, one with an even kernel and
    padding='same' pads asymmetrically: both on the accumulator through the interception."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), nn.Conv2d(3, 2, 2, padding="same"))
    x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no layer was swapped: only intercepted products
        converted = lbaify(model, CFG, example_inputs=x)
    assert converted.lba_coverage.accumulator_share == 1.0
    assert converted.lba_coverage.macs_accumulator == 25 * 3 * 18 + 25 * 2 * 12
    torch.testing.assert_close(converted(x), model(x), rtol=2e-2, atol=2e-2)


class _Everything(nn.Module):
    """One of each product torch functions compute: all intercepted."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Parameter(torch.randn(8, 4, 6))
        self.bilinear = nn.Bilinear(4, 6, 5)
        self.conv3d = nn.Conv3d(2, 3, 3, padding=1)
        self.transposed = nn.ConvTranspose2d(2, 3, 3, stride=2)

    def forward(self, x):  # x: (2, 8)
        y = torch.einsum("bi,ijk->bjk", x, self.mix).sum(1)
        total = self.bilinear(x[:, :4], y).sum() + self.conv3d(x.reshape(-1, 2, 2, 2, 1)).sum()
        total = total + self.transposed(x.reshape(-1, 2, 2, 2)).sum()
        total = total + F.conv1d(x.unsqueeze(1), torch.ones(1, 1, 3)).sum()
        rows, columns = x.reshape(2, 1, 8).expand(2, 4, 8), x.reshape(2, 8, 1).expand(2, 8, 4)
        total = total + torch.addbmm(torch.zeros(4, 4), rows, columns).sum()
        total = total + torch.linalg.multi_dot([x[0], x.T, x[:, :3]]).sum() + torch.tensordot(x, x, ([0], [0])).sum()
        return total + torch.inner(x, x).sum() + torch.mv(x, x[0]).sum() + torch.linalg.matmul(x, x.T).sum()


def test_every_intercepted_product_counts_on_the_accumulator():
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(4)
    model = _Everything()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no layer was swapped: only intercepted products
        converted = lbaify(model, CFG, example_inputs=x)
    assert converted.lba_coverage.accumulator_share == 1.0, converted.lba_coverage.summary()
    with pytest.warns(UserWarning) as caught:
        kept = lbaify(model, CFG, intercept=False, example_inputs=x)
    message = " ".join(str(w.message) for w in caught)
    for name in ("conv3d (Conv3d)", "transposed (ConvTranspose2d)", "bilinear (Bilinear)", "<model> (_Everything)"):
        assert name in message
    assert kept.lba_coverage.accumulator_share == 0.0
