"""Integer post-training quantization and A2Q for integer/fixed-point accumulators (docs/training.md).

- :func:`integer_ptq` is the standard INT8 PTQ of an lbaified model whose operands are integers: one weight
  scale per output channel (max-abs, so exact for the weights) and activation ranges calibrated on a few
  batches (the max |x| each layer's input sees) and then frozen, as an integer inference accelerator runs.
  :func:`finetune` applies it to every configuration with integer operands, so those models can then be
  fine-tuned with the same recipe as the floating-point ones.
- :func:`apply_a2q` bounds each output channel's quantized weights so that the W-bit integer accumulator
  cannot overflow (A2Q, Colbert et al., ICCV 2023): with |a| <= 2^(Na-1) for Na-bit two's-complement
  activations, every partial sum satisfies |s| <= 2^(Na-1) * ||w_int||_1 <= 2^(W-1) - 1 when
  ||w_int||_1 <= :func:`a2q_l1_bound`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lba_core import ConfigError, FixedFormat, MacConfig

from .convert import lba_layers
from .layers import LBAMatMul


def integer_operands(cfg: MacConfig) -> bool:
    """Whether cfg's operands are integer/fixed-point codes (the configurations that get integer PTQ)."""
    return isinstance(cfg.a_format, FixedFormat) and isinstance(cfg.b_format, FixedFormat)


@torch.no_grad()
def integer_ptq(model: nn.Module, cfg: MacConfig, batches) -> None:
    """Per-channel weight scales and calibrated, frozen activation ranges on every LBA layer of ``model``.

    ``batches`` are model inputs. Nothing happens unless ``cfg`` has integer operands. The calibration
    forward passes use exact accumulation (the quantized operands' exact products), so they need no
    accumulator simulation and count no events.
    """
    if not integer_operands(cfg):
        return
    layers = [layer for _, layer in lba_layers(model)]
    observed: dict[nn.Module, torch.Tensor] = {}

    def observe(quantizer, inputs):
        amax = quantizer.observed_amax(inputs[0])
        observed[quantizer] = torch.maximum(observed[quantizer], amax) if quantizer in observed else amax

    activation_quantizers = []
    for layer in layers:
        layer.input_quantizer.unfreeze()
        activation_quantizers.append(layer.input_quantizer)
        if isinstance(layer, LBAMatMul):  # both operands are activations
            layer.weight_quantizer.unfreeze()
            activation_quantizers.append(layer.weight_quantizer)
        else:
            layer.weight_quantizer.per_channel = True
            layer.weight_quantizer.channel_dim = 0
    hooks = [quantizer.register_forward_pre_hook(observe) for quantizer in activation_quantizers]
    previous = {layer: layer.exact_accumulation for layer in layers}
    mode = model.training
    try:
        model.eval()
        for layer in layers:
            layer.exact_accumulation = True
        seen = 0
        for inputs in batches:
            model(inputs)
            seen += 1
        if not seen:
            raise ConfigError("integer_ptq: the calibration needs at least one batch of inputs")
    finally:
        for hook in hooks:
            hook.remove()
        for layer in layers:
            layer.exact_accumulation = previous[layer]
        model.train(mode)
    for quantizer in activation_quantizers:
        if quantizer in observed:
            quantizer.freeze(observed[quantizer])


def a2q_l1_bound(cfg: MacConfig) -> int:
    """The largest ||w_int||_1 per output channel for which cfg's integer accumulator cannot overflow.

    |a_k| <= 2^(Na-1) (the most negative code included), so |any partial sum| <= 2^(Na-1) * ||w_int||_1 <=
    2^(W-1) - 1. The bound holds in every order, with or without chunks, wrapping or saturating.
    """
    if not cfg.fixed_acc or not integer_operands(cfg) or cfg.a_format.frac_bits or cfg.b_format.frac_bits:
        raise ConfigError(f"{cfg.name}: A2Q needs integer operands and an integer accumulator (e.g. int8 -> int16_sat)")
    if cfg.acc.frac_bits:
        raise ConfigError(f"{cfg.name}: A2Q needs an integer accumulator (frac_bits = 0), got {cfg.acc.name}")
    largest_activation = 1 << (cfg.a_format.width - 1)
    return math.floor(cfg.acc.max_int / largest_activation)


def apply_a2q(model: nn.Module, cfg: MacConfig) -> int:
    """Bound every weight channel of the LBA layers (not activation products) by :func:`a2q_l1_bound`.

    The weight quantizer shrinks a channel whose scaled L1 norm exceeds the bound and rounds toward zero,
    so the accumulator provably never overflows; returns the bound.
    """
    bound = a2q_l1_bound(cfg)
    for _, layer in lba_layers(model):
        if not isinstance(layer, LBAMatMul):
            layer.weight_quantizer.l1_bound = float(bound)
    return bound
