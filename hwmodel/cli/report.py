"""``hwmodel report DIR``: rebuild a sweep's tables, statistics, plots and index.html from its data files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        description="Rebuild results.md, stats.csv, the PNG/SVG plots and index.html of a sweep folder from its "
        "results.csv (and predictions.json, for intervals and comparisons with the fp32 accumulator). A "
        "truncated or foreign results.csv is reported in one line and nothing is rewritten.",
    )
    parser.add_argument("directory", type=Path, help="a sweep report folder, e.g. reports/default")
    parser.add_argument("--readme", type=Path, metavar="FILE",
                        help="also rewrite FILE's generated section for this folder (the README's main-result "
                        "table: between its sweep_results markers), from the same data")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report.data import ReportError, read_results  # imported here so that `hwmodel report --help` stays fast

    from lba_core import ConfigError

    if not args.directory.is_dir():
        raise SystemExit(f"hwmodel report: error: {args.directory} is not a directory")
    if args.readme is not None and not args.readme.is_file():
        raise SystemExit(f"hwmodel report: error: --readme {args.readme} is not a file")
    try:
        read_results(args.directory)  # a foreign or edited results.csv fails here, before plotting loads
        from ..report.markdown import update_readme
        from ..report.report import build_report

        index = build_report(args.directory)
        print(f"report: {index}")
        if args.readme is not None:
            print(f"readme: {update_readme(args.readme, args.directory)}")
    except (FileNotFoundError, ReportError, ConfigError) as error:
        raise SystemExit(f"hwmodel report: error: {error}") from None
    return 0
