"""The FMAq datapath blocks, one Amaranth component each, so that synthesis can report area per block.

A block's name is its class name in snake case (:func:`block_name`: ``ProductRounder`` -> ``product_rounder``)
and the composing circuits (rtl/fmaq.py, rtl/mac.py) add every block through :func:`add_block`, so the
submodule names, the exported Verilog hierarchy and the per-block area report all follow from the classes.
docs/rtl.md describes the dataflow and the widths.
"""

from __future__ import annotations

import re

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lba_core import DatapathPlan, FloatFormat

from .arith import (
    Operand,
    clamped_shift,
    decode,
    decode_normalized,
    encode,
    normalize,
    range_check,
    round_significand,
    shift_right_sticky,
)


def block_name(block: "type | wiring.Component") -> str:
    """The block name of a block class or instance: its class name in snake case."""
    cls = block if isinstance(block, type) else type(block)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def add_block(m: Module, block: wiring.Component, role: str = ""):
    """Add ``block`` to ``m`` as the submodule ``<role>_<block name>`` (``<block name>`` without a role: a
    circuit with two registers names them ``partial_register``, ``total_register``); returns the block."""
    name = block_name(block)
    m.submodules[f"{role}_{name}" if role else name] = block
    return block


OPERAND_FIELDS = ("sign", "zero", "sig", "exp")
EVENT_FIELDS = ("overflow", "underflow", "swamp")


def event_ports() -> dict:
    """The §4 event outputs of a step (docs/arithmetic.md): overflow, underflow, swamp, one bit each."""
    return {name: Out(1) for name in EVENT_FIELDS}


def gated_events(sink, source, valid) -> list:
    """Statements driving ``sink``'s events from ``source``'s, masked by ``valid`` (a bubble raises nothing)."""
    return [getattr(sink, name).eq(getattr(source, name) & valid) for name in EVENT_FIELDS]


def connect_fields(m: Module, sink, source, names=OPERAND_FIELDS) -> None:
    """Drive each input ``names`` of ``sink`` from the same-named output of ``source`` (by default a decoded
    operand: sign, zero, sig, exp)."""
    m.d.comb += [getattr(sink, name).eq(getattr(source, name)) for name in names]


def operand_ports(sig_bits: int, exp_bits: int, direction) -> dict:
    """Ports of a decoded operand: sign, zero flag, normalized significand, binade."""
    return {
        "sign": direction(1),
        "zero": direction(1),
        "sig": direction(sig_bits),
        "exp": direction(signed(exp_bits)),
    }


class Multiplier(wiring.Component):
    """Significand multiplier and exponent adder: the exact product a*b, normalized.

    Subnormal inputs make the product's leading-zero count grow; the normalizing shift is sized for it and
    is a single step when both input formats have no subnormals.
    """

    def __init__(self, plan: DatapathPlan):
        self.a_format, self.b_format, self.exp_bits = plan.cfg.a_format, plan.cfg.b_format, plan.exp_bits
        self.sig_bits = plan.multiplier_sig_bits
        super().__init__(
            {"a": In(self.a_format.width), "b": In(self.b_format.width), **operand_ports(self.sig_bits, self.exp_bits, Out)}
        )

    def elaborate(self, platform):
        m = Module()
        a = decode(m, self.a, self.a_format, self.exp_bits, "a")
        b = decode(m, self.b, self.b_format, self.exp_bits, "b")
        product = Signal(self.sig_bits)
        top_exp = Signal(signed(self.exp_bits))
        # a.sig * b.sig has its top bit at binade a.exp + b.exp + 1 (1.x * 1.y < 4).
        m.d.comb += [product.eq(a.sig * b.sig), top_exp.eq(a.exp + b.exp + 1)]
        max_shift = (
            1 + self.a_format.man_bits * self.a_format.subnormals + self.b_format.man_bits * self.b_format.subnormals
        )
        sig, exp = normalize(m, product, top_exp, max_shift, self.exp_bits, "product")
        m.d.comb += [
            self.sign.eq(a.sign ^ b.sign),
            self.zero.eq(a.zero | b.zero),
            self.sig.eq(sig),
            self.exp.eq(exp),
        ]
        return m


