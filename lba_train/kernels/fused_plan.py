"""What the fused (tensor-core) GEMM kernels need to know about a fused MacConfig, in plain numbers.

The fused dot-product accumulator (docs/arithmetic.md §9): every operand is s * 2^e (subnormals at the
format's minimum exponent), a product's exponent is e_a + e_b (its significand not renormalized), and a
group's terms are truncated to multiples of 2^(e_max - F). Both kernels (fused_numba, fused_triton) carry
2^e as a float "power" beside each operand, so that 2^(e_a + e_b) is one exact multiplication, and work in
float lanes (:func:`lane_dtype`) in which every product, scaled term and group sum is an exact integer
multiple of the quantum (docs/simulator.md). :func:`fused_spec` builds the plain numbers once per call.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lba_core import ConfigError, MacConfig


class FusedSpec(NamedTuple):
    """A fused configuration as plain numbers (a NamedTuple so that Numba takes it as an argument)."""

    group: int  # L, products per fused dot-product-add
    fraction_bits: int  # F, fraction bits every term keeps relative to 2^e_max
    a_man: int  # fraction bits of the first operand's format
    a_emin: int  # its smallest normal exponent (subnormals sit at it)
    a_emax: int  # its largest exponent
    b_man: int
    b_emin: int
    b_emax: int
    out_frac: int  # fraction bits of the output format (Hopper FP8 into fp32: e8m13, 13)
    out_emin: int  # the output's smallest normal exponent (its subnormals' quantum is 2^(out_emin - out_frac))
    out_emax: int  # the largest finite binade of the output (IEEE: the format's emax - 1)
    rne: bool  # round to nearest even (else toward zero)
    ieee: bool  # a result of 2^(out_emax + 1) or more is +-Inf (else it saturates to the largest value)
    e_zero: int  # the exponent a zero term takes (-133 with fp32 output, -21 with fp16)
    promote_every: int  # 0: no promotion; else every that many products the chain goes into fp32 (RNE)


def fused_spec(cfg: MacConfig) -> FusedSpec:
    """The FusedSpec of a fused configuration (``cfg.fused_acc``); ConfigError where no kernel fits it."""
    acc = cfg.acc
    output = acc.output
    spec = FusedSpec(
        group=acc.group,
        fraction_bits=acc.fraction_bits,
        a_man=cfg.a_format.man_bits,
        a_emin=cfg.a_format.emin,
        a_emax=cfg.a_format.emax,
        b_man=cfg.b_format.man_bits,
        b_emin=cfg.b_format.emin,
        b_emax=cfg.b_format.emax,
        out_frac=output.man_bits,
        out_emin=output.emin,
        out_emax=output.emax - 1 if acc.ieee_output else output.emax,
        rne=acc.output_rounding == "rne",
        ieee=acc.ieee_output,
        e_zero=acc.e_zero,
        promote_every=acc.promote_every or 0,
    )
    if not output.subnormals:
        raise ConfigError(f"{acc.name}: the fused kernels need an output with subnormals, got {output.name}")
    if output.emax > 1000 or output.emin - output.man_bits < -1000 or output.man_bits > 50:
        raise ConfigError(f"{acc.name}: the fused kernels hold results in binary64; {output.name} does not fit")
    if spec.promote_every and (spec.out_frac > 23 or spec.out_emin - spec.out_frac < -149 or spec.out_emax > 127):
        raise ConfigError(f"{acc.name}: promotion into fp32 needs an output within fp32, got {output.name}")
    lane_dtype(spec, acc.name)
    return spec


def output_limits(spec: FusedSpec) -> tuple[float, float, float, float, float]:
    """(subnormal quantum 2^(out_emin - out_frac), its inverse, 2^out_emin, 2^(out_emax + 1), the value an
    overflowing result takes: +Inf, or the largest finite value when the output saturates)."""
    largest = (2.0 - 2.0**-spec.out_frac) * 2.0**spec.out_emax
    return (2.0 ** (spec.out_emin - spec.out_frac), 2.0 ** (spec.out_frac - spec.out_emin), 2.0**spec.out_emin,
            2.0 ** (spec.out_emax + 1), float("inf") if spec.ieee else largest)


def steps_per_output(spec: FusedSpec, length: int) -> int:
    """Roundings per output: one per fused dot-product-add, plus one per promotion into fp32."""
    if length == 0:
        return 0
    if spec.promote_every:
        blocks = -(-length // spec.promote_every)
        full, rest = divmod(length, spec.promote_every)
        groups = full * (spec.promote_every // spec.group) + -(-rest // spec.group)
        return groups + blocks
    return -(-length // spec.group)


def scale_floor(spec: FusedSpec) -> float:
    """A power of two at or below every nonzero term's exponent: products are at least 2^(a_emin + b_emin)
    in exponent, and a nonzero running result is a multiple of 2^(e_max - F) of a group with a product."""
    return 2.0 ** (spec.a_emin + spec.b_emin - spec.fraction_bits - 2)


def needs_zero_select(spec: FusedSpec) -> bool:
    """Whether a product's exponent can lie below e_zero, so that a zero term's e_zero can set e_max."""
    return spec.a_emin + spec.b_emin <= spec.e_zero


def lane_dtype(spec: FusedSpec, name: str = "fused accumulator") -> str:
    """The float dtype in which the kernels' products, scaled terms and group sums are all exact.

    float32 (24 bits, exponents -126..127) when a product's significand, a group's sum of L + 1 terms below
    2^(F + 2) and every power 2^(F - e_max) fit it; else float64 (53 bits), which fits every supported spec.
    """
    product_bits = spec.a_man + spec.b_man + 2
    sum_bits = spec.fraction_bits + 2 + (spec.group + 1).bit_length()
    lowest = spec.a_emin + spec.b_emin - spec.fraction_bits - 2
    highest_scale = spec.fraction_bits - lowest
    output_fits = spec.out_frac <= 23 and spec.out_emin - spec.out_frac >= -149 and spec.out_emax <= 127
    # fused_lanes' steps in binary32: the quantum 2^(e_max - F) at least binary32's smallest subnormal, the
    # output's normal range within binary32's, and 2^(F - e_max) normal for the largest e_max
    steps_fit = (min(spec.e_zero, spec.out_emin) - spec.fraction_bits >= -149 and spec.out_emin >= -126
                 and spec.fraction_bits - max(spec.out_emax, spec.a_emax + spec.b_emax) >= -126)
    if (product_bits <= 24 and sum_bits <= 24 and lowest >= -126 and highest_scale <= 127 and spec.e_zero >= -149
            and output_fits and steps_fit):
        return "float32"
    if product_bits <= 53 and sum_bits <= 53:
        return "float64"
    raise ConfigError(
        f"{name}: the fused kernels need products ({product_bits} bits) and a group's sum ({sum_bits} bits) exact "
        "in binary64"
    )


def result_dtype(spec: FusedSpec) -> torch.dtype:
    """torch.float32 when every result (and promotion's fp32 total) is exact in it, else torch.float64."""
    fits = spec.out_frac <= 23 and spec.out_emin - spec.out_frac >= -149 and spec.out_emax <= 127
    return torch.float32 if fits or spec.promote_every else torch.float64
