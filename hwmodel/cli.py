"""The ``hwmodel`` command line: one sub-command per module ``hwmodel.cmd_<name>``.

Each command module provides ``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# torch's and Numba's OpenMP pools busy-wait by default and starve each other on small machines (one training
# epoch measured 13-19 s busy-waiting vs 2.9 s passive on 2 cores); must be set before either library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lba_core import ConfigError, FormatError

COMMANDS = ["verilog", "report", "synth", "sweep", "paper_claim", "estimate", "train"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwmodel",
        description="Low-bit-width accumulator toolkit: RTL export, synthesis cost, bit-true training and sweeps.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"hwmodel.cmd_{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FormatError) as error:
        parser.exit(2, f"hwmodel {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
