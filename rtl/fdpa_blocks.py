"""The blocks of the fused dot-product-add unit (rtl/fdpa.py), one Amaranth component each.

Dataflow (docs/rtl.md, "The fused dot-product-add unit"): L ``ProductTerm`` and one ``AddendTerm`` decode their
operands into (sign, significand, exponent) terms; ``ExponentMax`` takes the largest exponent; a
``TermAligner`` per term shifts it right to the grid 2^(e_max - F), truncating; the ``CompressorTree`` sums
the signed terms exactly (3:2 carry-save levels and one carry-propagate adder); the ``SumNormalizer`` takes
sign and magnitude and counts leading zeros; the rounder (``rtl.blocks.Rounder``, shared with the MAC) rounds
once; ``FdpaOutput`` encodes the result with the output's special values. Every width comes from
:class:`rtl.fdpa_plan.FdpaPlan`; the decode, shift and normalize helpers are those of rtl/arith.py.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .arith import clamped_shift, decode, encode, normalize, range_check
from .fdpa_plan import FdpaPlan


def term_ports(sig_bits: int, exp_bits: int, direction) -> dict:
    """A decoded term: sign, significand (not normalized), exponent (e_zero for a zero term)."""
    return {"sign": direction(1), "sig": direction(sig_bits), "exp": direction(signed(exp_bits))}


class ProductTerm(wiring.Component):
    """a * b as a term: sign, s_a * s_b (not renormalized, ``product_frac_bits`` fraction bits) and e_a + e_b;
    a zero product gets the exponent e_zero."""

    def __init__(self, plan: FdpaPlan):
        self.plan = plan
        super().__init__(
            {
                "a": In(plan.a_format.width),
                "b": In(plan.b_format.width),
                **term_ports(plan.product_sig_bits, plan.exp_bits, Out),
            }
        )

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        a = decode(m, self.a, plan.a_format, plan.exp_bits, "a")
        b = decode(m, self.b, plan.b_format, plan.exp_bits, "b")
        zero = a.zero | b.zero
        m.d.comb += [
            self.sign.eq(a.sign ^ b.sign),
            self.sig.eq(a.sig * b.sig),
            self.exp.eq(Mux(zero, plan.e_zero, a.exp + b.exp)),
        ]
        return m


class AddendTerm(wiring.Component):
    """c (an output-format code) as a term, and with an IEEE output its special values: ``nan``, ``inf``."""

    def __init__(self, plan: FdpaPlan):
        self.plan = plan
        super().__init__(
            {
                "c": In(plan.output.width),
                **term_ports(plan.addend_sig_bits, plan.exp_bits, Out),
                "nan": Out(1),
                "inf": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        plan, fmt = self.plan, self.plan.output
        c = decode(m, self.c, fmt, plan.exp_bits, "c")
        m.d.comb += [
            self.sign.eq(c.sign),
            self.sig.eq(c.sig),
            self.exp.eq(Mux(c.zero, plan.e_zero, c.exp)),
        ]
        if plan.ieee:
            special = self.c[fmt.man_bits : fmt.man_bits + fmt.exp_bits].all()
            mantissa = self.c[: fmt.man_bits].any() if fmt.man_bits else Const(0, 1)
            m.d.comb += [self.nan.eq(special & mantissa), self.inf.eq(special & ~mantissa)]
        return m


class ExponentMax(wiring.Component):
    """e_max: the largest of ``count`` signed exponents, as a balanced tree of comparators."""

    def __init__(self, count: int, exp_bits: int):
        self.count = count
        super().__init__(
            {**{f"exp_{i}": In(signed(exp_bits)) for i in range(count)}, "e_max": Out(signed(exp_bits))}
        )

    def elaborate(self, platform):
        m = Module()
        level = [getattr(self, f"exp_{i}") for i in range(self.count)]
        depth = 0
        while len(level) > 1:
            merged = []
            for i in range(0, len(level) - 1, 2):
                larger = Signal.like(self.e_max, name=f"max_{depth}_{i // 2}")
                m.d.comb += larger.eq(Mux(level[i] >= level[i + 1], level[i], level[i + 1]))
                merged.append(larger)
            level = merged + level[len(level) - len(level) % 2 :]
            depth += 1
        m.d.comb += self.e_max.eq(level[0])
        return m


class TermAligner(wiring.Component):
    """T = trunc(|term| * 2^(e - e_max + F)): the term on the grid 2^(e_max - F), truncated toward zero.

    The significand (``frac_bits`` fraction bits) is placed on a grid of max(F, frac_bits) fraction bits and
    2 integer bits, shifted right by e_max - e (clamped: a larger shift leaves 0), and the bits below F dropped.
    """

    def __init__(self, plan: FdpaPlan, sig_bits: int, frac_bits: int):
        self.plan, self.sig_bits, self.frac_bits = plan, sig_bits, frac_bits
        super().__init__(
            {
                "sig": In(sig_bits),
                "exp": In(signed(plan.exp_bits)),
                "e_max": In(signed(plan.exp_bits)),
                "term": Out(plan.term_bits),
            }
        )

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        grid = plan.align_frac_bits(self.frac_bits)
        limit = plan.shift_limit(self.frac_bits)
        placed = Signal(limit, name="placed")
        m.d.comb += placed.eq(Cat(Const(0, grid - self.frac_bits), self.sig))
        distance = Signal(signed(plan.exp_bits), name="distance")
        m.d.comb += distance.eq(self.e_max - self.exp)
        shift = clamped_shift(m, distance, limit, "align")
        shifted = Signal(limit, name="shifted")
        m.d.comb += [shifted.eq(placed >> shift), self.term.eq(shifted[grid - plan.fraction_bits :])]
        return m


class CompressorTree(wiring.Component):
    """The exact sum of ``count`` sign-magnitude terms, as a ``sum_bits`` two's-complement integer.

    Each term enters as its one's complement when negative (term XOR sign); the missing +1s are one more
    operand, the number of negative terms. 3:2 carry-save compressors reduce the operands level by level to
    two, which one carry-propagate adder adds. All arithmetic is modulo 2^sum_bits, and sum_bits holds every
    possible sum, so the result is exact.
    """

    def __init__(self, count: int, term_bits: int, sum_bits: int):
        self.count, self.term_bits, self.sum_bits = count, term_bits, sum_bits
        ports = {}
        for i in range(count):
            ports[f"sign_{i}"] = In(1)
            ports[f"term_{i}"] = In(term_bits)
        super().__init__({**ports, "total": Out(signed(sum_bits))})

    def elaborate(self, platform):
        m = Module()
        width = self.sum_bits
        signs = [getattr(self, f"sign_{i}") for i in range(self.count)]
        operands = []
        for i, sign in enumerate(signs):
            operand = Signal(width, name=f"operand_{i}")
            m.d.comb += operand.eq(getattr(self, f"term_{i}") ^ sign.replicate(width))
            operands.append(operand)
        negatives = Signal(width, name="negatives")
        m.d.comb += negatives.eq(sum(signs))
        operands.append(negatives)
        level = 0
        while len(operands) > 2:
            reduced = []
            full = len(operands) - len(operands) % 3
            for i in range(0, full, 3):
                x, y, z = operands[i : i + 3]
                partial = Signal(width, name=f"csa_{level}_{i // 3}_sum")
                carry = Signal(width, name=f"csa_{level}_{i // 3}_carry")
                m.d.comb += [partial.eq(x ^ y ^ z), carry.eq(((x & y) | (x & z) | (y & z)) << 1)]
                reduced += [partial, carry]
            operands = reduced + operands[full:]
            level += 1
        total = operands[0] + operands[1] if len(operands) == 2 else operands[0]
        m.d.comb += self.total.eq(total[:width])
        return m


class SumNormalizer(wiring.Component):
    """Sign and magnitude of the sum, normalized by a leading-zero count: ``sig`` has its top bit at binade
    ``exp`` (the sum's value is total * 2^(e_max - F)); ``nonzero`` says whether the sum is non-zero."""

    def __init__(self, plan: FdpaPlan):
        self.plan = plan
        super().__init__(
            {
                "total": In(signed(plan.sum_bits)),
                "e_max": In(signed(plan.exp_bits)),
                "sign": Out(1),
                "sig": Out(plan.magnitude_bits),
                "exp": Out(signed(plan.exp_bits)),
                "nonzero": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        width = plan.magnitude_bits
        negative = self.total[-1]
        magnitude = Signal(width, name="magnitude")
        top = Signal(signed(plan.exp_bits), name="top_binade")
        m.d.comb += [
            magnitude.eq(Mux(negative, -self.total, self.total)),
            top.eq(self.e_max - plan.fraction_bits + width - 1),
        ]
        sig, exp = normalize(m, magnitude, top, width - 1, plan.exp_bits, "sum")
        m.d.comb += [self.sign.eq(negative), self.sig.eq(sig), self.exp.eq(exp), self.nonzero.eq(magnitude.any())]
        return m


class FdpaOutput(wiring.Component):
    """The output code of a rounded sum: zero is +0; with an IEEE output a binade above the finite range is
    ±Inf, a NaN addend gives the canonical NaN (sign 0, every exponent and mantissa bit 1) and an infinite
    addend ±Inf; otherwise out-of-range values saturate to ±max and, without subnormals, tiny ones flush to
    +0 (docs/arithmetic.md §2). A ``result_man_bits`` mantissa fills the top of the output's mantissa."""

    def __init__(self, plan: FdpaPlan):
        self.plan = plan
        fmt = plan.rounding_format
        super().__init__(
            {
                "sig": In(fmt.man_bits + 1),
                "exp": In(signed(plan.exp_bits)),
                "sign": In(1),
                "nan": In(1),
                "inf": In(1),
                "inf_sign": In(1),
                "out": Out(plan.output.width),
            }
        )

    def elaborate(self, platform):
        m = Module()
        plan, fmt, out = self.plan, self.plan.rounding_format, self.plan.output
        low_zeros = out.man_bits - fmt.man_bits
        if not plan.ieee:
            checked = range_check(m, self.sig, self.exp, fmt, plan.exp_bits, "out")
            m.d.comb += self.out.eq(Cat(Const(0, low_zeros), encode(fmt, checked, self.sign)))
            return m
        nonzero = self.sig.any()
        overflow = Signal(name="overflow")
        m.d.comb += overflow.eq(nonzero & (self.exp > plan.output_emax))
        exp_code = Mux(self.sig[fmt.man_bits], self.exp + fmt.bias, 0)
        finite = Cat(Const(0, low_zeros), self.sig[: fmt.man_bits], exp_code[: out.exp_bits], self.sign & nonzero)
        ones = (1 << out.exp_bits) - 1
        infinity = Cat(Const(0, out.man_bits), Const(ones, out.exp_bits), Mux(self.inf, self.inf_sign, self.sign))
        nan = Const((1 << (out.width - 1)) - 1, out.width)
        m.d.comb += self.out.eq(Mux(self.nan, nan, Mux(self.inf | overflow, infinity, finite)))
        return m
