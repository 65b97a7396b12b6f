"""Promotion: the fp32 adder stage beside the FDPA unit (docs/arithmetic.md §9, ``promote_every``).

``PromotionAdder(plan)`` computes total_out = RNE_fp32(total + partial) with one rounding, IEEE binary32 special
cases included: ``total`` and ``total_out`` are fp32 codes (lba_core.fused.PROMOTION_FORMAT), ``partial`` is the
FDPA's output code. The finite addition is the MAC's chunk adder (rtl.fmaq.ChunkAdder: align with a sticky bit,
add, normalize, round) on e8m23_sub codes; around it, the FDPA output is widened to fp32 exactly, NaN/Inf
operands bypass it (NaN, Inf - Inf: canonical NaN; one Inf: that Inf) and a finite result beyond the largest
fp32 binade (the chunk adder's exponent code 255, a finite code in lba_core's e8m23_sub) becomes ±Inf.
Per-block scales (one fused multiply-add in the contract) are not built.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lba_core import ConfigError, MacConfig
from lba_core.fused import PROMOTION_FORMAT

from .arith import decode_normalized
from .blocks import add_block
from .fdpa_plan import FdpaPlan
from .fmaq import ChunkAdder

#: The configuration of the fp32 chunk adder (its input format only sizes unused product paths).
PROMOTION_CONFIG = MacConfig(input="e4m3", acc=PROMOTION_FORMAT.name, rounding="rne")


def ieee_fields(m: Module, code, fmt, name: str):
    """(special, nan, inf) of an IEEE-style code: its exponent field all ones; with a non-zero mantissa NaN."""
    special = Signal(name=f"{name}_special")
    nan = Signal(name=f"{name}_nan")
    m.d.comb += [
        special.eq(code[fmt.man_bits : fmt.man_bits + fmt.exp_bits].all()),
        nan.eq(special & code[: fmt.man_bits].any()),
    ]
    return special, nan, special & ~nan


def check_promotion(plan: FdpaPlan) -> None:
    """Only an IEEE FDPA output whose every value is an fp32 value can be promoted exactly."""
    out, fp32 = plan.output, PROMOTION_FORMAT
    same_grid = out.exp_bits == fp32.exp_bits and out.bias == fp32.bias and out.man_bits <= fp32.man_bits
    inside = out.emax - 1 <= fp32.emax - 1 and out.emin - out.man_bits >= fp32.emin
    if not plan.ieee or out.man_bits > fp32.man_bits or not (same_grid or inside):
        raise ConfigError(
            f"promotion needs an IEEE FDPA output whose values are fp32 values (e8m<=23_sub, or a narrower range "
            f"such as e5m10_sub), got {out.name}{'' if plan.ieee else ' (saturating)'}"
        )


class PromotionAdder(wiring.Component):
    """total_out = RNE_fp32(total + partial): the fp32 register update of one promotion."""

    def __new__(cls, plan: FdpaPlan):
        check_promotion(plan)  # before the object exists: no never-elaborated component is left behind
        return super().__new__(cls)

    def __init__(self, plan: FdpaPlan):
        self.plan = plan
        super().__init__({"total": In(PROMOTION_FORMAT.width), "partial": In(plan.output.width), "total_out": Out(PROMOTION_FORMAT.width)})

    def widen(self, m: Module):
        """The FDPA output code as the fp32 code of the same value (specials keep their class)."""
        out, fp32 = self.plan.output, PROMOTION_FORMAT
        shift = fp32.man_bits - out.man_bits
        if out.exp_bits == fp32.exp_bits and out.bias == fp32.bias:
            return Cat(Const(0, shift), self.partial)
        value = decode_normalized(m, self.partial, out, 10, "partial")  # a subnormal becomes an fp32 normal
        special, nan, _ = ieee_fields(m, self.partial, out, "widen")
        ones = (1 << fp32.exp_bits) - 1
        exp_code = Mux(special, ones, Mux(value.zero, 0, value.exp + fp32.bias))
        mantissa = Mux(special, Mux(nan, (1 << fp32.man_bits) - 1, 0), Cat(Const(0, shift), value.sig[: out.man_bits]))
        return Cat(mantissa, exp_code[: fp32.exp_bits], value.sign)

    def elaborate(self, platform):
        m = Module()
        fp32 = PROMOTION_FORMAT
        partial = Signal(fp32.width, name="partial_fp32")
        m.d.comb += partial.eq(self.widen(m))
        t_special, t_nan, t_inf = ieee_fields(m, self.total, fp32, "total")
        p_special, p_nan, p_inf = ieee_fields(m, partial, fp32, "partial")
        adder = add_block(m, ChunkAdder(PROMOTION_CONFIG))
        m.d.comb += [
            adder.acc_in.eq(Mux(t_special | p_special, 0, self.total)),
            adder.addend.eq(Mux(t_special | p_special, 0, partial)),
        ]
        sign_bit = fp32.width - 1
        ones = (1 << fp32.exp_bits) - 1
        nan = t_nan | p_nan | (t_inf & p_inf & (self.total[sign_bit] ^ partial[sign_bit]))
        inf_sign = Mux(t_inf, self.total[sign_bit], Mux(p_inf, partial[sign_bit], adder.acc_out[sign_bit]))
        overflow = adder.acc_out[fp32.man_bits : fp32.man_bits + fp32.exp_bits].all()
        infinity = Cat(Const(0, fp32.man_bits), Const(ones, fp32.exp_bits), inf_sign)
        m.d.comb += self.total_out.eq(
            Mux(nan, (1 << sign_bit) - 1, Mux(t_inf | p_inf | overflow, infinity, adder.acc_out))
        )
        return m
