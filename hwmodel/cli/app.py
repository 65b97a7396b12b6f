"""The ``hwmodel`` command line: one sub-command per module ``hwmodel.cli.<name>``.

Each command module provides ``register(subparsers)``, which adds its parser (with its description and
options) and sets ``func`` to a callable taking the parsed arguments and returning an exit status. The
one-line summaries and the examples of every command live in :data:`COMMANDS`, so that ``hwmodel --help``
lists them without importing any command module: only the module of the command actually given is imported,
and ``hwmodel --help`` or ``hwmodel verilog`` never load torch, pandas, matplotlib or Numba.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from dataclasses import dataclass

# torch's and Numba's OpenMP pools busy-wait by default and starve each other on small machines (one training
# epoch measured 13-19 s busy-waiting vs 2.9 s passive on 2 cores); must be set before either library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lba_core import ConfigError, FormatError  # noqa: E402
from lba_core.fileio import os_error_text  # noqa: E402

from ..execution.interrupt import Interrupted, signals_interrupt  # noqa: E402

PACKAGE = "lba-toolkit"


@dataclass(frozen=True)
class Command:
    summary: str
    examples: tuple[str, ...]

    def epilog(self) -> str:
        return "examples:\n" + "\n".join(f"  {example}" for example in self.examples)


COMMANDS = {
    "verilog": Command(
        "write the FMAq and MAC Verilog of one configuration",
        ("hwmodel verilog --in e4m3 --acc e4m7 -o build/e4m3-e4m7",
         "hwmodel verilog --in e4m3 --acc fp16 --chunk 16 --hierarchical -o build/e4m3-fp16",
         "hwmodel verilog --array 8x8 --in e4m3 --acc e4m7 -o build/array-8x8"),
    ),
    "synth": Command(
        "synthesize one configuration: gates, GE, µm², timing, energy, FPGA place and route, per block",
        ("hwmodel synth --in e4m3 --acc e4m7",
         "hwmodel synth --in e4m3 --acc bf16 --target generic,ice40 --json",
         "hwmodel synth --in e4m3 --acc e4m7 --target sky130,nangate45,ice40,ecp5 --json",
         "hwmodel synth --array 8x8 --in e4m3 --acc e4m7 --json"),
    ),
    "estimate": Command(
        "estimate a configuration's MAC GE with the fitted analytical cost model",
        ("hwmodel estimate --in e4m3 --acc e5m8",),
    ),
    "sweep": Command(
        "the main job: synthesize and fine-tune each accumulator configuration, report both",
        ("hwmodel sweep",
         "hwmodel sweep --config examples/sweep.toml",
         "hwmodel sweep --acc e4m7,e5m6 --name area-only"),
    ),
    "report": Command(
        "rebuild a sweep report (results.md, plots, index.html) from its results.csv",
        ("hwmodel report reports/default", "hwmodel report reports/default --readme README.md"),
    ),
    "paper-claim": Command(
        "measure the MAC area of FP8 inputs with FP32/FP16/BF16 and 12-bit accumulators",
        ("hwmodel paper-claim", "hwmodel paper-claim --out reports/paper_claim"),
    ),
    "train": Command(
        "fine-tune a model on low-bit-width accumulators and report its accuracy",
        ("hwmodel train --acc e4m7,e5m2 --model mlp --epochs 1,1",
         "hwmodel train --acc e4m3 --model mlp --epochs-baseline 5 --name mlp-e4m3"),
    ),
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that the examples section keeps its lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        prose, marker, examples = text.partition("examples:\n")
        filled = super()._fill_text(prose, width, indent) if prose.strip() else ""
        if not marker:
            return filled
        return (filled + "\n\n" if filled else "") + indent + marker + examples


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version(PACKAGE)
        except PackageNotFoundError:
            text = "unknown (not installed)"
        print(f"hwmodel {text} ({PACKAGE})")
        parser.exit(0)


def _module_name(command: str) -> str:
    return "hwmodel.cli." + command.replace("-", "_")


def _selected_command(argv: list[str]) -> str | None:
    """The command named in ``argv``, or None when the top-level help, the version or nothing is asked for.

    The top-level parser has no option that takes a value, so the first word not starting with '-' is the
    command; an option before it (``hwmodel --help verilog``) asks for the top-level parser itself."""
    for word in argv:
        if word.startswith("-"):
            return None
        return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` given, that command's module is imported and its options registered,
    the other commands appear by name and summary only."""
    parser = argparse.ArgumentParser(
        prog="hwmodel",
        description="Low-bit-width accumulator toolkit: RTL export, synthesis cost, bit-true training and sweeps.",
        epilog=Command("", ("hwmodel sweep", "hwmodel verilog --in e4m3 --acc e4m7 -o build/e4m3-e4m7",
                            "hwmodel synth --help")).epilog(),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in COMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=entry.summary)
            continue
        importlib.import_module(_module_name(name)).register(subparsers)
        registered = subparsers.choices[name]
        registered.epilog = entry.epilog()
        registered.formatter_class = _HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _selected_command(argv)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with signals_interrupt():  # SIGTERM (timeout, schedulers) as Ctrl-C: workers stopped, temp folders removed
            return int(args.func(args) or 0)
    except (ConfigError, FormatError) as error:
        parser.exit(2, f"hwmodel {args.command}: error: {error}\n")
    except Interrupted as stop:  # SIGINT/SIGTERM inside a command that handles them: one line, what was kept
        print(stop, file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except OSError as error:
        parser.exit(1, f"hwmodel {args.command}: error: {os_error_text(error)}\n")


if __name__ == "__main__":
    sys.exit(main())
