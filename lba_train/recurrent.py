"""nn.RNN, nn.LSTM, nn.GRU and their cells unrolled op by op, so that their products reach the accumulator.

torch runs the recurrent layers as fused kernels (``aten.mkldnn_rnn_layer`` for LSTM on CPU, ``_VF.gru``,
``_VF.rnn_tanh``), which the products interception (lba_train.products) cannot look into. The classes here
have the same parameters, state dict and call signature and compute the same recurrences with ``F.linear``,
which the interception puts on the accumulator. Per layer and direction:

* the input sums ``W_ih·x_t + b_ih`` of every time step are one product (all steps and sequences at once;
  one scale for the whole input sequence);
* at each step, the hidden sums ``W_hh·h_{t-1} + b_hh`` are one product (the active sequences' states,
  one scale per step);
* the two sums are added in float, gate by gate: ``(W_ih·x + b_ih) + (W_hh·h + b_hh)``, as torch adds them.
  GRU's new gate needs them apart anyway: ``n = tanh((W_in·x + b_in) + r ⊙ (W_hn·h + b_hn))``;
* LSTM's ``proj_size``: ``h_t = W_hr·(o ⊙ tanh(c_t))`` is a third product;
* the gate nonlinearities and the element-wise products (``f ⊙ c``, ``i ⊙ g``, ``r ⊙ ...``, ``z ⊙ h``) are
  float, as every other element-wise operation of a model.

Bidirectional and multi-layer stacks, ``batch_first``, unbatched inputs, initial states and packed sequences
(``PackedSequence``, sorted or not) behave as in torch; dropout between layers (training) draws its own mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence


def _step(mode: str, gi: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, w_hh, b_hh, w_hr):
    """One step of one sequence batch: (h', c') from the input sums ``gi`` and the previous state."""
    gh = F.linear(h, w_hh, b_hh)
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h if w_hr is None else F.linear(h, w_hr)), c
    if mode == "GRU":
        input_r, input_z, input_n = gi.chunk(3, -1)
        hidden_r, hidden_z, hidden_n = gh.chunk(3, -1)
        r = torch.sigmoid(input_r + hidden_r)
        z = torch.sigmoid(input_z + hidden_z)
        n = torch.tanh(input_n + r * hidden_n)
        return (1 - z) * n + z * h, None
    total = gi + gh
    return (torch.tanh(total) if mode == "RNN_TANH" else torch.relu(total)), None


def _direction(mode: str, data: torch.Tensor, batch_sizes: list[int], h: torch.Tensor, c, weights, reverse: bool):
    """One layer in one direction over time-major packed ``data`` (steps of ``batch_sizes`` rows)."""
    w_ih, w_hh, b_ih, b_hh, w_hr = weights
    inputs = F.linear(data, w_ih, b_ih)
    starts = [0]
    for size in batch_sizes[:-1]:
        starts.append(starts[-1] + size)
    outputs: list[torch.Tensor | None] = [None] * len(batch_sizes)
    for t in (reversed(range(len(batch_sizes))) if reverse else range(len(batch_sizes))):
        size = batch_sizes[t]
        new_h, new_c = _step(mode, inputs[starts[t]:starts[t] + size], h[:size], None if c is None else c[:size],
                             w_hh, b_hh, w_hr)
        outputs[t] = new_h
        h = torch.cat([new_h, h[size:]]) if size < h.shape[0] else new_h
        if c is not None:
            c = torch.cat([new_c, c[size:]]) if size < c.shape[0] else new_c
    return torch.cat(outputs), h, c


class _UnfusedRecurrent:
    """The unrolled forward shared by UnfusedRNN, UnfusedLSTM and UnfusedGRU (mixed into nn.RNNBase)."""

    @classmethod
    def from_float(cls, module: nn.RNNBase):
        parameter = next(module.parameters())
        kwargs = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                      dropout=module.dropout, bidirectional=module.bidirectional, device=parameter.device,
                      dtype=parameter.dtype)
        if module.mode == "LSTM":
            kwargs["proj_size"] = module.proj_size
        if module.mode.startswith("RNN"):
            kwargs["nonlinearity"] = module.nonlinearity
        layer = cls(module.input_size, module.hidden_size, **kwargs)
        layer.load_state_dict(module.state_dict())
        layer.train(module.training)
        return layer

    def _layer_weights(self, layer: int, direction: int) -> tuple:
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        return tuple(getattr(self, name + suffix, None) for name in
                     ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))

    def forward(self, input, hx=None):
        lstm = self.mode == "LSTM"
        directions = 2 if self.bidirectional else 1
        out_size = self.proj_size if lstm and self.proj_size > 0 else self.hidden_size
        packed = isinstance(input, PackedSequence)
        unbatched = False
        if packed:
            data, sizes, sorted_indices, unsorted_indices = input
            batch_sizes = [int(size) for size in sizes]
        else:
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
            steps, batch = x.shape[:2]
            data, batch_sizes, sorted_indices = x.reshape(steps * batch, x.shape[-1]), [batch] * steps, None
        batch = batch_sizes[0]
        h0, c0 = (hx if lstm else (hx, None)) if hx is not None else (None, None)
        if h0 is None:
            h0 = data.new_zeros(self.num_layers * directions, batch, out_size)
            c0 = data.new_zeros(self.num_layers * directions, batch, self.hidden_size) if lstm else None
        elif unbatched:
            h0, c0 = h0.unsqueeze(1), (None if c0 is None else c0.unsqueeze(1))
        if sorted_indices is not None:
            h0 = h0.index_select(1, sorted_indices)
            c0 = None if c0 is None else c0.index_select(1, sorted_indices)
        layer_input, h_n, c_n = data, [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                output, h, c = _direction(self.mode, layer_input, batch_sizes, h0[index],
                                          None if c0 is None else c0[index], self._layer_weights(layer, direction),
                                          reverse=bool(direction))
                outputs.append(output)
                h_n.append(h)
                c_n.append(c)
            layer_input = torch.cat(outputs, -1) if directions == 2 else outputs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout)
        h_n = torch.stack(h_n)
        c_n = torch.stack(c_n) if lstm else None
        if packed:
            output = PackedSequence(layer_input, sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                h_n = h_n.index_select(1, unsorted_indices)
                c_n = None if c_n is None else c_n.index_select(1, unsorted_indices)
        else:
            output = layer_input.reshape(len(batch_sizes), batch, -1)
            if unbatched:
                output, h_n = output.squeeze(1), h_n.squeeze(1)
                c_n = None if c_n is None else c_n.squeeze(1)
            elif self.batch_first:
                output = output.transpose(0, 1)
        return output, ((h_n, c_n) if lstm else h_n)


class UnfusedRNN(_UnfusedRecurrent, nn.RNN):
    """nn.RNN computed step by step with F.linear (module docstring)."""

    forward = _UnfusedRecurrent.forward


class UnfusedLSTM(_UnfusedRecurrent, nn.LSTM):
    """nn.LSTM computed step by step with F.linear, proj_size included (module docstring)."""

    forward = _UnfusedRecurrent.forward


class UnfusedGRU(_UnfusedRecurrent, nn.GRU):
    """nn.GRU computed step by step with F.linear, input and hidden sums apart (module docstring)."""

    forward = _UnfusedRecurrent.forward


class _UnfusedCell:
    """The unrolled forward shared by the cells (mixed into nn.RNNCellBase)."""

    MODE = ""

    @classmethod
    def from_float(cls, module: nn.RNNCellBase):
        parameter = module.weight_ih
        kwargs = {"nonlinearity": module.nonlinearity} if cls.MODE == "RNN" else {}
        layer = cls(module.input_size, module.hidden_size, module.bias, device=parameter.device,
                    dtype=parameter.dtype, **kwargs)
        layer.load_state_dict(module.state_dict())
        layer.train(module.training)
        return layer

    def forward(self, input, hx=None):
        mode = self.MODE if self.MODE != "RNN" else f"RNN_{self.nonlinearity.upper()}"
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            hx = (zeros, zeros) if mode == "LSTM" else zeros
        elif unbatched:
            hx = tuple(state.unsqueeze(0) for state in hx) if mode == "LSTM" else hx.unsqueeze(0)
        h, c = hx if mode == "LSTM" else (hx, None)
        h, c = _step(mode, F.linear(x, self.weight_ih, self.bias_ih), h, c, self.weight_hh, self.bias_hh, None)
        if unbatched:
            h, c = h.squeeze(0), (None if c is None else c.squeeze(0))
        return (h, c) if mode == "LSTM" else h


class UnfusedRNNCell(_UnfusedCell, nn.RNNCell):
    """nn.RNNCell with F.linear products."""

    MODE = "RNN"
    forward = _UnfusedCell.forward


class UnfusedLSTMCell(_UnfusedCell, nn.LSTMCell):
    """nn.LSTMCell with F.linear products."""

    MODE = "LSTM"
    forward = _UnfusedCell.forward


class UnfusedGRUCell(_UnfusedCell, nn.GRUCell):
    """nn.GRUCell with F.linear products (input and hidden sums apart)."""

    MODE = "GRU"
    forward = _UnfusedCell.forward


#: float class -> its unrolled class (lbaify swaps them when it intercepts products).
UNFUSED_RECURRENT = {nn.RNN: UnfusedRNN, nn.LSTM: UnfusedLSTM, nn.GRU: UnfusedGRU, nn.RNNCell: UnfusedRNNCell,
                     nn.LSTMCell: UnfusedLSTMCell, nn.GRUCell: UnfusedGRUCell}
