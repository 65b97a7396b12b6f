"""``hwmodel sweep``: the main job — area and accuracy of each accumulator configuration, side by side.

With no arguments it runs the embedded default (FP8 e4m3 inputs, eight accumulators, digits with the small
ResNet). ``--config FILE`` reads a larger grid from TOML; ``--acc LIST`` sweeps formats given on the command line
(area only unless ``--accuracy`` is added, so that a quick area table stays quick).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from lba_core import ROUNDING_MODES, ConfigError, FormatError

from .cmd_synth import synthesis_kwargs, synthesis_options, yosys_failure
from .sweepspec import DEFAULT_ACCUMULATORS, MODELS, SweepSpec, fixed_point_config, load_sweep_spec
from .synth import YosysError


def _list(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _epochs(text: str) -> tuple[int, int]:
    try:
        first, second = (int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected E1,E2 (epochs of stage 1 and stage 2), got {text!r}") from None
    if first < 0 or second < 0:
        raise argparse.ArgumentTypeError("epochs must be >= 0")
    return first, second


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        description="For each MAC configuration: synthesize it (gates, GE, LUTs, per-block area, reduction vs "
        "the baseline accumulator) and, unless disabled, run the accuracy pipeline (float baseline, zero-shot "
        "LBA, two-stage fine-tuning). Writes reports/<name>/area.csv+md, results.csv+md, PNG/SVG plots and "
        "index.html. Finished points are kept in reports/<name>/points/: an interrupted sweep resumes.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="sweep grid from a TOML file (see examples/sweep.toml)")
    parser.add_argument("--name", help="report folder under --reports (default: the file's name, or 'default')")
    parser.add_argument("--reports", type=Path, default=Path("reports"), metavar="DIR", help="reports root (default: reports)")
    grid = parser.add_argument_group("grid (without --config)")
    grid.add_argument("--in", dest="inputs", type=_list, default=("e4m3",), metavar="LIST", help="input format(s) (default: e4m3)")
    grid.add_argument(
        "--acc",
        type=_list,
        metavar="LIST",
        help=f"accumulator formats; area only unless --accuracy (default: {','.join(DEFAULT_ACCUMULATORS)}, with accuracy)",
    )
    grid.add_argument("--product", metavar="FMT", help="product format (default: exact product)")
    grid.add_argument("--rounding", type=_list, default=("rne",), metavar="LIST", help=f"rounding mode(s) from {','.join(ROUNDING_MODES)}")
    grid.add_argument("--chunk", type=int, default=0, metavar="N", help="chunk size (default: 0 = one chunk)")
    grid.add_argument("--array", metavar="RxC",
                      help="also cost each configuration as an R x C PE array, chunk size R (docs/pe_array.md)")
    grid.add_argument("--fixed", type=_fixed_list, metavar="LIST",
                      help="integer/fixed-point INPUT:ACC rows (default: int8:int32,int8:int16_sat,e4m3:fx48.18,"
                      "e4m3:fx32.10_sat with the default grid, none with --acc; 'none' for none)")
    grid.add_argument("--baseline", default="fp32", metavar="FMT", help="accumulator the reduction is measured against (default: fp32)")
    accuracy = parser.add_argument_group("accuracy")
    accuracy.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=None, help="run the accuracy pipeline")
    accuracy.add_argument("--model", choices=MODELS, help="model (default: resnet)")
    accuracy.add_argument("--data", help="digits, imagefolder:PATH or mnist:PATH (default: digits)")
    accuracy.add_argument("--epochs", type=_epochs, metavar="E1,E2", help="fine-tuning epochs of stage 1 and 2")
    accuracy.add_argument("--epochs-baseline", type=int, metavar="N", help="epochs of the float baseline")
    accuracy.add_argument("--seed", type=int, help="seed (default: 0)")
    synthesis_options(parser)
    parser.set_defaults(func=run)


def _fixed_list(text: str) -> tuple[str, ...]:
    """``--fixed`` value: comma-separated INPUT:ACC pairs, or "none"."""
    if text.strip().lower() == "none":
        return ()
    pairs = tuple(pair.strip() for pair in text.split(",") if pair.strip())
    for pair in pairs:
        try:
            fixed_point_config(pair)
        except (ConfigError, FormatError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return pairs


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    if args.config is not None:
        spec = load_sweep_spec(args.config, name=args.name)
    else:
        spec = SweepSpec(
            name=args.name or "default",
            inputs=args.inputs,
            accumulators=args.acc or DEFAULT_ACCUMULATORS,
            rounding=args.rounding,
            chunk_sizes=(args.chunk,),
            product=args.product,
            baseline_acc=args.baseline,
        )
        if args.acc is not None:
            spec = replace(spec, accuracy=replace(spec.accuracy, enabled=False), fixed_point=())
        if args.fixed is not None:
            spec = replace(spec, fixed_point=args.fixed)
        spec.configs()  # malformed formats or rounding modes fail here, before any work
    accuracy_changes = {
        key: value
        for key, value in (
            ("enabled", args.accuracy),
            ("model", args.model),
            ("data", args.data),
            ("epochs", args.epochs),
            ("epochs_baseline", args.epochs_baseline),
            ("seed", args.seed),
        )
        if value is not None
    }
    spec = replace(spec, accuracy=replace(spec.accuracy, **accuracy_changes))
    if args.config is None:
        spec = replace(spec, targets=tuple(args.target))
    if args.jobs:
        spec = replace(spec, jobs=args.jobs)
    if args.array is not None:
        spec = replace(spec, array=args.array)
        spec.configs()  # a malformed --array, or a chunk size that does not fit it, fails here
    return spec


def run(args: argparse.Namespace) -> int:
    from .sweep import run_sweep  # imported here so that `hwmodel --help` stays fast

    spec = spec_from_args(args)
    out = args.reports / spec.name
    try:
        index = run_sweep(spec, out, synthesis=synthesis_kwargs(args))
    except YosysError as error:
        return yosys_failure("sweep", error)
    print(f"area table: {out / 'area.md'}")
    print(f"results:    {out / 'results.md'}")
    print(f"report: {index}")
    return 0
