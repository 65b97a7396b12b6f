"""The combinational circuits: FMAq (one MAC step) and the chunk adder (acc + acc), both built from the blocks."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lba_core import DatapathPlan, MacConfig

from .arith import decode_normalized
from .blocks import (
    Adder,
    Aligner,
    Multiplier,
    Normalizer,
    ProductRounder,
    RangeFlags,
    Rounder,
    add_block,
    connect_fields,
    event_ports,
)
from .plan import check_float_component, component_plan


def step_ports(cfg: MacConfig, addend_ports: dict) -> dict:
    """Ports shared by FMAq and the chunk adder: the operands, the new accumulator and the §4 events."""
    return {
        **addend_ports,
        "acc_in": In(cfg.acc.width),
        "acc_out": Out(cfg.acc.width),
        **event_ports(),
    }


def build_accumulate(m: Module, plan: DatapathPlan, acc_code, addend, addend_bits: int, window: int) -> RangeFlags:
    """R_acc(acc + addend) through aligner, adder, normalizer, rounder and range_flags; returns range_flags.

    ``addend`` is a normalized operand (sign, zero, sig of addend_bits, exp); the caller connects the
    result's outputs and events.
    """
    cfg = plan.cfg
    aligner = add_block(m, Aligner(cfg.acc, addend_bits, window, plan.exp_bits))
    adder = add_block(m, Adder(window))
    normalizer = add_block(m, Normalizer(window, plan.exp_bits))
    rounder = add_block(m, Rounder(window, cfg.acc, cfg.rounding, plan.exp_bits))
    range_flags = add_block(m, RangeFlags(cfg.acc, plan.exp_bits))
    # One statement order (it shapes the exported Verilog's text): aligner, adder, normalizer, rounder, flags.
    m.d.comb += aligner.acc.eq(acc_code)
    connect_fields(m, aligner.addend, addend)
    connect_fields(m, adder, aligner, ("x_sig", "y_sig", "sticky", "x_sign", "subtract"))
    m.d.comb += [
        normalizer.magnitude.eq(adder.magnitude),
        normalizer.x_exp.eq(aligner.x_exp),
        rounder.in_sig.eq(normalizer.sig),
        rounder.in_exp.eq(normalizer.exp),
    ]
    connect_fields(m, range_flags, rounder, ("sig", "exp"))
    m.d.comb += [
        range_flags.sign.eq(adder.sign),
        range_flags.exact_nonzero.eq(normalizer.nonzero),
        range_flags.addend_nonzero.eq(~addend.zero),
        range_flags.acc.eq(acc_code),
        range_flags.acc_zero.eq(aligner.acc_zero),
    ]
    return range_flags


def round_product(m: Module, plan: DatapathPlan, exact) -> ProductRounder:
    """R_prod of the exact product ``exact`` (a decoded operand: the multiplier, or a register of it)."""
    rounder = add_block(m, ProductRounder(plan))
    connect_fields(m, rounder.exact, exact)
    return rounder


class ConfiguredComponent(wiring.Component):
    """A component built from a MacConfig. The configuration is checked before the object exists: a rejected
    configuration raises its ConfigError without leaving a never-elaborated Amaranth object behind (which
    Amaranth would report as an UnusedElaboratable warning). Its ``plan`` argument is the configuration's
    DatapathPlan where the caller has it (an export derives it once for all its components); without it the
    component derives it (rtl.plan.component_plan)."""

    def __new__(cls, cfg: MacConfig, *args, plan: DatapathPlan | None = None, **kwargs):
        check_float_component(cfg, plan)
        return super().__new__(cls, cfg, *args, **kwargs)


class FMAq(ConfiguredComponent):
    """acc_out = R_acc(acc_in + R_prod(a * b)) with the overflow/underflow/swamp events (docs/arithmetic.md §4).

    Combinational. ``a`` is a cfg.a_format code, ``b`` a cfg.b_format code, ``acc_in``/``acc_out`` cfg.acc
    codes. Raises ConfigError at construction for configurations no circuit implements.
    """

    def __init__(self, cfg: MacConfig, *, plan: DatapathPlan | None = None):
        self.plan = component_plan(cfg, plan)
        self.cfg = cfg
        super().__init__(step_ports(cfg, {"a": In(cfg.a_format.width), "b": In(cfg.b_format.width)}))

    def elaborate(self, platform):
        m = Module()
        cfg, plan = self.cfg, self.plan
        product = add_block(m, Multiplier(plan))
        m.d.comb += [product.a.eq(self.a), product.b.eq(self.b)]
        product_overflow = product_underflow = 0
        if cfg.product is not None:
            rounder = round_product(m, plan, product)
            product, product_overflow, product_underflow = rounder, rounder.overflow, rounder.underflow
        result = build_accumulate(m, plan, self.acc_in, product, plan.product_sig_bits, plan.window_bits)
        m.d.comb += [
            self.acc_out.eq(result.acc_out),
            self.overflow.eq(result.overflow | product_overflow),
            self.underflow.eq(result.underflow | product_underflow),
            self.swamp.eq(result.swamp),
        ]
        return m


class ChunkAdder(ConfiguredComponent):
    """acc_out = R_acc(acc_in + addend) with the same events: the chunk adder of docs/arithmetic.md §5.

    Both operands are cfg.acc codes, so the window is ``plan.chunk_window_bits`` (accumulator significand + 2).
    """

    def __init__(self, cfg: MacConfig, *, plan: DatapathPlan | None = None):
        self.plan = component_plan(cfg, plan)
        self.cfg = cfg
        super().__init__(step_ports(cfg, {"addend": In(cfg.acc.width)}))

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        addend = decode_normalized(m, self.addend, self.cfg.acc, plan.exp_bits, "addend")
        result = build_accumulate(m, plan, self.acc_in, addend, plan.acc_sig_bits, plan.chunk_window_bits)
        m.d.comb += [
            self.acc_out.eq(result.acc_out),
            self.overflow.eq(result.overflow),
            self.underflow.eq(result.underflow),
            self.swamp.eq(result.swamp),
        ]
        return m
