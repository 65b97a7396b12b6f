"""lbaify: put every matrix product of any model on the low-bit-width accumulator (module swapping for
Linear, Conv1d, Conv2d, transformers' Conv1D and MatMul; unrolled attention and recurrent layers;
lba_train.products for the torch-function products; docs/operations.md); helpers to reconfigure the converted
layers, read their event counters and measure what runs where (lba_train.coverage)."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from lba_core import ConfigError, MacConfig

from .estimators import check_estimator
from .layers import (
    LBA_LAYER_TYPES, LBAConv1d, LBAConv2d, LBALinear, LBAMatMul, LBAModule, LayerOptions, MatMul,
    is_transformers_conv1d, resolve_layer_options,
)
from .coverage import AccumulatorCoverage, measure_macs
from .products import (
    PRODUCTS_NAME, LBAProducts, UnfusedMultiheadAttention, add_suspension, attach_products, products_of,
)
from .recurrent import UNFUSED_RECURRENT

SkipRule = str | type | Callable[[str, nn.Module], bool]

_FLOAT_TO_LBA = ((nn.Linear, LBALinear), (nn.Conv1d, LBAConv1d), (nn.Conv2d, LBAConv2d), (MatMul, LBAMatMul))

#: Modules whose products reach the accumulator only through the interception of torch functions (their
#: forward calls F.conv3d, F.conv_transpose*, F.bilinear, or they are unrolled: _UNFUSED); with
#: ``intercept=False`` they stay in float and are reported as such.
UNCONVERTED_TYPES = (nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear,
                     nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase)

#: Modules torch runs as one fused kernel, swapped (exact type) for the same computation op by op.
_UNFUSED = {nn.MultiheadAttention: UnfusedMultiheadAttention, **UNFUSED_RECURRENT}


def _lba_class(module: nn.Module) -> type | None:
    if isinstance(module, LBA_LAYER_TYPES):
        return None
    if is_transformers_conv1d(module):
        return LBALinear
    if getattr(module, "padding_mode", "zeros") != "zeros":
        return None  # it pads with F.pad, then calls F.conv*d: intercepted (docs/operations.md)
    if getattr(module, "padding", None) == "same" and any(
            d * (k - 1) % 2 for k, d in zip(module.kernel_size, module.dilation)):
        return None  # asymmetric 'same' padding: F.conv*d, intercepted (lba_train.lowering pads as torch does)
    for float_type, lba_type in _FLOAT_TO_LBA:
        if isinstance(module, float_type):
            return lba_type
    return None


def _skip_rules(skip) -> list[SkipRule]:
    if skip is None:
        return []
    rules = [skip] if isinstance(skip, (str, type)) or callable(skip) else list(skip)
    for rule in rules:
        if not (isinstance(rule, (str, type)) or callable(rule)):
            raise ConfigError(f"lbaify: skip entries must be module names, module types or predicates, got {rule!r}")
    return rules


def _matches(rule: SkipRule, name: str, module: nn.Module) -> bool:
    if isinstance(rule, str):
        return name == rule
    if isinstance(rule, type):
        return isinstance(module, rule)
    return bool(rule(name, module))


def _ancestry(name: str) -> list[str]:
    """``a.b.c`` -> ['', 'a', 'a.b', 'a.b.c']: a rule that matches a container skips what is inside it."""
    parts = name.split(".") if name else []
    return [""] + [".".join(parts[: i + 1]) for i in range(len(parts))]


def _replace(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where ``name`` is in ``root``; returns the root (``new`` itself when ``name`` is the root)."""
    if not name:
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name), child, new)
    return root


def _example_call(example_inputs) -> tuple[tuple, dict]:
    if isinstance(example_inputs, dict):
        return (), example_inputs
    if isinstance(example_inputs, tuple):
        return example_inputs, {}
    return (example_inputs,), {}


