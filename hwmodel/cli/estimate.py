"""``hwmodel estimate``: MAC area of a configuration from the analytical cost model, without synthesizing it.

The model is fitted on synthesized basis points with the same inputs (cached after the first run).
"""

from __future__ import annotations

import argparse
import json

from lba_core import ConfigError, FloatFormat, MacConfig

from .synth import synthesis_kwargs, synthesis_options, yosys_failure
from .verilog import config_from_args, rtl_options
from ..synthesis.synth import YosysError

DEFAULT_BASIS = "e4m7,e5m6,e3m8,e4m3,e5m10,bf16,fp32"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "estimate",
        description="Fit the cost model (multiplier, shifters, adder, exponent, register terms) on synthesized "
        "basis accumulators with the same inputs, then estimate the given configuration's MAC GE.",
    )
    rtl_options(parser)
    parser.add_argument("--basis", default=DEFAULT_BASIS, metavar="LIST",
                        help=f"accumulators synthesized to fit the model (default: {DEFAULT_BASIS})")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    synthesis_options(parser)
    parser.set_defaults(func=run)


def check_within_basis(cfg: MacConfig, basis: list[MacConfig]) -> None:
    """The cost model interpolates between its basis points: an accumulator that is not a floating-point
    format, or whose exponent or mantissa width lies outside the basis's range (``--acc e4m0``), is refused
    with the range, before any synthesis."""
    if not isinstance(cfg.acc, FloatFormat) or cfg.fused_acc:
        raise ConfigError(f"--acc {args_name(cfg)}: the cost model covers floating-point accumulators only; "
                          "use hwmodel synth for this one")
    floats = [point.acc for point in basis if isinstance(point.acc, FloatFormat)]
    for field, label in (("exp_bits", "exponent"), ("man_bits", "mantissa")):
        low, high = min(getattr(fmt, field) for fmt in floats), max(getattr(fmt, field) for fmt in floats)
        if not low <= getattr(cfg.acc, field) <= high:
            raise ConfigError(f"--acc {cfg.acc.name}: {getattr(cfg.acc, field)} {label} bits lies outside the "
                              f"cost model's basis ({low} to {high} {label} bits, --basis); the estimate would be "
                              "an extrapolation: use hwmodel synth for this one, or widen --basis")


def args_name(cfg: MacConfig) -> str:
    return str(getattr(cfg.acc, "name", cfg.acc))


def run(args: argparse.Namespace) -> int:
    from ..synthesis.area import area_sweep
    from ..synthesis.costmodel import sweep_cost_model
    from ..synthesis.costmodel import TERMS, mac_widths

    cfg = config_from_args(args)
    if args.pipeline != 0:
        raise ConfigError(f"--pipeline {args.pipeline}: the cost model estimates the MAC without pipeline registers "
                          "(0); synthesize a pipelined MAC with hwmodel synth --pipeline N")
    basis = [cfg.replace(acc=acc.strip()) for acc in args.basis.split(",") if acc.strip()]
    if not basis:
        raise ConfigError("--basis: give the accumulators to fit the cost model on")
    check_within_basis(cfg, basis)
    try:
        # The reduction is not needed here: the first basis point serves as baseline, so none is added.
        df = area_sweep(basis, args.target, jobs=args.jobs, baseline=basis[0].acc, **synthesis_kwargs(args))
    except YosysError as error:
        return yosys_failure("estimate", error)
    model = sweep_cost_model(df)
    if model is None:
        raise ConfigError(f"--basis: the cost model needs more than {len(TERMS)} distinct points, got {len(df)}")
    result = {
        "config": cfg.name,
        "widths": mac_widths(cfg),
        "ge_estimate": round(model.estimate(cfg), 1),
        "model": {"coefficients": model.coefficients, "points": model.points, "rms_error": model.rms_error,
                  "max_error": model.max_error, "loo_rms_error": model.loo_rms_error},
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{cfg.name}: about {result['ge_estimate']:,.0f} GE (cost model fitted on {model.points} "
              f"synthesized points; leave-one-out RMS error {100 * model.loo_rms_error:.1f}%)")
    return 0
