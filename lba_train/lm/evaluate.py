"""The language model on an accumulator: test bits per byte, the paired difference from a baseline row,
KL divergence and top-1 agreement to the float model's next-byte distribution, per-layer events and
non-finite outputs, and the time per point.

Every row converts the float model with :func:`~lba_train.convert.lbaify` (every Linear and both attention
products on the accumulator) and then fixes each activation operand's scale to a range calibrated on
training windows (:func:`freeze_operand_ranges`: max-abs, with exact accumulation), as an inference
accelerator does. Static scales make each window's result independent of which windows share its batch (the
bootstrap treats windows as independent) and make KV-cache decoding bit-identical to the full forward.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from lba_core import ConfigError, MacConfig

from ..bias import BIAS_MODES, resolve_bias, scale_margins
from ..convert import event_stats_table, lba_layers, lbaify, set_lba_config
from ..layers import LayerOptions, LBAMatMul
from ..products import LBAProducts
from .model import ByteLM
from .stats import CONFIDENCE, RESAMPLES, Interval, bootstrap_mean, paired_difference
from .windows import evaluation_windows

LN2 = math.log(2.0)


@dataclass(frozen=True)
class LMEvalOptions:
    """Evaluation windows (of ``context + 1`` bytes) from the test documents, calibration windows from the
    training documents, batch size, bootstrap settings, the converted layers' options, threads."""

    windows: int = 32
    calibration_windows: int = 8
    batch: int = 8
    resamples: int = RESAMPLES
    confidence: float = CONFIDENCE
    seed: int = 0
    layer_options: LayerOptions = field(default_factory=LayerOptions)
    threads: int | None = None
    #: Every operand range (activations and weights) widened by 2**margin before scaling, so that the largest
    #: operand lands 2**-margin below the input format's maximum; 0 = plain max-abs scaling.
    margin_log2: int = 0
    #: How the accumulator is fitted to the operands after their ranges are fixed (lba_train.bias.BIAS_MODES):
    #: "format" keeps ``cfg``; "calibrate"/"paper" choose its bias, "margin" per-layer power-of-two operand
    #: margins (fixed-bias accumulators), both on the calibration windows.
    bias: str = "format"

    def __post_init__(self) -> None:
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"LMEvalOptions.bias must be one of {', '.join(BIAS_MODES)}, got {self.bias!r}")
        for name in ("windows", "calibration_windows", "batch", "resamples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LMEvalOptions.{name} must be positive, got {getattr(self, name)}")
        if not isinstance(self.margin_log2, int) or self.margin_log2 < 0:
            raise ConfigError(f"LMEvalOptions.margin_log2 must be a non-negative integer, got {self.margin_log2!r}")


@dataclass
class ModelOutputs:
    """What one model predicts on the evaluation windows: per-window bits per byte, the next-byte
    log-probabilities (float64, windows x positions x vocab) and the non-finite logits."""

    bpb: torch.Tensor
    log_probs: torch.Tensor
    nan: int = 0
    inf: int = 0


@dataclass
class LMPoint:
    """One accumulator's row. ``delta_bpb`` is paired with the baseline row named ``baseline`` (None for the
    baseline itself); ``kl_bits`` (KL(float || row) per byte, in bits) and ``top1`` (share of positions whose
    most likely next byte is the float model's) compare with the float model. ``layers``: one entry per LBA
    layer with its event counts and rates and the NaN/Inf values it produced. ``per_window``: the per-window
    values behind the intervals."""

    name: str
    config: dict
    bpb: Interval
    kl_bits: Interval
    top1: Interval
    delta_bpb: Interval | None
    baseline: str | None
    nan: int
    inf: int
    layers: list[dict]
    windows: int
    tokens: int
    seconds: float
    per_window: dict[str, list[float]]
    #: How the accumulator was fitted (LMEvalOptions.bias) and each LBA layer's operand margin (binades).
    bias_mode: str = "format"
    scale_margins: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def model_context(model: nn.Module) -> int:
    """How many bytes of context ``model`` reads: ``model.cfg.context`` (a ByteLM) or ``model.context`` (any
    other module that maps (batch, T) byte ids to (batch, T, 256) next-byte logits)."""
    context = getattr(getattr(model, "cfg", None), "context", None)
    context = getattr(model, "context", None) if context is None else context
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ConfigError(f"{type(model).__name__}: a language model needs a positive integer context length in "
                          f"model.cfg.context or model.context, got {context!r}")
    return context


def test_windows(model: nn.Module, documents: dict[str, bytes], count: int | None) -> torch.Tensor:
    """``count`` evaluation windows of ``context + 1`` bytes (inputs and targets) evenly spread over ``documents``."""
    return evaluation_windows(documents, model_context(model) + 1, count)


