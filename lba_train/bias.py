"""Choosing the accumulator's exponent bias: keep the format's, the paper's rule, or calibrate on data.

With max-abs operand scaling the MAC sees products up to ``max_a * max_b``, far above the range of a
default-biased narrow accumulator, so the bias decides where the accumulator's binades sit. The bias is a
hardware knob (it is part of the accumulator format the RTL is generated for).
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from lba_core import ConfigError, FloatFormat, MacConfig, derive_datapath, paper_acc_bias

from .convert import lba_layers
from .layers import LBAMatMul

BIAS_MODES = ("format", "paper", "calibrate")

#: Partial sums per layer and batch whose magnitudes are recorded (evenly spaced output rows).
CALIBRATION_ROWS = 256
#: Matrices of a batched activation product (attention heads x samples) recorded per batch.
MATMUL_CALIBRATION_BATCH = 8


def product_bias(cfg: MacConfig) -> int:
    """b_prod: the bias an exponent field as wide as the accumulator's needs for its top binade to hold the
    largest product (after R_prod, when a product format is set), i.e. the bias of the product "in the
    accumulator's exponent width"."""
    largest = derive_datapath(cfg).largest_product_exponent
    if largest is None:
        raise ConfigError(f"{cfg.name}: the product format {cfg.product.name} flushes every product to zero")
    return (1 << cfg.acc.exp_bits) - 1 - largest


def with_acc_bias(cfg: MacConfig, bias: int) -> MacConfig:
    acc = cfg.acc
    return cfg.replace(acc=FloatFormat(acc.exp_bits, acc.man_bits, bias=bias, subnormals=acc.subnormals))


def paper_bias_config(cfg: MacConfig) -> MacConfig:
    """The paper's rule b_acc = b_prod - 1/2 log2(chunk size) with :func:`product_bias` as b_prod."""
    return with_acc_bias(cfg, paper_acc_bias(product_bias(cfg), cfg.chunk_size))


def _chunked_cumsum(products: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """Exact-arithmetic running sums along the last dimension, restarting at every chunk, plus the chunk
    adder's running totals: every value the accumulator would hold with unlimited range and precision."""
    if chunk_size is None or chunk_size >= products.shape[-1]:
        return products.cumsum(dim=-1)
    length = products.shape[-1]
    padded = F.pad(products, (0, (-length) % chunk_size))
    chunks = padded.reshape(*products.shape[:-1], -1, chunk_size)
    within = chunks.cumsum(dim=-1)
    totals = within[..., -1].cumsum(dim=-1)
    return torch.cat([within.flatten(-2)[..., :length], totals], dim=-1)


def _operand_matrices(layer: nn.Module, a: torch.Tensor, b: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The layer's dot products as (rows x K, K x N) pairs of scaled operands (one pair per conv group; the
    first few matrices of a batched activation product)."""
    pairs = layer.gemm_operands(a, b)
    return pairs[:MATMUL_CALIBRATION_BATCH] if isinstance(layer, LBAMatMul) else pairs


def partial_sum_exponents(layer: nn.Module, a: torch.Tensor, b: torch.Tensor) -> Counter:
    """Histogram of floor(log2 |s|) over the non-zero exact partial sums (and products) of a layer's MACs."""
    histogram: Counter = Counter()
    for rows, cols in _operand_matrices(layer, a.detach().to(torch.float64), b.detach().to(torch.float64)):
        step = max(1, rows.shape[0] // CALIBRATION_ROWS)
        products = rows[::step, None, :] * cols.t()[None, :, :]
        sums = _chunked_cumsum(products, layer.cfg.chunk_size)
        sums = torch.cat([products.flatten(), sums.flatten()]).abs()
        _, exponents = torch.frexp(sums[sums > 0])
        values, counts = torch.unique(exponents - 1, return_counts=True)
        histogram.update(dict(zip(values.tolist(), counts.tolist())))
    return histogram


def observe_partial_sums(model: nn.Module, batches) -> dict[str, Counter]:
    """Run ``batches`` (an iterable of input tensors) through an lbaified ``model`` with exact accumulation
    and return, per LBA layer, the histogram of partial-sum exponents its accumulator would have to hold."""
    layers = lba_layers(model)
    histograms = {name: Counter() for name, _ in layers}
    handles = []
    captured: dict[int, torch.Tensor] = {}

    def capture(quantizer, _inputs, output):
        captured[id(quantizer)] = output[0]

    def record(name):
        def hook(layer, _inputs, _output):
            a, b = captured[id(layer.input_quantizer)], captured[id(layer.weight_quantizer)]
            histograms[name].update(partial_sum_exponents(layer, a, b))

        return hook

    previous = {name: layer.exact_accumulation for name, layer in layers}
    try:
        for name, layer in layers:
            layer.exact_accumulation = True
            handles.append(layer.input_quantizer.register_forward_hook(capture))
            handles.append(layer.weight_quantizer.register_forward_hook(capture))
            handles.append(layer.register_forward_hook(record(name)))
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for inputs in batches:
                model(inputs)
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
        for name, layer in layers:
            layer.exact_accumulation = previous[name]
    return histograms


def calibrated_bias(cfg: MacConfig, histogram: Counter, overflow_fraction: float = 1e-4) -> int:
    """The bias whose top binade is the highest exponent left after ignoring the largest
    ``overflow_fraction`` of the observed values (so at most that fraction would saturate)."""
    total = sum(histogram.values())
    if total == 0:
        return cfg.acc.bias
    allowed = overflow_fraction * total
    above = 0
    for exponent in sorted(histogram, reverse=True):
        above += histogram[exponent]
        if above > allowed:
            return (1 << cfg.acc.exp_bits) - 1 - exponent
    raise AssertionError("unreachable: the loop covers every observed value")


def calibrate_bias_config(
    model: nn.Module, cfg: MacConfig, batches, overflow_fraction: float = 1e-4
) -> MacConfig:
    """One accumulator bias for the whole (lbaified) model, from its observed partial sums: per layer the
    bias of :func:`calibrated_bias`; the model gets the smallest of them (the widest range upward), so no
    layer overflows more than ``overflow_fraction`` — one bias because the accumulator is one circuit."""
    histograms = observe_partial_sums(model, batches)
    biases = [calibrated_bias(cfg, histogram, overflow_fraction) for histogram in histograms.values() if histogram]
    if not biases:
        raise ConfigError("bias calibration saw no partial sums: does the model have LBA layers, and any data?")
    return with_acc_bias(cfg, min(biases))


def resolve_bias(cfg: MacConfig, mode: str, model: nn.Module | None = None, batches=None) -> MacConfig:
    """``cfg`` with its accumulator bias chosen by ``mode``: "format" (unchanged), "paper" or "calibrate"
    (needs the lbaified ``model`` and a few input ``batches``). An integer/fixed-point accumulator has no
    exponent bias: its binary point is part of its format, so every mode returns it unchanged."""
    if mode in BIAS_MODES and (cfg.fixed_acc or cfg.fused_acc):  # fused: the output format is the unit's
        return cfg
    if mode == "format":
        return cfg
    if mode == "paper":
        return paper_bias_config(cfg)
    if mode == "calibrate":
        if model is None or batches is None:
            raise ConfigError("bias='calibrate' needs the converted model and a few batches of inputs")
        return calibrate_bias_config(model, cfg, batches)
    raise ConfigError(f"unknown accumulator bias mode {mode!r}: choose one of {', '.join(BIAS_MODES)}")
