"""lbaify: put every Linear, Conv2d and MatMul of any model on the low-bit-width accumulator; helpers to
reconfigure the converted layers and to read their event counters."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

from torch import nn

from lba_core import ConfigError, MacConfig

from .estimators import check_estimator
from .layers import LBA_LAYER_TYPES, LBAConv2d, LBALinear, LBAMatMul, LBAModule, LayerOptions, MatMul, resolve_layer_options

SkipRule = str | type | Callable[[str, nn.Module], bool]

_FLOAT_TO_LBA = ((nn.Linear, LBALinear), (nn.Conv2d, LBAConv2d), (MatMul, LBAMatMul))


def _lba_class(module: nn.Module) -> type | None:
    if isinstance(module, LBA_LAYER_TYPES):
        return None
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


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name), child, new)


def lbaify(
    model: nn.Module,
    cfg: MacConfig,
    options: LayerOptions | None = None,
    *,
    skip=None,
    keep_first_last: bool = False,
    inplace: bool = False,
    **legacy_options,
) -> nn.Module:
    """Replace every nn.Linear, nn.Conv2d and :class:`MatMul` in ``model`` (at any depth) by its LBA layer.

    ``options`` (a :class:`LayerOptions`) says how the converted layers compute: estimator, event counting,
    per-channel and power-of-two scales. ``skip``: a module name, a module type, a predicate
    ``f(name, module) -> bool``, or a list of these; a skipped container keeps everything inside it in high
    precision. ``keep_first_last`` keeps the first and the last Linear/Conv2d (in registration order) in high
    precision, as is common for quantized networks. ``inplace=False`` converts a deep copy and leaves
    ``model`` untouched. Returns the converted model.

    The loose keywords of earlier releases (``estimator=``, ``collect_stats=``, ...) still work with a
    DeprecationWarning, as does ``skip`` given as the third positional argument.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lbaify expects an nn.Module, got {type(model).__name__}")
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"lbaify needs a lba_core.MacConfig, got {type(cfg).__name__}")
    if options is not None and not isinstance(options, LayerOptions):
        warnings.warn("lbaify: skip as the third positional argument is deprecated; pass skip=...",
                      DeprecationWarning, stacklevel=2)
        skip, options = options, None
    options = resolve_layer_options(options, legacy_options, "lbaify")
    rules = _skip_rules(skip)
    target = model if inplace else copy.deepcopy(model)
    modules = dict(target.named_modules())
    for name, module in modules.items():
        if isinstance(module, nn.MultiheadAttention):
            # Its projections are used through F.multi_head_attention_forward, never through forward().
            warnings.warn(f"lbaify: {name or 'model'} is nn.MultiheadAttention, whose products cannot be "
                          "replaced; it stays in high precision (use lba_train.models.Attention instead)")
            rules.append(name)
    candidates = [(name, module) for name, module in modules.items() if _lba_class(module) is not None]
    weighted = [name for name, module in candidates if not isinstance(module, MatMul)]
    kept = {weighted[0], weighted[-1]} if keep_first_last and weighted else set()
    for name, module in candidates:
        if name in kept or any(_matches(rule, prefix, modules[prefix]) for prefix in _ancestry(name) for rule in rules):
            continue
        _replace(target, name, _lba_class(module).from_float(module, cfg, options))
    return target


def lba_layers(model: nn.Module) -> list[tuple[str, LBAModule]]:
    """(name, layer) of every LBA layer in ``model``, in registration order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, LBA_LAYER_TYPES)]


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
        if underflow is not None:
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