def _operand_quantizers(model: nn.Module) -> list[nn.Module]:
    """The quantizers of every activation operand: each layer's input, and a MatMul's second operand."""
    quantizers = []
    for _, layer in lba_layers(model):
        if isinstance(layer, LBAProducts):  # shared by unrelated products: it keeps dynamic scales
            continue
        quantizers.append(layer.input_quantizer)
        if isinstance(layer, LBAMatMul):
            quantizers.append(layer.weight_quantizer)
    return quantizers


@torch.no_grad()
def freeze_operand_ranges(model: nn.Module, windows: torch.Tensor, batch: int = 8, margin_log2: int = 0) -> int:
    """Fix every activation operand's max-abs range of ``model`` (converted by lbaify) to the largest seen on
    the input ``windows`` (exact accumulation, no events counted). With ``margin_log2`` > 0 every range, the
    weights' too, is widened by 2**margin_log2 (operands scaled down by that power of two). Returns how many
    ranges were fixed."""
    quantizers = _operand_quantizers(model)
    observed: dict[nn.Module, torch.Tensor] = {}

    def observe(quantizer, inputs):
        amax = quantizer.observed_amax(inputs[0])
        observed[quantizer] = torch.maximum(observed[quantizer], amax) if quantizer in observed else amax

    layers = [layer for _, layer in lba_layers(model)]
    saved = [(layer, layer.exact_accumulation, layer.stats) for layer in layers]
    for quantizer in quantizers:
        quantizer.unfreeze()
    hooks = [quantizer.register_forward_pre_hook(observe) for quantizer in quantizers]
    try:
        for layer in layers:
            layer.exact_accumulation, layer.stats = True, None
        for start in range(0, windows.shape[0], batch):
            model(windows[start:start + batch])
    finally:
        for hook in hooks:
            hook.remove()
        for layer, exact, stats in saved:
            layer.exact_accumulation, layer.stats = exact, stats
    widen = 2.0 ** margin_log2
    for quantizer in quantizers:
        quantizer.freeze(observed[quantizer] * widen)
    if margin_log2:
        for _, layer in lba_layers(model):
            if not isinstance(layer, (LBAMatMul, LBAProducts)):
                layer.weight_quantizer.freeze(layer.weight_quantizer.observed_amax(layer.weight) * widen)
    return len(quantizers)


@torch.no_grad()
def model_outputs(model: nn.Module, windows: torch.Tensor, batch: int = 8) -> ModelOutputs:
    """Run ``model`` on the windows' first ``context`` bytes and score their next bytes."""
    bpb, log_probs, nan, inf = [], [], 0, 0
    for start in range(0, windows.shape[0], batch):
        chunk = windows[start:start + batch]
        logits = model(chunk[:, :-1]).to(torch.float64)
        nan += int(torch.isnan(logits).sum())
        inf += int(torch.isinf(logits).sum())
        logp = torch.log_softmax(logits, dim=-1)
        bpb.append(-logp.gather(-1, chunk[:, 1:, None]).squeeze(-1).mean(dim=1) / LN2)
        log_probs.append(logp)
    return ModelOutputs(torch.cat(bpb), torch.cat(log_probs), nan, inf)


def _nonfinite_hooks(model: nn.Module) -> tuple[dict[str, list[int]], list]:
    counts: dict[str, list[int]] = {}
    handles = []
    for name, layer in lba_layers(model):
        counts[name] = [0, 0]

        def hook(module, inputs, output, name=name):
            counts[name][0] += int(torch.isnan(output).sum())
            counts[name][1] += int(torch.isinf(output).sum())

        handles.append(layer.register_forward_hook(hook))
    return counts, handles