class ProductRounder(wiring.Component):
    """R_prod: the exact product rounded once into the product format, saturated, flushed (docs §2)."""

    def __init__(self, plan: DatapathPlan):
        self.fmt, self.rounding, self.exp_bits = plan.cfg.product, plan.cfg.rounding, plan.exp_bits
        super().__init__(
            {
                "exact": In(wiring.Signature(operand_ports(plan.multiplier_sig_bits, plan.exp_bits, Out))),
                **operand_ports(plan.product_sig_bits, plan.exp_bits, Out),
                "overflow": Out(1),
                "underflow": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        sig, exp = round_significand(m, self.exact.sig, self.exact.exp, self.fmt, self.rounding, self.exp_bits, "round")
        checked = range_check(m, sig, exp, self.fmt, self.exp_bits, "range")
        out_sig, out_exp = checked.sig, checked.exp
        if self.fmt.subnormals:  # a subnormal product re-enters the adder normalized
            out_sig, out_exp = normalize(m, out_sig, out_exp, self.fmt.man_bits, self.exp_bits, "renorm")
        m.d.comb += [
            self.sign.eq(self.exact.sign),
            self.zero.eq(checked.zero),
            self.sig.eq(out_sig),
            self.exp.eq(out_exp),
            self.overflow.eq(checked.overflow),
            self.underflow.eq(~self.exact.zero & checked.zero),
        ]
        return m


class Aligner(wiring.Component):
    """Decodes the accumulator, puts the operand with the larger binade at the top of the window and shifts
    the other right by the binade difference, clamped to the window; far-out bits become the sticky bit."""

    def __init__(self, acc_format: FloatFormat, addend_bits: int, window: int, exp_bits: int):
        self.acc_format, self.addend_bits, self.window, self.exp_bits = acc_format, addend_bits, window, exp_bits
        super().__init__(
            {
                "acc": In(acc_format.width),
                "addend": In(wiring.Signature(operand_ports(addend_bits, exp_bits, Out))),
                "acc_zero": Out(1),
                "x_sig": Out(window),
                "y_sig": Out(window),
                "sticky": Out(1),
                "x_exp": Out(signed(exp_bits)),
                "x_sign": Out(1),
                "subtract": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        window = self.window
        acc = decode_normalized(m, self.acc, self.acc_format, self.exp_bits, "acc")
        addend = Operand(self.addend.sign, self.addend.zero, self.addend.sig, self.addend.exp)
        acc_top = Cat(Const(0, window - len(acc.sig)), acc.sig)
        addend_top = Cat(Const(0, window - len(addend.sig)), addend.sig)
        swap = Signal()  # the addend is the larger operand (a zero operand counts as the smallest)
        m.d.comb += swap.eq(acc.zero | (~addend.zero & (addend.exp > acc.exp)))
        y_top = Mux(swap, acc_top, addend_top)
        difference = Signal(signed(self.exp_bits))
        m.d.comb += difference.eq(Mux(swap, addend.exp - acc.exp, acc.exp - addend.exp))
        shift = clamped_shift(m, difference, window, "align")
        y_sig, sticky = shift_right_sticky(m, y_top, shift, "align")
        m.d.comb += [
            self.acc_zero.eq(acc.zero),
            self.x_sig.eq(Mux(swap, addend_top, acc_top)),
            self.y_sig.eq(y_sig),
            self.sticky.eq(sticky),
            self.x_exp.eq(Mux(swap, addend.exp, acc.exp)),
            self.x_sign.eq(Mux(swap, addend.sign, acc.sign)),
            self.subtract.eq(acc.sign ^ addend.sign),
        ]
        return m


class Adder(wiring.Component):
    """Significand add/subtract on carry | window | sticky; a negative difference (only possible when no
    bit was shifted out) is negated and flips the sign."""

    def __init__(self, window: int):
        self.window = window
        super().__init__(
            {
                "x_sig": In(window),
                "y_sig": In(window),
                "sticky": In(1),
                "x_sign": In(1),
                "subtract": In(1),
                "magnitude": Out(window + 2),
                "sign": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        # Zero-extended to carry | window | sticky plus a sign bit, so that x - y keeps its sign.
        x = Cat(Const(0, 1), self.x_sig, Const(0, 2)).as_signed()
        y = Cat(self.sticky, self.y_sig, Const(0, 2)).as_signed()
        total = Signal(signed(self.window + 3))
        m.d.comb += total.eq(Mux(self.subtract, x - y, x + y))
        negative = total[-1]
        m.d.comb += [
            self.magnitude.eq(Mux(negative, -total, total)),
            self.sign.eq(self.x_sign ^ negative),
        ]
        return m


class Normalizer(wiring.Component):
    """Leading-zero count over the whole sum and the left shift that puts its top bit first."""

    def __init__(self, window: int, exp_bits: int):
        self.window, self.exp_bits = window, exp_bits
        super().__init__(
            {
                "magnitude": In(window + 2),
                "x_exp": In(signed(exp_bits)),
                "sig": Out(window + 2),
                "exp": Out(signed(exp_bits)),
                "nonzero": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        # The sum's top (carry) bit sits one binade above the larger operand's top bit.
        sig, exp = normalize(m, self.magnitude, self.x_exp + 1, self.window + 1, self.exp_bits, "sum")
        m.d.comb += [self.sig.eq(sig), self.exp.eq(exp), self.nonzero.eq(self.magnitude.any())]
        return m


class Rounder(wiring.Component):
    """R_acc step 1: round the normalized exact sum once to the accumulator's mantissa (RNE or RTZ)."""

    def __init__(self, window: int, acc_format: FloatFormat, rounding: str, exp_bits: int):
        self.acc_format, self.rounding, self.exp_bits = acc_format, rounding, exp_bits
        super().__init__(
            {
                "in_sig": In(window + 2),
                "in_exp": In(signed(exp_bits)),
                "sig": Out(acc_format.man_bits + 1),
                "exp": Out(signed(exp_bits)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        sig, exp = round_significand(m, self.in_sig, self.in_exp, self.acc_format, self.rounding, self.exp_bits, "acc")
        m.d.comb += [self.sig.eq(sig), self.exp.eq(exp)]
        return m


class RangeFlags(wiring.Component):
    """R_acc steps 2-4 (saturate, flush, +0), the result code, and the overflow/underflow/swamp events."""

    def __init__(self, acc_format: FloatFormat, exp_bits: int):
        self.acc_format, self.exp_bits = acc_format, exp_bits
        super().__init__(
            {
                "sig": In(acc_format.man_bits + 1),
                "exp": In(signed(exp_bits)),
                "sign": In(1),
                "exact_nonzero": In(1),
                "addend_nonzero": In(1),
                "acc": In(acc_format.width),
                "acc_zero": In(1),
                "acc_out": Out(acc_format.width),
                **event_ports(),
            }
        )

    def elaborate(self, platform):
        m = Module()
        checked = range_check(m, self.sig, self.exp, self.acc_format, self.exp_bits, "acc")
        m.d.comb += self.acc_out.eq(encode(self.acc_format, checked, self.sign))
        # Swamp compares values: every non-zero value has one code, and every zero input reads as +0.
        unchanged = Mux(self.acc_zero, checked.zero, self.acc_out == self.acc)
        m.d.comb += [
            self.overflow.eq(checked.overflow),
            self.underflow.eq(self.exact_nonzero & checked.zero),
            self.swamp.eq(self.addend_nonzero & unchanged),
        ]
        return m