def lbaify(
    model: nn.Module,
    cfg: MacConfig,
    options: LayerOptions | None = None,
    *,
    skip=None,
    keep_first_last: bool = False,
    inplace: bool = False,
    intercept: bool = True,
    example_inputs=None,
    strict: bool = False,
) -> nn.Module:
    """Put every matrix product of ``model``'s forward on the accumulator of ``cfg``; returns the model.

    Modules are swapped at any depth: nn.Linear and transformers' Conv1D -> LBALinear, nn.Conv1d/Conv2d ->
    LBAConv1d/LBAConv2d, :class:`MatMul` -> LBAMatMul. With ``intercept`` (default), the products the forward
    computes with torch functions (torch.matmul, bmm, addmm, einsum, F.linear, F.conv*, F.conv_transpose*,
    F.bilinear, F.scaled_dot_product_attention, ...: docs/operations.md lists them) go to the accumulator too
    (lba_train.products), with the same ``options``; nn.MultiheadAttention, nn.RNN/LSTM/GRU and their cells
    are swapped for the same computation op by op (lba_train.recurrent), whose products are intercepted.

    ``options`` (a :class:`LayerOptions`) says how the converted layers compute: estimator, event counting,
    per-channel and power-of-two scales. ``skip``: a module name, a module type, a predicate
    ``f(name, module) -> bool``, or a list of these; a skipped module keeps everything it computes (also its
    torch-function products) in high precision. ``keep_first_last`` keeps the first and the last weighted
    layer (in registration order) in high precision. ``inplace=False`` converts a deep copy and leaves
    ``model`` untouched.

    The returned model's ``lba_coverage`` (an :class:`AccumulatorCoverage`) lists what was converted and what
    stays in float; with ``example_inputs`` (a tensor, a tuple of positional inputs or a dict of keyword
    inputs) it also has the share of one forward's MACs that run on the accumulator (see
    :func:`accumulator_coverage`). A warning names every module whose forward MACs stay in float (outside what
    ``skip``/``keep_first_last`` asked for) with its share of the example forward's MACs, and every module of a
    kind that stays in float; ``strict=True`` raises a ConfigError instead.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lbaify expects an nn.Module, got {type(model).__name__}")
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"lbaify needs a lba_core.MacConfig, got {type(cfg).__name__}")
    if not isinstance(strict, bool):
        raise ConfigError(f"lbaify: strict must be True or False, got {strict!r}")
    options = resolve_layer_options(options, "lbaify")
    rules = _skip_rules(skip)
    target = model if inplace else copy.deepcopy(model)
    needs_interception = []  # with intercept=False: modules whose products stay in float, with what is inside
    for name, module in list(target.named_modules()):
        if any(_matches(rule, name, module) for rule in rules):
            continue
        if not intercept and isinstance(module, UNCONVERTED_TYPES):
            needs_interception.append(name)
        unfused = _UNFUSED.get(type(module))
        if unfused is None or not intercept:
            continue
        # F.multi_head_attention_forward and the fused RNN kernels dispatch as a whole: compute them op by op
        target = _replace(target, name, unfused.from_float(module))
    modules = dict(target.named_modules())
    skipped = [name for name, module in modules.items() if any(_matches(rule, name, module) for rule in rules)]
    candidates = [(name, module) for name, module in modules.items() if _lba_class(module) is not None]
    weighted = [name for name, module in candidates if not isinstance(module, MatMul)]
    kept = [weighted[0], weighted[-1]] if keep_first_last and weighted else []
    coverage = AccumulatorCoverage(intercepts_products=intercept)
    for name in skipped + kept:
        coverage.kept_float[name] = type(modules[name]).__name__
        coverage.kept_by_request.append(name)
    for name, module in candidates:
        if name in kept or any(prefix in skipped or prefix in needs_interception for prefix in _ancestry(name)):
            continue
        layer = _lba_class(module).from_float(module, cfg, options)
        if not is_transformers_conv1d(module) and not isinstance(module, MatMul):
            # The converted model owns ``module`` (a copy, or inplace): keep its Parameter objects, so that
            # weights tied to other modules (a language model's head and its embedding) stay tied.
            layer.weight, layer.bias = module.weight, module.bias
        target = _replace(target, name, layer)
        coverage.converted[name] = type(layer).__name__
    for name, module in modules.items():
        inside_kept = any(prefix in coverage.kept_float for prefix in _ancestry(name))
        if isinstance(module, UNCONVERTED_TYPES) and not intercept and not inside_kept:
            coverage.kept_float[name] = type(module).__name__
    if intercept:
        own_products = [layer for _, layer in lba_layers(target) if not isinstance(layer, LBAProducts)]
        own_products += [target.get_submodule(name) for name in coverage.kept_float]
        existing = products_of(target)
        if existing is None:
            attach_products(target, LBAProducts(cfg=cfg, **options.as_kwargs()), own_products)
        else:  # a second lbaify of a converted model: only the new modules need to suspend the interception
            for name in [*coverage.converted, *coverage.kept_float]:
                add_suspension(target.get_submodule(name), existing)
    target.lba_coverage = coverage
    _report_float(coverage, strict)
    if example_inputs is not None:
        accumulator_coverage(target, example_inputs)
        _report_float(coverage, strict)
    if not any(not isinstance(layer, LBAProducts) for _, layer in lba_layers(target)):
        if not intercept:
            warnings.warn("lbaify: nothing was converted: the model has no Linear, Conv1d, Conv2d, Conv1D or "
                          "MatMul outside what is skipped, and intercept=False")
        elif coverage.macs_accumulator is None:
            warnings.warn("lbaify: no layer was converted; only products computed with torch functions during "
                          "forward will run on the accumulator (pass example_inputs= to measure the share)")
    return target


def _report_float(coverage: AccumulatorCoverage, strict: bool) -> None:
    """Warn (``strict``: raise) about products that stay in float although nobody asked: before a measurement,
    the modules of a kind that needs the interception; after it, every module with float MACs."""
    if coverage.macs_accumulator is None:
        unasked = {name: kind for name, kind in coverage.kept_float.items() if name not in coverage.kept_by_request}
        if not unasked:
            return
        message = ("lbaify: the products of " + ", ".join(f"{name or 'model'} ({kind})" for name, kind in
                                                          unasked.items())
                   + " stay in float (they need intercept=True)")
    else:
        unasked = coverage.unrequested_float()
        if not unasked:
            if coverage.macs_accumulator == 0:
                warnings.warn(f"lbaify: none of the {coverage.macs_float:,} MACs of the example forward runs on "
                              "the accumulator", stacklevel=3)
            return
        total = coverage.macs_accumulator + coverage.macs_float
        share = sum(unasked.values()) / total
        lead = (f"none of the {coverage.macs_float:,} MACs of the example forward runs on the accumulator"
                if coverage.macs_accumulator == 0 else
                f"{100 * share:.2f}% of the example forward's {total:,} MACs stay in float")
        message = f"lbaify: {lead}: {coverage.float_report()}"
    if strict:
        raise ConfigError(message + " (strict=True)")
    warnings.warn(message, stacklevel=3)


def accumulator_coverage(model: nn.Module, example_inputs) -> AccumulatorCoverage:
    """Run one forward of ``model`` (converted by :func:`lbaify`) on ``example_inputs`` (a tensor, a tuple
    of positional inputs or a dict of keyword inputs) and record how many of its multiply-accumulates ran on
    the accumulator and how many in float, per operator, in ``model.lba_coverage`` (returned). Gradients are
    off, event counters and training mode are left as they were."""
    coverage = getattr(model, "lba_coverage", None)
    if not isinstance(coverage, AccumulatorCoverage):
        raise ConfigError("accumulator_coverage needs a model converted by lbaify")
    args, kwargs = _example_call(example_inputs)
    layers = [layer for _, layer in lba_layers(model)]
    coverage.macs_accumulator, floats = measure_macs(model, layers, args, kwargs)
    coverage.float_ops, coverage.float_sources = floats.macs, floats.sources
    coverage.macs_float = sum(coverage.float_ops.values())
    return coverage


def lba_layers(model: nn.Module) -> list[tuple[str, LBAModule]]:
    """(name, layer) of every LBA layer in ``model``, in registration order, then the interceptor of its
    torch-function products (named ``lba_products``) if it has one."""
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, LBA_LAYER_TYPES)]
    products = products_of(model)
    return layers + ([(PRODUCTS_NAME, products)] if products is not None else [])


def set_lba_config(
    model: nn.Module,
    cfg: MacConfig | None = None,
    *,
    underflow: bool | None = None,
    estimator: str | None = None,
    exact_accumulation: bool | None = None,
) -> int:
    """Give every LBA layer of ``model`` the configuration ``cfg`` and/or the ``underflow`` switch (the two
    fine-tuning stages), a backward ``estimator``, or exact (wide) accumulation. Returns how many layers
    were changed."""
    if estimator is not None:
        check_estimator(estimator, "set_lba_config")
    layers = lba_layers(model)
    for _, layer in layers:
        if cfg is not None:
            layer.set_config(cfg)
        if underflow is not None and not layer.cfg.fused_acc:  # a fused unit has no underflow switch (docs §9)
            layer.set_underflow(underflow)
        if estimator is not None:
            layer.estimator = estimator
        if exact_accumulation is not None:
            layer.exact_accumulation = bool(exact_accumulation)
    return len(layers)


def set_collect_stats(model: nn.Module, collect: bool) -> None:
    """Switch event counting on (with fresh counters) or off on every LBA layer."""
    for _, layer in lba_layers(model):
        layer.set_collect_stats(collect)


def event_stats_table(model: nn.Module) -> list[dict]:
    """One row per LBA layer: its name, type, configuration and (when counting) its EventStats.as_dict()."""
    rows = []
    for name, layer in lba_layers(model):
        row = {"layer": name, "type": type(layer).__name__, "cfg": layer.cfg.name}
        if layer.stats is not None:
            row.update(layer.stats.as_dict())
        rows.append(row)
    return rows



def layer_dot_products(model: nn.Module, example_inputs) -> dict[str, dict[str, int]]:
    """Per LBA layer of ``model`` (converted by :func:`lbaify`), from one forward of ``example_inputs`` (a
    tensor, a tuple of positional inputs or a dict of keyword inputs): ``k``, the products each of its dot
    products sums (a Linear's in_features, a convolution's in_channels/groups x kernel size, a MatMul's inner
    dimension), ``dots``, how many dot products it computed, and ``macs`` = k x dots. Layers that did not run
    are absent, as is the torch-function interceptor (its products differ in K call by call). The forward
    runs without gradients, with exact accumulation and counters off; modes and counters are restored."""
    layers = [(name, layer) for name, layer in lba_layers(model) if not isinstance(layer, LBAProducts)]
    shapes: dict[str, dict[str, int]] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            weight = getattr(module, "weight", None)
            k = math.prod(weight.shape[1:]) if isinstance(weight, torch.Tensor) else inputs[0].shape[-1]
            entry = shapes.setdefault(name, {"k": int(k), "dots": 0, "macs": 0})
            if entry["k"] != k:  # a module called with several inner dimensions has no single K
                raise ValueError(f"layer {name} sums dot products of {entry['k']} and of {k} products")
            entry["dots"] += output.numel()
            entry["macs"] = entry["k"] * entry["dots"]

        return hook

    saved = [(layer, layer.stats, layer.exact_accumulation) for _, layer in layers]
    handles = [layer.register_forward_hook(record(name)) for name, layer in layers]
    was_training = model.training
    args, kwargs = _example_call(example_inputs)
    try:
        model.eval()
        for _, layer in layers:
            layer.stats, layer.exact_accumulation = None, True
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        for layer, stats, exact in saved:
            layer.stats, layer.exact_accumulation = stats, exact
        model.train(was_training)
    return shapes
