"""``hwmodel report DIR``: rebuild a sweep's tables, plots and index.html from its results.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from .report import build_report


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        description="Rebuild results.md, the PNG/SVG plots and index.html of a sweep folder from its results.csv.",
    )
    parser.add_argument("directory", type=Path, help="a sweep report folder, e.g. reports/default")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.directory.is_dir():
        raise SystemExit(f"hwmodel report: error: {args.directory} is not a directory")
    try:
        index = build_report(args.directory)
    except FileNotFoundError as error:
        raise SystemExit(f"hwmodel report: error: {error}")
    print(f"report: {index}")
    return 0
