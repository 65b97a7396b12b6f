"""Choosing the accumulator's exponent bias: keep the format's, the paper's rule, or calibrate on data.

With max-abs operand scaling the MAC sees products up to ``max_a * max_b``, far above the range of a
default-biased narrow accumulator, so the bias decides where the accumulator's binades sit. The bias is a
hardware knob (it is part of the accumulator format the RTL is generated for).

A fixed-bias accumulator (fp16, bf16, fp32, a format with an explicit bias) keeps its bias; "margin" then
scales the operands down instead, by a per-layer power of two chosen on the same calibration data
(:func:`calibrate_scale_margins`), which is what one would do with such an accumulator in practice.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from lba_core import ConfigError, FloatFormat, MacConfig, derive_datapath, paper_acc_bias

from .convert import lba_layers
from .layers import LBAMatMul

BIAS_MODES = ("format", "paper", "calibrate", "margin")

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
        for values in (products, sums):
            _count_exponents(values.flatten(), histogram)
    return histogram


def _count_exponents(values: torch.Tensor, histogram: Counter) -> None:
    """Add floor(log2 |v|) of the non-zero float64 ``values`` to ``histogram``: a bincount of the binary64
    exponent fields (one linear pass, no sort). Field 0 holds zeros (and binary64 subnormals, which products of
    the operand formats never reach) and is skipped, as ``v != 0`` was."""
    fields = (values.contiguous().view(torch.int64) >> 52) & 0x7FF
    counts = torch.bincount(fields.flatten(), minlength=0x800)
    counts[0] = 0
    present = counts.nonzero().flatten()
    histogram.update(dict(zip((present - 1023).tolist(), counts[present].tolist())))


def _sum_bound(layer: nn.Module, a: torch.Tensor, b: torch.Tensor) -> float:
    """An upper bound on every |partial sum| of the layer's dot products: K * max|a| * max|b|."""
    pairs = layer.gemm_operands(a.detach().to(torch.float64), b.detach().to(torch.float64))
    return max((rows.shape[-1] * rows.abs().max() * cols.abs().max()).item() if rows.numel() and cols.numel()
               else 0.0 for rows, cols in pairs) if pairs else 0.0


def observe_partial_sums(model: nn.Module, batches, below: float | None = None) -> dict[str, Counter]:
    """Run ``batches`` (an iterable of input tensors, or of keyword-argument dicts such as tokenizer
    output) through an lbaified ``model`` with exact accumulation
    and return, per LBA layer, the histogram of partial-sum exponents its accumulator would have to hold.
    With ``below``, a batch whose bound K * max|a| * max|b| on every |partial sum| is below it is not
    histogrammed (a cheap exact skip for a caller that only asks whether sums reach ``below``)."""
    layers = lba_layers(model)
    histograms = {name: Counter() for name, _ in layers}
    handles = []
    captured: dict[int, torch.Tensor] = {}

    def capture(quantizer, _inputs, output):
        captured[id(quantizer)] = output[0]

    def record(name):
        def hook(layer, _inputs, _output):
            a = captured[id(layer.input_quantizer)]
            # a frozen weight may come from the layer's cache without a call of its quantizer
            b = captured.pop(id(layer.weight_quantizer), None)
            b = layer.quantized_weight()[0] if b is None else b
            if below is not None and _sum_bound(layer, a, b) < below:
                return
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
                model(**inputs) if isinstance(inputs, dict) else model(inputs)
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
        for name, layer in layers:
            layer.exact_accumulation = previous[name]
    return histograms


def top_exponent(histogram: Counter, overflow_fraction: float = 1e-4) -> int | None:
    """The highest observed exponent left after ignoring the largest ``overflow_fraction`` of the observed
    values (the headroom rule of both the bias and the margin calibration), or None for no values."""
    total = sum(histogram.values())
    if total == 0:
        return None
    allowed = overflow_fraction * total
    above = 0
    for exponent in sorted(histogram, reverse=True):
        above += histogram[exponent]
        if above > allowed:
            return exponent
    raise AssertionError("unreachable: the loop covers every observed value")


def calibrated_bias(cfg: MacConfig, histogram: Counter, overflow_fraction: float = 1e-4) -> int:
    """The bias whose top binade is the highest exponent left after ignoring the largest
    ``overflow_fraction`` of the observed values (so at most that fraction would saturate)."""
    exponent = top_exponent(histogram, overflow_fraction)
    return cfg.acc.bias if exponent is None else (1 << cfg.acc.exp_bits) - 1 - exponent


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


