"""The widths of the fused dot-product-add (FDPA) unit, derived once (FloPoCo style: the operator sizes itself).

An L-term FDPA (docs/arithmetic.md, the fused contract; mmasim's ``t_fdpa``) computes, for products
p_i = a_i * b_i and an addend c:

- every operand decoded as s * 2^e (a subnormal at its format's emin with s < 1); a product's exponent is
  e_a + e_b and its significand s_a * s_b in [0, 4) is **not** renormalized; a zero term gets ``e_zero``;
- e_max = the largest exponent of the L products and c; each term truncated toward zero to a multiple of
  2^(e_max - F);
- the truncated terms summed exactly, the sum normalized and rounded once (RZ or RNE) to ``result_man_bits``
  fraction bits, stored in the ``output`` format (IEEE-style with Inf/NaN when ``ieee``, else saturating).

:class:`FdpaPlan` holds the parameters and every width the circuit needs; :func:`plan_fdpa` checks them and
derives the widths. Nothing here elaborates Amaranth, so a bad configuration fails with a ConfigError first.
"""

from __future__ import annotations

from dataclasses import dataclass

from lba_core import ConfigError, FloatFormat, FusedAccumulator, MacConfig
from lba_core.datapath import signed_bits

ROUNDINGS = ("rtz", "rne")
GROUP_RANGE = (1, 64)


@dataclass(frozen=True)
class FdpaPlan:
    """Parameters and widths of one FDPA unit. Significand widths count the hidden bit.

    A product term's magnitude is an integer P (``product_sig_bits`` wide, ``product_frac_bits`` fraction
    bits); an aligned term is an integer T < 2^term_bits, the term's value being T * 2^(e_max - F) (F =
    ``fraction_bits``). The aligner places P on a grid of ``align_frac_bits`` = max(F, fraction bits of the
    operand) fraction bits, shifts it right by min(e_max - e, ``shift_limit``) and drops the bits below F. The
    L + 1 terms (two's complement) are summed in ``sum_bits`` bits, which hold every possible sum exactly.
    """

    group: int
    fraction_bits: int
    a_format: FloatFormat
    b_format: FloatFormat
    output: FloatFormat
    result_man_bits: int
    rounding: str
    ieee: bool
    e_zero: int
    # derived
    product_sig_bits: int
    product_frac_bits: int
    addend_sig_bits: int
    term_bits: int
    sum_bits: int
    magnitude_bits: int
    exp_bits: int

    @property
    def terms(self) -> int:
        """L products and the addend."""
        return self.group + 1

    @property
    def rounding_format(self) -> FloatFormat:
        """The format the sum is rounded into: the output's exponent range with ``result_man_bits`` fraction
        bits (e8m13 for Hopper FP8 with fp32 output; the output itself otherwise)."""
        out = self.output
        return FloatFormat(out.exp_bits, self.result_man_bits, bias=out.bias, subnormals=out.subnormals)

    @property
    def output_emax(self) -> int:
        """Largest binade of a finite output: an IEEE output reserves the all-ones exponent code for Inf/NaN."""
        return self.output.emax - 1 if self.ieee else self.output.emax

    def align_frac_bits(self, frac_bits: int) -> int:
        """Fraction bits of the aligner grid of an operand with ``frac_bits`` fraction bits."""
        return max(self.fraction_bits, frac_bits)

    def shift_limit(self, frac_bits: int) -> int:
        """The aligner's shift clamp: shifting the (2 + grid) bit operand by this much leaves 0."""
        return 2 + self.align_frac_bits(frac_bits)


def plan_fused(cfg: MacConfig) -> FdpaPlan:
    """The FDPA unit of a MacConfig whose ``acc`` is a fused accumulator (``MacConfig(input="e4m3",
    acc="hopper-fp8")``): its group, F, output, rounding, IEEE flag and e_zero, the config's operand formats.
    Promotion (``promote_every``) is the separate fp32 stage beside the unit and does not change it."""
    if not isinstance(cfg, MacConfig):
        raise ConfigError(f"the FDPA generator needs an lba_core.MacConfig, got {type(cfg).__name__}")
    acc = cfg.acc
    if not isinstance(acc, FusedAccumulator):
        raise ConfigError(f"the FDPA generator needs a fused accumulator (--acc hopper-fp8, fdpa32f13-...), got {acc.name}")
    return plan_fdpa(
        group=acc.group,
        fraction_bits=acc.fraction_bits,
        a_format=cfg.a_format,
        b_format=cfg.b_format,
        output=acc.output,
        rounding=acc.output_rounding,
        ieee=acc.ieee_output,
        e_zero=acc.e_zero,
    )


def plan_fdpa(
    *,
    group: int,
    fraction_bits: int,
    a_format: "FloatFormat | str",
    b_format: "FloatFormat | str",
    output: "FloatFormat | str",
    result_man_bits: int | None = None,
    rounding: str = "rtz",
    ieee: bool = True,
    e_zero: int,
) -> FdpaPlan:
    """Check the FDPA parameters and derive every width; raises ConfigError naming the bad parameter."""
    a_format, b_format, output = (FloatFormat.parse(fmt) for fmt in (a_format, b_format, output))
    if not isinstance(group, int) or not GROUP_RANGE[0] <= group <= GROUP_RANGE[1]:
        raise ConfigError(f"FDPA group L must be an integer in {GROUP_RANGE[0]}..{GROUP_RANGE[1]}, got {group!r}")
    if not isinstance(fraction_bits, int) or fraction_bits < 0:
        raise ConfigError(f"FDPA fraction_bits F must be an integer >= 0, got {fraction_bits!r}")
    if rounding not in ROUNDINGS:
        raise ConfigError(f"FDPA output rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    man_bits = output.man_bits if result_man_bits is None else result_man_bits
    if not isinstance(man_bits, int) or not 0 <= man_bits <= output.man_bits:
        raise ConfigError(
            f"FDPA result_man_bits must be in 0..{output.man_bits} (the output {output.name}'s mantissa), got {man_bits!r}"
        )
    product_frac_bits = a_format.man_bits + b_format.man_bits
    product_sig_bits = product_frac_bits + 2
    term_bits = fraction_bits + 2  # products < 4: two integer bits
    sum_bits = term_bits + group.bit_length() + 1  # L + 1 terms: ceil(log2(L + 1)) carries, then the sign bit
    magnitude_bits = sum_bits - 1
    # One signed width for every exponent: operands, products, e_zero, e_max - F, sums, differences.
    low = min(e_zero, a_format.emin + b_format.emin, output.emin) - fraction_bits - output.man_bits - 2
    high = max(e_zero, a_format.emax + b_format.emax + 1, output.emax) + magnitude_bits + 2
    span = high - low
    exp_bits = signed_bits(-span, span)
    return FdpaPlan(
        group=group,
        fraction_bits=fraction_bits,
        a_format=a_format,
        b_format=b_format,
        output=output,
        result_man_bits=man_bits,
        rounding=rounding,
        ieee=bool(ieee),
        e_zero=e_zero,
        product_sig_bits=product_sig_bits,
        product_frac_bits=product_frac_bits,
        addend_sig_bits=output.man_bits + 1,
        term_bits=term_bits,
        sum_bits=sum_bits,
        magnitude_bits=magnitude_bits,
        exp_bits=exp_bits,
    )
