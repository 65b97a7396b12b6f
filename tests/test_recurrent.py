"""nn.RNN/LSTM/GRU and their cells, unrolled (lba_train.recurrent): the same computation as torch's fused kernels
(bidirectional, multi-layer, proj_size, batch_first, packed, unbatched), and after lbaify every gate product on
the accumulator, each intercepted product equal to reference_dot."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from lba_core import FloatFormat, MacConfig
from lba_train import lbaify, reference_dot
from lba_train.products import products_of
from lba_train.recurrent import UNFUSED_RECURRENT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = MacConfig("e4m3", FloatFormat(5, 4, bias=-2), chunk_size=4)

VARIANTS = [
    (nn.RNN, {"num_layers": 2, "bidirectional": True, "nonlinearity": "relu"}),
    (nn.LSTM, {"num_layers": 2, "bidirectional": True, "proj_size": 3, "batch_first": True}),
    (nn.GRU, {"num_layers": 2, "bidirectional": True}),
    (nn.LSTM, {}),
    (nn.GRU, {"batch_first": True, "bias": False}),
]


def _largest_difference(a, b) -> float:
    a, b = (x if isinstance(x, tuple) else (x,) for x in (a, b))
    return max(float((p - q).detach().abs().max()) for p, q in zip(a, b))


@pytest.mark.parametrize(("kind", "kwargs"), VARIANTS, ids=[f"{k.__name__}-{'-'.join(kw) or 'plain'}"
                                                           for k, kw in VARIANTS])
def test_unfused_recurrent_layers_are_torch_layers(kind, kwargs):
    torch.manual_seed(0)
    reference = kind(4, 5, **kwargs).double()
    unfused = UNFUSED_RECURRENT[kind].from_float(reference)
    assert set(unfused.state_dict()) == set(reference.state_dict())
    batch_first = kwargs.get("batch_first", False)
    x = torch.randn(*((3, 6) if batch_first else (6, 3)), 4, dtype=torch.float64)
    assert _largest_difference(unfused(x)[0], reference(x)[0]) < 1e-12
    assert _largest_difference(unfused(x)[1], reference(x)[1]) < 1e-12
    assert _largest_difference(unfused(x[0])[0], reference(x[0])[0]) < 1e-12  # unbatched
    directions = 2 if reference.bidirectional else 1
    out = kwargs.get("proj_size") or 5
    h0 = torch.randn(reference.num_layers * directions, 3, out, dtype=torch.float64)
    hx = (h0, torch.randn(reference.num_layers * directions, 3, 5, dtype=torch.float64)) if kind is nn.LSTM else h0
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4]), batch_first=batch_first, enforce_sorted=False)
    got, expected = unfused(packed, hx), reference(packed, hx)
    assert torch.equal(got[0].batch_sizes, expected[0].batch_sizes)
    assert _largest_difference(got[0].data, expected[0].data) < 1e-12
    assert _largest_difference(got[1], expected[1]) < 1e-12


@pytest.mark.parametrize("kind", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_unfused_cells_are_torch_cells(kind):
    torch.manual_seed(1)
    reference = kind(4, 5).double()
    unfused = UNFUSED_RECURRENT[kind].from_float(reference)
    x = torch.randn(3, 4, dtype=torch.float64)
    assert _largest_difference(unfused(x), reference(x)) < 1e-12
    assert _largest_difference(unfused(x[0]), reference(x[0])) < 1e-12


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, bidirectional=True, proj_size=3, batch_first=True)
        self.gru = nn.GRU(6, 5, num_layers=2)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h, _ = self.lstm(x)
        h, _ = self.gru(h.transpose(0, 1))
        return self.head(h[-1])


def test_recurrent_products_run_on_the_accumulator_and_equal_the_reference(comparisons):
    torch.manual_seed(2)
    model = _Recurrent().double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    converted = lbaify(model, CFG, example_inputs=x)
    assert converted.lba_coverage.accumulator_share == 1.0, converted.lba_coverage.summary()
    assert type(converted.lstm).__name__ == "UnfusedLSTM" and type(converted.gru).__name__ == "UnfusedGRU"
    products = products_of(converted)
    calls = []
    quantized = []
    handles = [products.input_quantizer.register_forward_hook(lambda m, i, o: quantized.append(o)),
               products.weight_quantizer.register_forward_hook(lambda m, i, o: quantized.append(o)),
               products.register_forward_hook(lambda m, i, o: calls.append((*quantized[-2:], o.detach())))]
    output = converted(x)
    for handle in handles:
        handle.remove()
    # LSTM: 2 directions x (1 input product + 3 steps x (hidden + projection)); GRU: 2 layers x (1 + 3 hidden)
    assert len(calls) == 2 * (1 + 3 * 2) + 2 * (1 + 3)
    generator = torch.Generator().manual_seed(3)
    compared = mismatches = 0
    for (qa, sa), (qb, sb), out in calls:
        rows, columns = qa.reshape(-1, qa.shape[-1]).detach(), qb.detach()
        flat = out.reshape(-1, out.shape[-1])
        for _ in range(4):
            i = int(torch.randint(rows.shape[0], (1,), generator=generator))
            j = int(torch.randint(columns.shape[1], (1,), generator=generator))
            expected = (torch.tensor(reference_dot(rows[i], columns[:, j], CFG), dtype=torch.float64) * (sa * sb))
            compared += 1
            mismatches += int(not torch.equal(flat[i, j], expected.to(flat.dtype)))
    comparisons("LSTM (bidirectional, proj) + GRU (2 layers) products vs reference_dot", compared, mismatches)
    assert mismatches == 0
    output.sum().backward()
    assert converted.lstm.weight_hh_l0_reverse.grad is not None and converted.gru.weight_ih_l1.grad is not None
