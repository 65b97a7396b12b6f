"""Validation of a MacConfig for the circuit generator; its datapath widths come from lba_core.datapath,
derived once per export and handed to every component built for it (component_plan).

Everything here is plain Python on lba_core objects: it runs before any Amaranth elaboration, so a bad
configuration fails with a ConfigError naming the problem instead of an Amaranth traceback.
"""

from __future__ import annotations

from fractions import Fraction

from lba_core import ConfigError, DatapathPlan, FixedDatapathPlan, FloatFormat, MacConfig, derive_datapath


def plan_datapath(cfg: MacConfig) -> DatapathPlan:
    """Check that the generator can build cfg and return its datapath; raises ConfigError otherwise."""
    check_config(cfg)
    return derive_datapath(cfg)


def component_plan(cfg: MacConfig, plan: DatapathPlan | None) -> DatapathPlan:
    """The datapath a floating-point component of cfg is built from: ``plan`` when its caller has it (an export
    derives it once and hands it to every component it builds), else derived here. The component checked both
    before it existed (check_float_component), so this only derives."""
    return derive_datapath(cfg) if plan is None else plan


def check_float_component(cfg: MacConfig, plan: DatapathPlan | None) -> None:
    """What a floating-point circuit (FMAq, ChunkAdder, MAC, PipelinedMAC, the PE array) checks before it
    exists: check_config, a floating-point accumulator (an integer/fixed-point or fused one is another
    circuit, and check_config alone passes it: the sweep checks integer rows with it), and a given plan."""
    if isinstance(cfg, MacConfig) and not isinstance(cfg.acc, FloatFormat):
        raise ConfigError(
            f"{cfg.name}: the floating-point MAC circuits need a floating-point accumulator, got {cfg.acc.name} "
            "(integer/fixed-point accumulators: rtl.FixedFMAq, rtl.FixedMAC; fused ones: rtl.fdpa)"
        )
    check_config(cfg)
    check_plan_matches(cfg, plan)


def check_plan_matches(cfg: MacConfig, plan: DatapathPlan | FixedDatapathPlan | None) -> None:
    """A plan handed to a component must be that of the component's own configuration (None: none handed)."""
    if plan is not None and plan.cfg != cfg:
        raise ConfigError(f"the datapath plan given for {cfg.name} was derived for {plan.cfg.name}")


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
