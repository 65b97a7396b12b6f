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
from ..sweep.spec import (
    DEFAULT_ACCUMULATORS, MAIN_JOB, AccuracySpec, LMSpec, MiniLMSpec, SweepSpec, check_buildable, load_sweep_spec,
)
from rtl.yosys import ToolError
from ..synthesis.limits import check_array_size, check_datapath_width

#: Report folder of an area-only sweep without --name, so that it never replaces the main report.
AREA_ONLY_NAME = "area"


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


def _numbers(kind):
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


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
    parser.add_argument("--name", help="report folder under --reports (default: the file's name; 'default'; "
                        f"'{AREA_ONLY_NAME}' for an area-only sweep)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), metavar="DIR", help="reports root (default: reports)")
    spec, trained = SweepSpec(), AccuracySpec()  # the defaults the help texts name
    grid = parser.add_argument_group("grid (without --config)")
    grid.add_argument("--in", dest="inputs", type=_list, metavar="LIST", help=f"input format(s) (default: {','.join(spec.inputs)})")
    grid.add_argument("--acc", type=_list, metavar="LIST",
                      help=f"accumulator formats; area only unless --accuracy (default: {','.join(DEFAULT_ACCUMULATORS)}, "
                      "with accuracy)")
    grid.add_argument("--product", metavar="FMT", help="product format (default: exact product)")
    grid.add_argument("--rounding", type=_list, metavar="LIST", help=f"rounding mode(s): rne, rtz (default: {','.join(spec.rounding)})")
    grid.add_argument("--chunk", type=_numbers(int), metavar="LIST", help=f"chunk size(s); 0 = one chunk (default: {','.join(map(str, spec.chunk_sizes))})")
    grid.add_argument("--baseline", metavar="FMT", help=f"accumulator the reduction is measured against (default: {spec.baseline_acc})")
    grid.add_argument("--array", metavar="RxC",
                      help="also cost each configuration as an R x C PE array, chunk size R (docs/pe_array.md)")
    grid.add_argument("--fixed", metavar="LIST",
                      help="integer/fixed-point INPUT:ACC rows (default: int8:int32,int8:int16_sat,e4m3:fx48.18,"
                      "e4m3:fx32.10_sat with the default grid, none with --acc; 'none' for none)")
    execution = parser.add_argument_group("execution")
    execution.add_argument("--executor", help="where the accuracy and synthesis points run: local worker processes "
                           "(default) or ray tasks (one CPU each; needs pip install -e '.[cluster]'); same results "
                           "either way")
    execution.add_argument("--ray-address", metavar="ADDR",
                           help="with --executor ray: a running cluster's address (default: start one on this machine)")
    accuracy = parser.add_argument_group("accuracy")
    accuracy.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=None,
                          help="run the accuracy pipeline (default: on, off with --acc)")
    accuracy.add_argument("--model", help=f"mlp, resnet or transformer (default: {trained.model})")
    accuracy.add_argument("--data", help=f"digits, imagefolder:PATH or mnist:PATH (default: {trained.data})")
    accuracy.add_argument("--epochs", type=_numbers(int), metavar="E1[,E2]", help=f"fine-tuning epochs of stage 1 and 2 (default: {trained.epochs[0]},{trained.epochs[1]})")
    accuracy.add_argument("--epochs-baseline", type=int, metavar="N", help=f"epochs of the float baseline (default: {trained.epochs_baseline})")
    accuracy.add_argument("--lr", type=_numbers(float), metavar="LR[,LR2]", help=f"Adam learning rate of the fine-tuning stages (default: {trained.lr[0]:g},{trained.lr[1]:g})")
    accuracy.add_argument("--lr-baseline", type=float, metavar="LR", help=f"Adam learning rate of the baseline (default: {trained.lr_baseline:g})")
    accuracy.add_argument("--seed", type=int, help=f"seed of the split, the initialisation and the shuffles (default: {trained.seed})")
    accuracy.add_argument("--seeds", type=int, metavar="N",
                          help=f"fine-tuning seeds per configuration, --seed, --seed+1, ... (default: {trained.seeds}); accuracies are "
                          "their mean, the report shows the spread")
    accuracy.add_argument("--bias", help=f"accumulator bias of non-standard formats: calibrate, paper, format (default: {trained.bias})")
    accuracy.add_argument("--standard-bias", help=f"bias of fp32/fp16/bf16 accumulators (default: {trained.standard_bias} = standard)")
    accuracy.add_argument("--estimator", help=f"gradient estimator through the accumulator (default: {trained.estimator})")
    accuracy.add_argument("--width", type=int, metavar="N",
                          help="widen the model's hidden layers N times: N times longer dot products (K), about N^2 "
                          f"the MACs (default: {trained.width}; docs/sweep.md)")
    accuracy.add_argument("--device", help=f"where the points train: cpu or cuda (one GPU per point; a Ray task declares it; "
                          f"default: {trained.device})")
    minilm, defaults = parser.add_argument_group("MiniLM workload (needs pip install -e '.[transformers]')"), MiniLMSpec()
    minilm.add_argument("--minilm", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure all-MiniLM-L6-v2 embeddings on every floating-point accumulator (default: "
                        "on for the embedded default sweep, off otherwise); --model minilm makes it the only model")
    minilm.add_argument("--minilm-finetune", action=argparse.BooleanOptionalAction, default=None,
                        help="also distill each MiniLM model (default: on with --model minilm, off beside digits)")
    minilm.add_argument("--minilm-sentences", type=int, metavar="N",
                        help="the first N evaluation sentences (default: 0 = all 147)")
    minilm.add_argument("--minilm-steps", type=_numbers(int), metavar="S1[,S2]",
                        help=f"distillation steps per stage, at most (default: {defaults.steps[0]},{defaults.steps[1]})")
    minilm.add_argument("--minilm-lr", type=float, metavar="LR", help=f"distillation peak lr (default: {defaults.lr:g})")
    minilm.add_argument("--minilm-bias", help=f"bias of non-standard accumulators: paper or format (default: {defaults.bias})")
    minilm.add_argument("--minilm-held-out", type=int, metavar="N",
                        help=f"fine-tuning sentences held out for early stopping (default: {defaults.held_out})")
    minilm.add_argument("--minilm-resamples", type=int, metavar="N",
                        help=f"bootstrap resamples of the evaluation sentences (default: {defaults.resamples})")
    lm, lm_defaults = parser.add_argument_group("language-model workload (docs/lm.md)"), LMSpec()
    lm.add_argument("--lm", action=argparse.BooleanOptionalAction, default=None,
                    help="also measure the byte-level LM's bits per byte on every floating-point accumulator "
                    "(default: on for the embedded default sweep, off otherwise)")
    lm.add_argument("--lm-windows", type=int, metavar="N",
                    help=f"test windows of 257 bytes (default: {lm_defaults.windows})")
    lm.add_argument("--lm-calibration-windows", type=int, metavar="N",
                    help=f"training windows for operand ranges, bias and margins (default: {lm_defaults.calibration_windows})")
    lm.add_argument("--lm-standard-bias", help="fp32/fp16/bf16 accumulators: margin (per-layer power-of-two operand "
                    f"margins) or format (plain max-abs scaling, an ablation) (default: {lm_defaults.standard_bias})")
    lm.add_argument("--lm-resamples", type=int, metavar="N",
                    help=f"bootstrap resamples of the test windows (default: {lm_defaults.resamples})")
    synthesis_options(parser, default_targets=",".join(SweepSpec().targets))
    parser.add_argument("--energy", action="store_true", default=None,
                        help="also energy per MAC (gate-level switching on the digits ResNet's operands and on random "
                        "ones) for the standard-cell targets (default: off)")
    parser.set_defaults(func=run, target=None)


def _option_values(args: argparse.Namespace) -> dict[str, object]:
    epochs = None if args.epochs is None else list(args.epochs)
    return {
        "--name": args.name, "--in": args.inputs, "--acc": args.acc, "--product": args.product,
        "--rounding": args.rounding, "--chunk": args.chunk, "--baseline": args.baseline, "--array": args.array,
        "--fixed": args.fixed,
        "--target": None if args.target is None else list(args.target), "--energy": args.energy, "--jobs": args.jobs,
        "--executor": args.executor, "--ray-address": args.ray_address,
        "--accuracy": args.accuracy, "--model": args.model, "--data": args.data, "--epochs": epochs,
        "--epochs-baseline": args.epochs_baseline, "--lr": args.lr, "--lr-baseline": args.lr_baseline,
        "--seed": args.seed, "--seeds": args.seeds, "--bias": args.bias, "--standard-bias": args.standard_bias, "--estimator": args.estimator,
        "--width": args.width,
        "--device": args.device,
        "--minilm": args.minilm, "--minilm-finetune": args.minilm_finetune, "--minilm-sentences": args.minilm_sentences,
        "--minilm-steps": None if args.minilm_steps is None else list(args.minilm_steps), "--minilm-lr": args.minilm_lr,
        "--minilm-bias": args.minilm_bias, "--minilm-held-out": args.minilm_held_out,
        "--minilm-resamples": args.minilm_resamples,
        "--lm": args.lm, "--lm-windows": args.lm_windows, "--lm-calibration-windows": args.lm_calibration_windows,
        "--lm-standard-bias": args.lm_standard_bias, "--lm-resamples": args.lm_resamples,
    }


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The sweep the options describe, every value checked (ConfigError naming the option or key)."""
    from ..sweep.spec import apply_options

    values = _option_values(args)
    if args.config is not None:
        spec = load_sweep_spec(args.config)
    else:
        spec = MAIN_JOB if args.acc is None else SweepSpec()
        if args.acc is not None and args.accuracy is None:
            spec = replace(spec, name=AREA_ONLY_NAME, accuracy=replace(spec.accuracy, enabled=False))
        if args.acc is not None:
            spec = replace(spec, fixed_point=())  # --acc names every row; --fixed adds some
    return apply_options(spec, values, from_file=args.config is not None)


#: Options that make a sweep other than the main job (its grid); without --name such a sweep is refused
#: rather than written into the main job's folder (docs/sweep.md, "Report folders").
GRID_OPTIONS = ("inputs", "acc", "product", "rounding", "chunk", "baseline", "array", "fixed")


def check_main_job_folder(args: argparse.Namespace, spec: SweepSpec) -> None:
    """Only the main job (``hwmodel sweep`` without a grid option) writes reports/<main job's name>: an ad-hoc
    grid without --name would replace the committed report, so it is refused before any work."""
    given = [option for option in GRID_OPTIONS if getattr(args, option) is not None]
    if args.name is None and args.config is None and given and spec.name == MAIN_JOB.name:
        flag = "--in" if given[0] == "inputs" else "--" + given[0]
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
