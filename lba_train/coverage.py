"""What of a converted model runs on the accumulator: MACs counted by the aten operations that actually run.

A ``TorchDispatchMode`` sees every aten operation a forward (or a backward) runs, after torch's Python-level
functions have been resolved: nn.LSTM's ``mkldnn_rnn_layer``, nn.Bilinear's ``_trilinear``, the CPU SDPA
kernels, convolutions, ``addbmm``/``addmv``/``dot`` and the matrix products (:data:`PRODUCT_OPS`). Each call's
multiply-accumulates are attributed to the innermost module running (its name in the model, ``<model>`` for the
root's own forward). Products inside LBA layers and the interceptor (lba_train.products) are on the accumulator;
every other counted product is float. :func:`measure_macs` runs the forward twice: as converted (what is float)
and with exact accumulation on every LBA layer (then every product runs in torch: the total).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
ROOT_NAME = "<model>"


@dataclass
class AccumulatorCoverage:
    """What of a converted model runs on the accumulator and what stays in float.

    ``converted``: module name -> LBA layer type; ``kept_float``: module name -> type of the modules with
    products that stay in float (skipped, kept first/last, or of a kind lbaify cannot convert);
    ``kept_by_request``: the names in ``kept_float`` that ``skip``/``keep_first_last`` asked for;
    ``intercepts_products``: whether torch-function products are intercepted. After
    :func:`~lba_train.convert.accumulator_coverage` ran a forward: ``macs_accumulator`` and ``macs_float``
    (multiply-accumulates of that forward), ``float_ops`` (float MACs per aten operator) and ``float_sources``
    (float MACs per module: ``"name (Type)"`` -> {operator: MACs}).
    """

    converted: dict[str, str] = field(default_factory=dict)
    kept_float: dict[str, str] = field(default_factory=dict)
    kept_by_request: list[str] = field(default_factory=list)
    intercepts_products: bool = True
    macs_accumulator: int | None = None
    macs_float: int | None = None
    float_ops: dict[str, int] = field(default_factory=dict)
    float_sources: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def accumulator_share(self) -> float | None:
        """Fraction of the measured forward's MACs that ran on the accumulator (None before a measurement)."""
        if self.macs_accumulator is None:
            return None
        total = self.macs_accumulator + self.macs_float
        return self.macs_accumulator / total if total else 0.0

    def unrequested_float(self) -> dict[str, int]:
        """Float MACs per module (``"name (Type)"``) outside the modules ``skip``/``keep_first_last`` kept."""
        shares = {}
        for source, ops in self.float_sources.items():
            name = source.rsplit(" (", 1)[0]
            if not any(_inside(name, kept) for kept in self.kept_by_request):
                shares[source] = sum(ops.values())
        return shares

    def float_report(self) -> str:
        """One line: the float MACs outside the requested modules, per module and operator, with their share."""
        total = (self.macs_accumulator or 0) + (self.macs_float or 0)
        parts = []
        for source, macs in sorted(self.unrequested_float().items(), key=lambda item: -item[1]):
            ops = ", ".join(sorted(self.float_sources[source]))
            parts.append(f"{source} {100 * macs / total:.2f}% [{ops}]")
        return "; ".join(parts)

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for kind in self.converted.values():
            kinds[kind] = kinds.get(kind, 0) + 1
        parts = [f"{len(self.converted)} layers on the accumulator ("
                 + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) + ")"]
        if self.intercepts_products:
            parts.append("torch-function products intercepted")
        if self.kept_float:
            names = ", ".join(name or "model" for name in self.kept_float)
            parts.append(f"{len(self.kept_float)} kept in float ({names})")
        if self.macs_accumulator is not None:
            parts.append(f"{100 * self.accumulator_share:.2f}% of {self.macs_accumulator + self.macs_float:,} "
                         "forward MACs on the accumulator")
            if self.float_ops:
                parts.append("float MACs: " + ", ".join(f"{op} {macs:,}" for op, macs in self.float_ops.items()))
        return "; ".join(parts)


def _inside(name: str, container: str) -> bool:
    return container == "" or name == container or name.startswith(container + ".")


# ------------------------------------------------------------------------------------------- MACs per aten call
_ATTENTION_NAMES = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                    "_scaled_dot_product_fused_attention_overrideable")
_ATTENTION_OPS = tuple(getattr(aten, name) for name in _ATTENTION_NAMES if hasattr(aten, name))
_ATTENTION_BACKWARD_OPS = tuple(getattr(aten, name + "_backward") for name in _ATTENTION_NAMES
                                if hasattr(aten, name + "_backward"))


def _attention_macs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[int, int]:
    """(MACs of Q·K^T, MACs of P·V) of one fused attention call."""
    rows = math.prod(query.shape[:-1])
    return rows * key.shape[-2] * query.shape[-1], rows * key.shape[-2] * value.shape[-1]


def _trilinear_macs(args) -> int:
    """aten._trilinear(i1, i2, i3, expand1, expand2, expand3, sumdim, unroll_dim): one product per element of
    the broadcast of the three expanded operands (nn.Bilinear: N x O x I1 x I2)."""
    shapes = []
    for tensor, expand in zip(args[:3], args[3:6]):
        shape = list(tensor.shape)
        for dim in sorted(expand):
            shape.insert(dim, 1)
        shapes.append(shape)
    return math.prod(torch.broadcast_shapes(*shapes))


