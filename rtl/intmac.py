"""Integer and fixed-point MAC circuits (docs/arithmetic.md §8): acc <- keep(acc + G(a * b)).

Blocks, in datapath order:

- ``fixed_multiplier``: the exact product as sign, magnitude and (for floating-point operands) the sum of the
  operands' exponent codes above the smallest binade. Two's-complement operands are multiplied signed.
- ``grid_aligner``: the product onto the accumulator's grid 2^-F. Floating-point products are shifted by
  their exponent (the product is then exact in units of 2^-G, G = -(qa + qb)) and by the constant F - G;
  when F < G the shift is to the right and rounds the magnitude (RNE or RTZ) as the contract's G does.
  Integer operands with F = G (INT8 x INT8 -> intW) need no aligner.
- ``fixed_adder``: acc_in + the signed product, wide enough to be exact.
- ``saturation``: the range check, clamp (saturate) or low W bits (wrap), and the three events.

``FixedFMAq`` is one combinational step with the FMAq's ports; ``FixedMAC`` the sequential unit with the MAC's
ports (plain accumulation: chunked fixed-point MACs are not built). Both are exported as the tops ``fmaq``
and ``mac`` (rtl.export_verilog), so synthesis and cosimulation treat them like the floating-point ones.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lba_core import ConfigError, FixedDatapathPlan, FixedFormat, FloatFormat, MacConfig, derive_fixed_datapath

from .blocks import EVENT_FIELDS, add_block, connect_fields, event_ports
from .mac import accumulate_into_register, mac_ports
from .plan import check_plan_matches


#: The widths of a fixed-point MAC, derived once in lba_core.datapath (the simulator's int_gemm reads it too).
FixedDatapath = FixedDatapathPlan


def check_fixed_config(cfg: MacConfig) -> FixedDatapath:
    """The datapath of a fixed-point MAC, or a ConfigError naming what no circuit implements."""
    check_fixed_buildable(cfg)
    return derive_fixed_datapath(cfg)


def check_fixed_buildable(cfg: MacConfig) -> None:
    """The ConfigError naming what no fixed-point circuit implements (no derivation: a component runs it before
    it exists and derives its plan once, or takes its caller's)."""
    if not cfg.fixed_acc:
        raise ConfigError(f"{cfg.name}: the fixed-point MAC needs an integer or fixed-point accumulator")
    if isinstance(cfg.a_format, FixedFormat) != isinstance(cfg.b_format, FixedFormat):
        raise ConfigError(f"{cfg.name}: the RTL needs both operands floating point or both integer/fixed point")
    if cfg.chunk_size is not None:
        raise ConfigError(f"{cfg.name}: the fixed-point MAC circuit accumulates in one chain (chunk_size=None)")


def fixed_component_plan(cfg: MacConfig, plan: FixedDatapath | None) -> FixedDatapath:
    """The datapath a fixed-point component of cfg is built from: its caller's (an export derives it once for
    both tops) or, without one, derived here; FixedComponent checked both before the component existed."""
    return derive_fixed_datapath(cfg) if plan is None else plan


class FixedMultiplier(wiring.Component):
    """The exact product: sign, magnitude of the significand (or integer) product, exponent-code sum."""

    def __init__(self, path: FixedDatapath):
        self.path = path
        cfg = path.cfg
        super().__init__(
            {
                "a": In(cfg.a_format.width),
                "b": In(cfg.b_format.width),
                "sign": Out(1),
                "nonzero": Out(1),
                "sig": Out(path.sig_bits),
                "exp": Out(max(path.exp_bits, 1)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.path.cfg
        if not self.path.float_operands:
            product = Signal(signed(cfg.a_format.width + cfg.b_format.width))
            m.d.comb += [
                product.eq(self.a.as_signed() * self.b.as_signed()),
                self.sign.eq(product < 0),
                self.nonzero.eq(product != 0),
                self.sig.eq(Mux(product < 0, -product, product)),
            ]
            return m
        parts = [self.decode(m, code, fmt, name) for code, fmt, name in ((self.a, cfg.a_format, "a"), (self.b, cfg.b_format, "b"))]
        (sign_a, sig_a, exp_a), (sign_b, sig_b, exp_b) = parts
        m.d.comb += [
            self.sign.eq(sign_a ^ sign_b),
            self.sig.eq(sig_a * sig_b),
            self.nonzero.eq((sig_a != 0) & (sig_b != 0)),
            self.exp.eq(exp_a + exp_b),
        ]
        return m

    @staticmethod
    def decode(m: Module, code, fmt: FloatFormat, name: str):
        """(sign, significand, exponent code - 1 with code 0 read as 1): value = sig * 2^(exp + emin - M)."""
        field = code[fmt.man_bits : fmt.man_bits + fmt.exp_bits]
        mantissa = code[: fmt.man_bits]
        normal = field != 0
        sig = Signal(fmt.man_bits + 1, name=f"{name}_sig")
        exp = Signal(fmt.exp_bits, name=f"{name}_exp")
        if fmt.subnormals:
            m.d.comb += sig.eq(Cat(mantissa, normal))
        else:
            m.d.comb += sig.eq(Mux(normal, Cat(mantissa, Const(1, 1)), 0))
        m.d.comb += exp.eq(Mux(normal, field - 1, 0))
        return code[-1], sig, exp


class GridAligner(wiring.Component):
    """The product magnitude onto the accumulator's grid: shift by the exponent, then by F - G (rounding)."""

    def __init__(self, path: FixedDatapath):
        self.path = path
        super().__init__(
            {
                "sig": In(path.sig_bits),
                "exp": In(max(path.exp_bits, 1)),
                "magnitude": Out(path.product_bits),
            }
        )

    def elaborate(self, platform):
        m = Module()
        path = self.path
        exact = Signal(path.exact_bits)
        m.d.comb += exact.eq(self.sig << self.exp if path.float_operands else self.sig)
        shift = path.grid_shift
        if shift >= 0:
            m.d.comb += self.magnitude.eq(exact << shift)
            return m
        drop = -shift
        kept = exact[drop:] if drop < path.exact_bits else Const(0, 1)
        lost = exact[:drop]
        if path.cfg.rounding == "rtz":
            m.d.comb += self.magnitude.eq(kept)
            return m
        half = lost[-1]
        below_half = lost[:-1] != 0 if drop > 1 else Const(0, 1)
        up = half & (below_half | kept[0])
        m.d.comb += self.magnitude.eq(kept + up)
        return m


class FixedAdder(wiring.Component):
    """acc_in + (-1)^sign * magnitude, exact in sum_bits signed bits."""

    def __init__(self, path: FixedDatapath):
        self.path = path
        super().__init__(
            {
                "acc": In(path.cfg.acc.width),
                "sign": In(1),
                "magnitude": In(path.product_bits),
                "sum": Out(signed(path.sum_bits)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        addend = Signal(signed(self.path.product_bits + 1))
        m.d.comb += [
            addend.eq(Mux(self.sign, -self.magnitude, self.magnitude)),
            self.sum.eq(self.acc.as_signed() + addend),
        ]
        return m


class Saturation(wiring.Component):
    """keep(sum): the range check and clamp or wrap into the accumulator, with overflow, underflow, swamp."""

    def __init__(self, path: FixedDatapath):
        self.path = path
        width = path.cfg.acc.width
        super().__init__(
            {
                "sum": In(signed(path.sum_bits)),
                "acc": In(width),
                "product_nonzero": In(1),
                "addend_zero": In(1),
                "acc_out": Out(width),
                **event_ports(),
            }
        )

    def elaborate(self, platform):
        m = Module()
        acc = self.path.cfg.acc
        too_high = self.sum > acc.max_int
        too_low = self.sum < acc.min_int
        low_bits = self.sum[: acc.width]
        if acc.saturate:
            kept = Mux(too_high, Const(acc.max_int, signed(acc.width)), Mux(too_low, Const(acc.min_int, signed(acc.width)), low_bits))
        else:
            kept = low_bits
        m.d.comb += [
            self.acc_out.eq(kept),
            self.overflow.eq(too_high | too_low),
            self.underflow.eq(self.product_nonzero & self.addend_zero),
            self.swamp.eq(~self.addend_zero & (self.acc_out == self.acc)),
        ]
        return m


class FixedComponent(wiring.Component):
    """A component built from a fixed-point MacConfig, checked before the object exists (see fmaq.py); its
    ``plan`` argument is the configuration's FixedDatapathPlan where the caller has it."""

    def __new__(cls, cfg: MacConfig, *args, plan: FixedDatapath | None = None, **kwargs):
        check_fixed_buildable(cfg)
        check_plan_matches(cfg, plan)
        return super().__new__(cls)


class FixedFMAq(FixedComponent):
    """acc_out = keep(acc_in + G(a * b)) with overflow/underflow/swamp: the FMAq of docs/arithmetic.md §8."""

    def __init__(self, cfg: MacConfig, *, plan: FixedDatapath | None = None):
        self.path = fixed_component_plan(cfg, plan)
        self.cfg = cfg
        super().__init__(
            {
                "a": In(cfg.a_format.width),
                "b": In(cfg.b_format.width),
                "acc_in": In(cfg.acc.width),
                "acc_out": Out(cfg.acc.width),
                **event_ports(),
            }
        )

    def elaborate(self, platform):
        m = Module()
        path = self.path
        multiplier = add_block(m, FixedMultiplier(path))
        adder = add_block(m, FixedAdder(path))
        saturation = add_block(m, Saturation(path))
        m.d.comb += [multiplier.a.eq(self.a), multiplier.b.eq(self.b)]
        if path.aligned:
            aligner = add_block(m, GridAligner(path))
            m.d.comb += [aligner.sig.eq(multiplier.sig), aligner.exp.eq(multiplier.exp)]
            magnitude = aligner.magnitude
        else:
            magnitude = multiplier.sig
        m.d.comb += [
            adder.acc.eq(self.acc_in),
            adder.sign.eq(multiplier.sign),
            adder.magnitude.eq(magnitude),
            saturation.sum.eq(adder.sum),
            saturation.acc.eq(self.acc_in),
            saturation.product_nonzero.eq(multiplier.nonzero),
            saturation.addend_zero.eq(magnitude == 0),
        ]
        connect_fields(m, self, saturation, ("acc_out", *EVENT_FIELDS))
        return m


class FixedMAC(FixedComponent):
    """Sequential fixed-point MAC with the MAC's ports and timing (valid, clear, a, b in; registered acc out)."""

    def __init__(self, cfg: MacConfig, *, plan: FixedDatapath | None = None):
        self.fmaq = FixedFMAq(cfg, plan=plan)
        self.cfg = cfg
        super().__init__(mac_ports(cfg))

    def elaborate(self, platform):
        m = Module()
        m.submodules.fmaq = fmaq = self.fmaq
        m.d.comb += [fmaq.a.eq(self.a), fmaq.b.eq(self.b)]
        accumulate_into_register(m, fmaq, self.valid, self.clear, self.acc)
        return m


FIXED_BLOCKS = (FixedMultiplier, GridAligner, FixedAdder, Saturation)