def margin_exponent(cfg: MacConfig, histogram: Counter, overflow_fraction: float = 1e-4) -> int:
    """m >= 0, the smallest power-of-two operand margin with which the calibrated partial sums fit the
    accumulator ``cfg.acc`` as it is (bias kept): with E the :func:`top_exponent` of the histogram (the
    bias calibration's headroom rule, at most ``overflow_fraction`` of the values above binade E) and T the
    accumulator's top binade (floor(log2 max)), m = max(0, E - T), so binade E lands on binade T."""
    exponent = top_exponent(histogram, overflow_fraction)
    if exponent is None:
        return 0
    _, top = math.frexp(float(cfg.acc.max_value))
    return max(0, exponent - (top - 1))


def calibrate_scale_margins(
    model: nn.Module, cfg: MacConfig, batches, overflow_fraction: float = 1e-4
) -> dict[str, int]:
    """Per LBA layer of the (lbaified) ``model``, the :func:`margin_exponent` of its partial sums observed
    on ``batches`` by :func:`observe_partial_sums` (the bias calibration's data and exact sums), observed
    with the model's margins cleared, so the answer does not depend on margins set before."""
    previous = scale_margins(model)
    set_scale_margins(model, {name: 0 for name in previous})
    try:
        # sums below 2^(T + 1) never need a margin: skip the histograms where K * max|a| * max|b| is below
        histograms = observe_partial_sums(model, batches, below=2.0 ** math.frexp(float(cfg.acc.max_value))[1])
    finally:
        set_scale_margins(model, previous)
    return {name: margin_exponent(cfg, histogram, overflow_fraction) for name, histogram in histograms.items()}


def set_scale_margins(model: nn.Module, margins: dict[str, int]) -> None:
    """Give each named LBA layer the total operand margin ``margins[name]`` (m, a binade count): the
    activation (first operand) scale takes ceil(m / 2) binades and the weight (second operand) floor(m / 2),
    so that neither operand moves further toward underflow than it must. Their product's scale is 2^m
    larger; the layer's rescale after the accumulation multiplies by it, which undoes the shift exactly."""
    layers = dict(lba_layers(model))
    unknown = sorted(set(margins) - set(layers))
    if unknown:
        raise ConfigError(f"scale margins name layers the model does not have: {', '.join(unknown)}")
    for name, margin in margins.items():
        if int(margin) != margin or margin < 0:
            raise ConfigError(f"scale margin of layer {name!r} must be a whole number >= 0, got {margin!r}")
        layers[name].input_quantizer.margin = (int(margin) + 1) // 2
        layers[name].weight_quantizer.margin = int(margin) // 2


def scale_margins(model: nn.Module) -> dict[str, int]:
    """Each LBA layer's total operand margin m (both operands' binades together), in layer order."""
    return {name: layer.input_quantizer.margin + layer.weight_quantizer.margin for name, layer in lba_layers(model)}


def describe_scale_margins(margins: dict[str, int]) -> str:
    """A compact per-layer summary for a table cell: the margins in layer order joined by "/" (e.g.
    "5/6/4"), "0" when no layer has one, "" for no layers."""
    values = list(margins.values())
    return "0" if values and not any(values) else "/".join(str(value) for value in values)


def resolve_bias(cfg: MacConfig, mode: str, model: nn.Module | None = None, batches=None) -> MacConfig:
    """``cfg`` with its accumulator bias chosen by ``mode``: "format" (unchanged), "paper" or "calibrate"
    (needs the lbaified ``model`` and a few input ``batches``), or "margin": the bias unchanged and the
    ``model``'s operand scaling margins set by :func:`calibrate_scale_margins` (needs model and batches).
    An integer/fixed-point accumulator has no exponent bias: its binary point is part of its format, so
    every mode returns it unchanged (and "margin" sets no margin)."""
    if mode in BIAS_MODES and (cfg.fixed_acc or cfg.fused_acc):  # fused: the output format is the unit's
        return cfg
    if mode == "format":
        return cfg
    if mode == "margin":
        if model is None or batches is None:
            raise ConfigError("bias='margin' needs the converted model and a few batches of inputs")
        set_scale_margins(model, calibrate_scale_margins(model, cfg, batches))
        return cfg
    if mode == "paper":
        return paper_bias_config(cfg)
    if mode == "calibrate":
        if model is None or batches is None:
            raise ConfigError("bias='calibrate' needs the converted model and a few batches of inputs")
        return calibrate_bias_config(model, cfg, batches)
    raise ConfigError(f"unknown accumulator bias mode {mode!r}: choose one of {', '.join(BIAS_MODES)}")
