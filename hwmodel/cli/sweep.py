"""``hwmodel sweep``: the main job — area and accuracy of each accumulator configuration, side by side.

With no arguments it runs the embedded default (FP8 e4m3 inputs, eight accumulators, digits with the small
ResNet) into reports/default. ``--config FILE`` reads a larger grid from TOML; ``--acc LIST`` sweeps formats
given on the command line, area only (into reports/area) unless ``--accuracy`` is added. Every option is
checked before any work starts.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from lba_core import ConfigError

from .synth import synthesis_kwargs, synthesis_options, yosys_failure
from ..sweep import spec as sweep_spec
from ..sweep.spec import AREA_ONLY_NAME, GRID, MAIN_JOB, SweepSpec, check_buildable
from rtl.yosys import ToolError
from ..synthesis.limits import check_array_size, check_datapath_width
from ..workloads.settings import add_options, declared, help_text, shown, tables

__all__ = ["AREA_ONLY_NAME", "GRID_OPTIONS", "check_main_job_folder", "register", "run", "spec_from_args"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        description="For each MAC configuration: run the accuracy pipeline unless disabled (float baseline, "
        "zero-shot LBA, two-stage fine-tuning; the accumulator bias is chosen here) and synthesize the very "
        "configuration that was trained (gates, GE, LUTs, per-block area, reduction vs the baseline "
        "accumulator). Writes reports/<name>/area.csv+md, results.csv+md, sweep.json, plots and index.html. "
        "Finished points are kept in reports/<name>/points/ keyed by a hash of their settings: a rerun reuses "
        "what matches, an interrupted sweep resumes.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="sweep grid from a TOML file (see examples/sweep.toml)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), metavar="DIR", help="reports root (default: reports)")
    # Every option of the spec, from its declarations (hwmodel/sweep/spec.py and the workloads' settings tables),
    # read from the module when the parser is built (tests/test_settings.py adds a setting there).
    spec_cls, groups = sweep_spec.SweepSpec, {}
    for cls in (spec_cls, *tables(spec_cls).values()):
        add_options(parser, cls, groups)
    synthesis_options(parser, default_targets=shown(spec_cls().targets), jobs_help=help_text(spec_cls, "jobs"))
    parser.set_defaults(func=run, target=None, jobs=None)


def _option_values(args: argparse.Namespace) -> dict[str, object]:
    """Option -> the value given (None: not given), for every declared setting of the spec and its tables."""
    spec_cls = sweep_spec.SweepSpec
    values = {d.option: getattr(args, d.destination) for d in declared(spec_cls).values() if d.option}
    for table_cls in tables(spec_cls).values():
        values.update({d.option: getattr(args, d.destination) for d in declared(table_cls).values() if d.option})
    return values


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The sweep the options describe, every value checked (ConfigError naming the option or key)."""
    values = _option_values(args)
    if args.config is not None:
        spec = sweep_spec.load_sweep_spec(args.config)
    else:
        spec = sweep_spec.MAIN_JOB if args.acc is None else sweep_spec.SweepSpec()
        if args.acc is not None and args.accuracy is None:
            spec = replace(spec, name=AREA_ONLY_NAME, accuracy=replace(spec.accuracy, enabled=False))
        if args.acc is not None:
            spec = replace(spec, fixed_point=())  # --acc names every row; --fixed adds some
    return sweep_spec.apply_options(spec, values, from_file=args.config is not None)


#: Options that make a sweep other than the main job (its grid); without --name such a sweep is refused
#: rather than written into the main job's folder (docs/sweep.md, "Report folders").
GRID_OPTIONS = tuple(d.destination for d in declared(SweepSpec).values() if d.group == GRID)


def check_main_job_folder(args: argparse.Namespace, spec: SweepSpec) -> None:
    """Only the main job (``hwmodel sweep`` without a grid option) writes reports/<main job's name>: an ad-hoc
    grid without --name would replace the committed report, so it is refused before any work."""
    given = [option for option in GRID_OPTIONS if getattr(args, option) is not None]
    if args.name is None and args.config is None and given and spec.name == MAIN_JOB.name:
        flag = next(d.option for d in declared(SweepSpec).values() if d.option and d.destination == given[0])
        raise ConfigError(f"--name: a sweep with its own grid ({flag} ...) needs --name; the report folder "
                          f"{args.reports / MAIN_JOB.name} belongs to the main job (hwmodel sweep without grid options)")


def check_reports_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--reports {root}: is a file, not a folder")


def run(args: argparse.Namespace) -> int:
    from ..execution.interrupt import signals_interrupt
    from ..sweep.sweep import run_sweep  # imported here so that `hwmodel --help` stays fast

    with signals_interrupt():
        spec = spec_from_args(args)
        check_main_job_folder(args, spec)
        if spec.array_shape() is not None:
            check_array_size(*spec.array_shape())
        for cfg in check_buildable(spec):
            check_datapath_width(cfg)
        check_reports_root(args.reports)
        synthesis = synthesis_kwargs(args)
        out = args.reports / spec.name
        try:
            index = run_sweep(spec, out, synthesis=synthesis)
        except ToolError as error:
            return yosys_failure("sweep", error)
    print(f"area table: {out / 'area.md'}")
    print(f"results:    {out / 'results.md'}")
    print(f"report: {index}")
    return 0