def compare(outputs: ModelOutputs, reference: ModelOutputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window: mean KL(reference || outputs) in bits per byte, and the top-1 agreement."""
    p = reference.log_probs.exp()
    kl = (p * (reference.log_probs - outputs.log_probs)).sum(dim=-1).mean(dim=1) / LN2
    agree = (outputs.log_probs.argmax(dim=-1) == reference.log_probs.argmax(dim=-1)).to(torch.float64).mean(dim=1)
    return kl, agree


def convert_for_evaluation(model: nn.Module, cfg: MacConfig, calibration: torch.Tensor,
                           options: LMEvalOptions = LMEvalOptions()) -> tuple[nn.Module, MacConfig]:
    """A converted copy of the float ``model`` on ``cfg`` (lbaify; ``model`` untouched), its activation
    operand ranges frozen on the ``calibration`` windows and its accumulator fitted by ``options.bias`` on
    them; returns it and the fitted configuration."""
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"evaluate_point needs a lba_core.MacConfig, got {type(cfg).__name__}")
    converted = lbaify(model, cfg, options.layer_options, intercept=False).eval()
    freeze_operand_ranges(converted, calibration, options.batch, options.margin_log2)
    if options.bias != "format":
        cfg = resolve_bias(cfg, options.bias, converted, list(calibration.split(options.batch)))
        set_lba_config(converted, cfg)
    return converted, cfg


def score_converted(converted: nn.Module, cfg: MacConfig, windows: torch.Tensor, reference: ModelOutputs,
                    baseline: LMPoint | None = None, options: LMEvalOptions = LMEvalOptions(),
                    started: float | None = None) -> LMPoint:
    """The row of an already converted and fitted model (``cfg``: its fitted configuration) on the test
    ``windows``; ``started`` (a time.perf_counter() value) is when the row's work began."""
    started = time.perf_counter() if started is None else started
    counts, handles = _nonfinite_hooks(converted)
    try:
        outputs = model_outputs(converted, windows, options.batch)
    finally:
        for handle in handles:
            handle.remove()
    layers = event_stats_table(converted)
    for row in layers:
        row["nan"], row["inf"] = counts[row["layer"]]
    kl, agree = compare(outputs, reference)
    bootstrap = dict(resamples=options.resamples, seed=options.seed, confidence=options.confidence)
    delta = None if baseline is None else paired_difference(
        outputs.bpb.numpy(), baseline.per_window["bpb"], **bootstrap)
    return LMPoint(
        name=cfg.name, config=cfg.to_dict(), bpb=bootstrap_mean(outputs.bpb.numpy(), **bootstrap),
        kl_bits=bootstrap_mean(kl.numpy(), **bootstrap), top1=bootstrap_mean(agree.numpy(), **bootstrap),
        delta_bpb=delta, baseline=None if baseline is None else baseline.name, nan=outputs.nan, inf=outputs.inf,
        layers=layers, windows=int(windows.shape[0]), tokens=int(windows.shape[0] * (windows.shape[1] - 1)),
        seconds=time.perf_counter() - started,
        per_window={"bpb": outputs.bpb.tolist(), "kl_bits": kl.tolist(), "top1": agree.tolist()},
        bias_mode=options.bias, scale_margins=scale_margins(converted),
    )


def evaluate_point(model: ByteLM, cfg: MacConfig, windows: torch.Tensor, calibration: torch.Tensor,
                   reference: ModelOutputs, baseline: LMPoint | None = None,
                   options: LMEvalOptions = LMEvalOptions()) -> LMPoint:
    """One accumulator's row: lbaify ``model`` (float, untouched) onto ``cfg``, fix the operand ranges on
    ``calibration`` windows, evaluate on ``windows``; ``reference`` is the float model's outputs on them."""
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"evaluate_point needs a lba_core.MacConfig, got {type(cfg).__name__}")
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    started = time.perf_counter()
    converted, cfg = convert_for_evaluation(model, cfg, calibration, options)
    return score_converted(converted, cfg, windows, reference, baseline, options, started)


@dataclass
class LMEvaluation:
    """The float model's bits per byte and one row per accumulator (the first is every row's baseline)."""

    float_bpb: Interval
    points: list[LMPoint]
    windows: int
    options: dict

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_accumulators(model: ByteLM, test: dict[str, bytes], calibration: dict[str, bytes],
                          cfgs: list[MacConfig], options: LMEvalOptions = LMEvalOptions(), progress=None) -> LMEvaluation:
    """Zero-shot rows for ``cfgs`` on ``test`` documents, operand ranges calibrated on ``calibration``
    documents; the first configuration is the baseline of every paired difference (put the fp32-accumulator
    row first). ``progress(point)`` is called after each row."""
    if not cfgs:
        raise ConfigError("evaluate_accumulators: no accumulator configurations")
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    model = model.eval()
    windows = test_windows(model, test, options.windows)
    calibration_windows = test_windows(model, calibration, options.calibration_windows)[:, :-1]
    reference = model_outputs(model, windows, options.batch)
    bootstrap = dict(resamples=options.resamples, seed=options.seed, confidence=options.confidence)
    points: list[LMPoint] = []
    for cfg in cfgs:
        point = evaluate_point(model, cfg, windows, calibration_windows, reference, points[0] if points else None,
                               options)
        points.append(point)
        if progress is not None:
            progress(point)
    return LMEvaluation(bootstrap_mean(reference.bpb.numpy(), **bootstrap), points, int(windows.shape[0]),
                        asdict(options))
