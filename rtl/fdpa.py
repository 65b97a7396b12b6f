"""The L-term fused dot-product-add unit: out = FDPA(a_0..a_{L-1}, b_0..b_{L-1}, c) (docs/rtl.md).

``FusedDotProductAdd(plan, pipeline=N)`` is combinational with ``pipeline=0``; with N > 0 it registers the
values crossing the first N cut points of ``PIPELINE_CUTS`` (in datapath order), so ``out`` shows the result
of the inputs applied before a rising edge N edges later (``latency``), and a new group can enter every cycle.
Ports: ``a_i`` (a_format codes), ``b_i`` (b_format codes), ``c`` and ``out`` (output codes); with N > 0 also the
sync domain's ``clk`` and ``rst``.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lba_core import ConfigError

from .blocks import Rounder, add_block
from .fdpa_blocks import (
    AddendTerm,
    CompressorTree,
    ExponentMax,
    FdpaOutput,
    ProductTerm,
    SumNormalizer,
    TermAligner,
)
from .fdpa_plan import FdpaPlan
from .mac import Register

#: Where pipeline registers go, in the order they are used: pipeline=1 cuts after the aligners, 2 also after
#: the compressor tree, 3 also after the product terms, 4 also after the normalizer.
PIPELINE_CUTS = ("aligned", "sum", "terms", "normalized")
DATAPATH_ORDER = ("terms", "aligned", "sum", "normalized")


def check_fdpa_pipeline(pipeline: int) -> None:
    """A ConfigError naming the option unless 0 <= pipeline <= len(PIPELINE_CUTS)."""
    if not isinstance(pipeline, int) or isinstance(pipeline, bool) or not 0 <= pipeline <= len(PIPELINE_CUTS):
        raise ConfigError(f"--pipeline for the FDPA unit must be an integer in 0..{len(PIPELINE_CUTS)}, got {pipeline!r}")


def fdpa_ports(plan: FdpaPlan) -> dict:
    """a_0..a_{L-1}, b_0..b_{L-1}, c in; out."""
    ports = {f"a_{i}": In(plan.a_format.width) for i in range(plan.group)}
    ports.update({f"b_{i}": In(plan.b_format.width) for i in range(plan.group)})
    return {**ports, "c": In(plan.output.width), "out": Out(plan.output.width)}


class FusedDotProductAdd(wiring.Component):
    """The FDPA unit of ``plan`` (rtl.fdpa_plan.plan_fdpa), combinational or with ``pipeline`` register stages."""

    def __new__(cls, plan: FdpaPlan, pipeline: int = 0):
        # Checked before the object exists: a rejected unit leaves no never-elaborated Amaranth object behind.
        if not isinstance(plan, FdpaPlan):
            raise ConfigError(f"FusedDotProductAdd needs an rtl.fdpa_plan.FdpaPlan, got {type(plan).__name__}")
        check_fdpa_pipeline(pipeline)
        return super().__new__(cls)

    def __init__(self, plan: FdpaPlan, pipeline: int = 0):
        self.plan, self.pipeline = plan, pipeline
        self.cuts = frozenset(PIPELINE_CUTS[:pipeline])
        super().__init__(fdpa_ports(plan))

    @property
    def latency(self) -> int:
        """Rising edges from the inputs to ``out`` (0: combinational)."""
        return self.pipeline

    def stage(self, m: Module, cut: str, fields: dict) -> SimpleNamespace:
        """``fields`` (name -> value), through a ``<cut>_register`` when this cut is pipelined."""
        if cut not in self.cuts:
            return SimpleNamespace(**fields)
        width = sum(len(value) for value in fields.values())
        register = add_block(m, Register(width), cut)
        m.d.comb += [register.d.eq(Cat(*fields.values())), register.en.eq(1)]
        outputs, offset = {}, 0
        for name, value in fields.items():
            piece = register.q[offset : offset + len(value)]
            outputs[name] = piece.as_signed() if value.shape().signed else piece
            offset += len(value)
        return SimpleNamespace(**outputs)

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        count = plan.terms
        fields = {}
        for i in range(plan.group):
            product = add_block(m, ProductTerm(plan), f"lane{i}")
            m.d.comb += [product.a.eq(getattr(self, f"a_{i}")), product.b.eq(getattr(self, f"b_{i}"))]
            fields.update({f"sign_{i}": product.sign, f"sig_{i}": product.sig, f"exp_{i}": product.exp})
        addend = add_block(m, AddendTerm(plan))
        m.d.comb += addend.c.eq(self.c)
        i = plan.group
        fields.update({f"sign_{i}": addend.sign, f"sig_{i}": addend.sig, f"exp_{i}": addend.exp})
        fields.update({"nan": addend.nan, "inf": addend.inf})
        terms = self.stage(m, "terms", fields)

        e_max = add_block(m, ExponentMax(count, plan.exp_bits))
        m.d.comb += [getattr(e_max, f"exp_{i}").eq(getattr(terms, f"exp_{i}")) for i in range(count)]
        fields = {"e_max": e_max.e_max, "nan": terms.nan, "inf": terms.inf, "inf_sign": getattr(terms, f"sign_{plan.group}")}
        for i in range(count):
            addend_term = i == plan.group
            aligner = add_block(
                m,
                TermAligner(
                    plan,
                    plan.addend_sig_bits if addend_term else plan.product_sig_bits,
                    plan.output.man_bits if addend_term else plan.product_frac_bits,
                ),
                f"term{i}",
            )
            m.d.comb += [
                aligner.sig.eq(getattr(terms, f"sig_{i}")),
                aligner.exp.eq(getattr(terms, f"exp_{i}")),
                aligner.e_max.eq(e_max.e_max),
            ]
            fields.update({f"sign_{i}": getattr(terms, f"sign_{i}"), f"term_{i}": aligner.term})
        aligned = self.stage(m, "aligned", fields)

        tree = add_block(m, CompressorTree(count, plan.term_bits, plan.sum_bits))
        for i in range(count):
            m.d.comb += [getattr(tree, f"sign_{i}").eq(getattr(aligned, f"sign_{i}")), getattr(tree, f"term_{i}").eq(getattr(aligned, f"term_{i}"))]
        summed = self.stage(
            m, "sum", {"total": tree.total, "e_max": aligned.e_max, "nan": aligned.nan, "inf": aligned.inf, "inf_sign": aligned.inf_sign}
        )

        normalizer = add_block(m, SumNormalizer(plan))
        m.d.comb += [normalizer.total.eq(summed.total), normalizer.e_max.eq(summed.e_max)]
        normalized = self.stage(
            m,
            "normalized",
            {
                "sign": normalizer.sign,
                "sig": normalizer.sig,
                "exp": normalizer.exp,
                "nan": summed.nan,
                "inf": summed.inf,
                "inf_sign": summed.inf_sign,
            },
        )

        rounder = add_block(m, Rounder(plan.magnitude_bits - 2, plan.rounding_format, plan.rounding, plan.exp_bits))
        output = add_block(m, FdpaOutput(plan))
        m.d.comb += [
            rounder.in_sig.eq(normalized.sig),
            rounder.in_exp.eq(normalized.exp),
            output.sig.eq(rounder.sig),
            output.exp.eq(rounder.exp),
            output.sign.eq(normalized.sign),
            output.nan.eq(normalized.nan),
            output.inf.eq(normalized.inf),
            output.inf_sign.eq(normalized.inf_sign),
            self.out.eq(output.out),
        ]
        return m