def _rnn_layer_macs(input_: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor) -> int:
    """One mkldnn_rnn_layer: every step of every sequence multiplies the input and the hidden state by the
    gate weights (proj_size is not supported by the mkldnn path)."""
    steps = input_.numel() // input_.shape[-1]
    return steps * (weight_ih.numel() + weight_hh.numel())


def macs_of_call(op, args, out) -> int:
    """Multiply-accumulates of one aten call (its overload packet ``op``) that computes products, forward or
    backward; 0 for every other operator."""
    if op in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.addbmm):
        a, b = args[-2], args[-1]
        return math.prod(a.shape) * b.shape[-1]
    if op in (aten.mv, aten.addmv):
        return math.prod(args[-2].shape)
    if op in (aten.dot, aten.vdot):
        return args[0].numel()
    if op is aten.convolution:
        weight, transposed = args[1], args[6]
        return (args[0].numel() if transposed else out.numel()) * math.prod(weight.shape[1:])
    if op is aten.convolution_backward:  # (grad_output, input, weight, ..., transposed=args[7], ..., output_mask)
        grad_output, input_, weight, transposed, mask = args[0], args[1], args[2], args[7], args[10]
        forward = (input_.numel() if transposed else grad_output.numel()) * math.prod(weight.shape[1:])
        return forward * (int(bool(mask[0])) + int(bool(mask[1])))
    if op in _ATTENTION_OPS:
        return sum(_attention_macs(*args[:3]))
    if op in _ATTENTION_BACKWARD_OPS:  # recompute Q·K^T; dV, dP, dQ, dK
        scores, values = _attention_macs(*args[1:4])
        return 3 * scores + 2 * values
    if op is aten._trilinear:
        return _trilinear_macs(args)
    if op is aten.mkldnn_rnn_layer:
        return _rnn_layer_macs(args[0], args[1], args[2])
    if op is aten.mkldnn_rnn_layer_backward:  # gradients of the input and of both weights
        return 2 * _rnn_layer_macs(args[0], args[1], args[2])
    return 0


#: The aten operators :func:`macs_of_call` counts (everything else that computes products decomposes into them).
PRODUCT_OPS = ("mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "convolution",
               "convolution_backward", "_trilinear", "mkldnn_rnn_layer", "mkldnn_rnn_layer_backward",
               *(op.__name__ for op in _ATTENTION_OPS + _ATTENTION_BACKWARD_OPS))


class MacCounter(TorchDispatchMode):
    """Counts the MACs of the products that run in torch, per aten operator and per innermost module of
    ``model``; with ``outside`` (LBA layers), only those outside them (whose kernels may use torch's matmul for
    exact partial sums)."""

    def __init__(self, model: nn.Module, outside: list[nn.Module] = ()) -> None:
        super().__init__()
        self.macs: dict[str, int] = {}
        self.sources: dict[str, dict[str, int]] = {}
        self.depth = 0  # LBA layers currently running
        self.stack: list[str] = []
        self.handles = []
        lba_ids = {id(layer) for layer in outside}
        modules = [(f"{name or ROOT_NAME} ({type(module).__name__})", module) for name, module in model.named_modules()]
        seen = {id(module) for _, module in modules}
        modules += [(type(layer).__name__, layer) for layer in outside if id(layer) not in seen]  # the interceptor
        for label, module in modules:
            lba = id(module) in lba_ids
            self.handles.append(module.register_forward_pre_hook(self._entering(label, lba)))
            self.handles.append(module.register_forward_hook(self._leaving(lba), always_call=True))

    def _entering(self, label: str, lba: bool):
        def hook(_module, _args) -> None:
            self.stack.append(label)
            self.depth += lba

        return hook

    def _leaving(self, lba: bool):
        def hook(_module, _args, _output) -> None:
            self.stack.pop()
            self.depth -= lba

        return hook

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        macs = macs_of_call(func.overloadpacket, args, out)
        if macs and not self.depth:
            name = func.overloadpacket.__name__
            self.macs[name] = self.macs.get(name, 0) + macs
            ops = self.sources.setdefault(self.stack[-1] if self.stack else ROOT_NAME, {})
            ops[name] = ops.get(name, 0) + macs
        return out


def measure_macs(model: nn.Module, layers: list[nn.Module], args: tuple, kwargs: dict) -> tuple[int, MacCounter]:
    """(MACs of the forward on the accumulator, the counter of the float MACs), from two forwards: as converted
    (what runs in torch outside the LBA ``layers`` is float) and with ``exact_accumulation`` on every LBA layer
    (then every product runs in torch, so the count is the total). Counters and modes are restored."""
    saved = [(layer, layer.stats, layer.exact_accumulation) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        for layer in layers:
            layer.stats = None
        with torch.no_grad():
            with MacCounter(model, layers) as floats:
                model(*args, **kwargs)
            for layer in layers:
                layer.exact_accumulation = True
            with MacCounter(model) as everything:
                model(*args, **kwargs)
    finally:
        for layer, stats, exact in saved:
            layer.stats, layer.exact_accumulation = stats, exact
        model.train(was_training)
    return sum(everything.macs.values()) - sum(floats.macs.values()), floats
