"""Validation of a MacConfig for the circuit generator; its datapath widths come from lba_core.datapath.

Everything here is plain Python on lba_core objects: it runs before any Amaranth elaboration, so a bad
configuration fails with a ConfigError naming the problem instead of an Amaranth traceback.
"""

from __future__ import annotations

from fractions import Fraction

from lba_core import ConfigError, DatapathPlan, FloatFormat, MacConfig, derive_datapath


def plan_datapath(cfg: MacConfig) -> DatapathPlan:
    """Check that the generator can build cfg and return its datapath; raises ConfigError otherwise."""
    check_config(cfg)
    return derive_datapath(cfg)


def check_config(cfg: MacConfig) -> None:
    """Reject what no circuit implements, before elaboration."""
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"the RTL generator needs an lba_core.MacConfig, got {type(cfg).__name__}")
    if not cfg.underflow:
        raise ConfigError(
            "MacConfig.underflow=False is a simulation-only mode (docs/arithmetic.md §6); "
            "the RTL generator always builds underflow=True"
        )
    smallest = cfg.a_format.min_positive * cfg.b_format.min_positive
    largest = cfg.a_format.max_value * cfg.b_format.max_value
    if cfg.product is not None:
        check_overlap("product format", cfg.product, smallest, largest, cfg)
        smallest = max(smallest, cfg.product.min_positive)
        largest = min(largest, cfg.product.max_value)
    check_overlap("accumulator", cfg.acc, smallest, largest, cfg)


def check_overlap(role: str, fmt: FloatFormat, smallest: Fraction, largest: Fraction, cfg: MacConfig) -> None:
    """A format that flushes every product, or saturates every product, is a configuration mistake."""
    if largest < fmt.min_positive / 2:
        raise ConfigError(
            f"{cfg.name}: the {role} {fmt.name} cannot hold any product: the largest product "
            f"{float(largest):g} is below half its smallest value {float(fmt.min_positive):g}, so every product "
            "would underflow (raise the exponent range or change the bias)"
        )
    if smallest > fmt.max_value:
        raise ConfigError(
            f"{cfg.name}: the {role} {fmt.name} cannot hold any product: the smallest product "
            f"{float(smallest):g} exceeds its maximum {float(fmt.max_value):g}, so every product would saturate"
        )
