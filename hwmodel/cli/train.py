"""``hwmodel train``: baseline, zero-shot and two-stage fine-tuning accuracy for a list of accumulator formats.

Trains (or reuses) one float baseline, then runs lba_train's recipe once per accumulator format, and writes
reports/<name>/accuracy.csv and accuracy.md (with per-layer event statistics). The baseline and every
format's checkpoints are keyed by a hash of everything that determines them (settings, source files, tool
versions: hwmodel.execution.provenance), so an interrupted run resumes and a run with other settings never does.

Under ``torchrun --nproc_per_node=N`` every rank runs this command: rank 0 trains (or reads) the float
baseline and sends it to the others, fine-tuning is data-parallel (lba_train.distributed), and rank 0 alone
prints and writes the baseline, checkpoints and reports (docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from lba_core import ROUNDING_MODES, ConfigError, MacConfig
from lba_core.fileio import atomic_write, atomic_write_text, markdown_table, writable_folder
from lba_train.data import load_data
from lba_train.distributed import Ranks, current_ranks, from_rank0
from lba_train.finetuning import ACCURACY_KEYS, FinetuneOptions, run_accuracy_point
from lba_train.layers import LayerOptions
from lba_train.train import train_baseline

from ..execution import provenance
from ..execution.interrupt import Interrupted, signals_interrupt
from ..execution.points import point_path, read_point, write_point
from ..sweep.spec import AccuracySpec, SweepSpec, check_option
from ..workloads.digits import baseline_determinants
from ..workloads.settings import add_options

#: The accuracy settings of hwmodel sweep that hwmodel train takes, as fields of AccuracySpec.
TRAIN_SETTINGS = ("model", "data", "epochs_baseline", "epochs", "lr", "lr_baseline", "seed", "bias", "estimator")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        description="Train a float baseline, then for every accumulator format: convert it with lbaify, measure "
        "zero-shot accuracy and fine-tune in two stages (underflow off, then on). Writes "
        "reports/<name>/accuracy.csv and accuracy.md.",
    )
    parser.add_argument("--in", dest="input", default="e4m3", metavar="FMT", help="input format (default: e4m3)")
    parser.add_argument("--acc", default="e4m7,e5m2,e4m3", metavar="FMT[,FMT...]",
                        help="accumulator formats, comma-separated (default: e4m7,e5m2,e4m3)")
    parser.add_argument("--chunk", type=int, default=0, metavar="N", help="chunk size of the accumulation (default: 0 = one chunk)")
    parser.add_argument("--rounding", choices=ROUNDING_MODES, default="rne", help="rounding mode (default: rne)")
    # The accuracy options are hwmodel sweep's, from the same declarations (hwmodel/sweep/spec.py AccuracySpec):
    # one spelling, one help text, one default and one validator each.
    add_options(parser, AccuracySpec, names=TRAIN_SETTINGS, defaults=True)
    parser.add_argument("--one-stage", action="store_true",
                        help="also run the ablation: the same epochs with underflow on in both stages")
    parser.add_argument("--keep-first-last", action="store_true", help="keep the first and last layer in float")
    parser.add_argument("--name", default="train", help="report name: results go to <reports>/<name>/ (default: train)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), metavar="DIR", help="reports root (default: reports)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch intra-op threads (default 1: the bit-true kernels dominate, and more threads "
                        "oversubscribe a small shared machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def accuracy_settings(args: argparse.Namespace) -> AccuracySpec:
    """The checked options as the sweep's accuracy settings (one model, one seed, on the CPU)."""
    return AccuracySpec(model=args.model, data=args.data, epochs_baseline=args.epochs_baseline, epochs=tuple(args.epochs),
                        lr=tuple(args.lr), lr_baseline=args.lr_baseline, seed=args.seed, seeds=1, bias=args.bias,
                        estimator=args.estimator)


def baseline_key_of(args: argparse.Namespace) -> dict:
    """The float baseline's determinants: the sweep's digits baseline (one definition,
    hwmodel.workloads.digits.baseline_determinants) at this command's --threads."""
    return baseline_determinants(SweepSpec(accuracy=accuracy_settings(args)), threads=args.threads)


def point_determinants(args: argparse.Namespace, cfg: MacConfig, variant: str) -> dict:
    return {"kind": "train", "cfg": cfg.to_dict(), "variant": variant, "bias_mode": args.bias,
            "epochs": list(args.epochs), "lr": list(args.lr), "estimator": args.estimator,
            "keep_first_last": args.keep_first_last, "baseline": baseline_key_of(args)}


@dataclass(frozen=True)
class TrainPoint:
    """One format and variant: its key, its record (``points/train-<hash>.json``, hwmodel.execution.points) and
    lba_train's checkpoint folder (per-epoch checkpoints: an interrupted point resumes inside its epochs)."""

    cfg: MacConfig
    variant: str
    stage1_underflow: bool
    determinants: dict
    key: str
    record: Path
    checkpoints: Path

    def saved(self) -> dict | None:
        return read_point(self.record, self.key)


def _baseline_state(args, bundle, folder: Path, ranks: Ranks) -> dict:
    """Train the float baseline, or reuse the one an earlier run saved with the same determinants; on rank 0,
    which sends it to the other ranks (the float baseline is one process's work)."""
    if not ranks.writes:
        return from_rank0(None, ranks)
    determinants = baseline_key_of(args)
    path = point_path(folder / "points", "baseline", provenance.settings_hash(determinants), ".pt")
    if path.exists():
        print(f"reusing the float baseline {path}")
        return from_rank0(torch.load(path, weights_only=False, map_location="cpu")["state"], ranks)
    trained = train_baseline(args.model, bundle, args.epochs_baseline, args.seed, args.lr_baseline,
                             progress=not args.quiet)
    print(f"float baseline: {100 * trained.accuracy:.2f}%")
    atomic_write(path, lambda stream: torch.save({"determinants": determinants, "state": trained.state}, stream))
    return from_rank0(trained.state, ranks)


def check_args(args: argparse.Namespace) -> list[MacConfig]:
    """Every option checked, with the sweep's validators, before any training; the configurations."""
    args.model = check_option("--model", args.model)
    if args.model == "minilm":
        raise ConfigError("--model minilm: the pretrained MiniLM is a sweep workload (hwmodel sweep --model minilm) "
                          "or experiments/minilm.py; hwmodel train fine-tunes mlp, resnet or transformer")
    args.data = check_option("--data", args.data)
    args.epochs = check_option("--epochs", args.epochs)
    args.lr = check_option("--lr", args.lr)
    args.lr_baseline = check_option("--lr-baseline", args.lr_baseline)
    args.epochs_baseline = check_option("--epochs-baseline", args.epochs_baseline)
    args.seed = check_option("--seed", args.seed)
    args.bias = check_option("--bias", args.bias)
    args.estimator = check_option("--estimator", args.estimator)
    args.name = check_option("--name", args.name)
    check_option("--in", [args.input])
    accumulators = check_option("--acc", args.acc.split(","))
    args.chunk = check_option("--chunk", [args.chunk])[0]
    if args.threads < 1:
        raise ConfigError(f"--threads: expected an integer >= 1, got {args.threads}")
    if args.reports.exists() and not args.reports.is_dir():
        raise ConfigError(f"--reports {args.reports}: is a file, not a folder")
    return [MacConfig(args.input, acc, rounding=args.rounding, chunk_size=args.chunk or None) for acc in accumulators]


def _markdown_table(frame: pd.DataFrame) -> str:
    return markdown_table(list(frame.columns), ([f"{value:.4g}" if isinstance(value, float) else value for value in row]
                                                for row in frame.itertuples(index=False)))


def _write_markdown(path: Path, args, rows: list[dict]) -> None:
    table = pd.DataFrame(rows)
    summary = table[["acc_format", "acc_bias", "variant", *ACCURACY_KEYS]].copy()
    for key in ACCURACY_KEYS:
        summary[key] = (100 * summary[key]).round(2)
    parts = [
        f"# Accuracy on low-bit-width accumulators: {args.model} on {rows[0]['data']}",
        "",
        (f"Inputs {args.input}, bias mode `{args.bias}`, estimator `{args.estimator}`, epochs baseline "
        f"{args.epochs_baseline}, fine-tuning {args.epochs}, lr {args.lr}, seed {args.seed}."),
        ("Accuracies in percent on the validation split. `exact_acc`: quantized operands, exact accumulation (the "
        "wide-accumulator reference); `zero_shot`: converted, not fine-tuned; `stage1`/`stage2`: after each "
        "fine-tuning stage, measured with underflow on; `stage1_nouf`: after stage 1 with underflow off."),
        "",
        _markdown_table(summary),
    ]
    for row in rows:
        for title, key in (("zero-shot", "zero_shot_events"), ("after fine-tuning", "layer_events")):
            events = pd.DataFrame(row[key])
            columns = [c for c in ("layer", "type", "steps", "overflow_rate", "underflow_rate", "swamp_rate")
                       if c in events]
            parts += ["", f"## {row['cfg']} ({row['variant']}): layer events {title}", "",
                      _markdown_table(events[columns])]
    atomic_write_text(path, "\n".join(parts) + "\n")


def run(args: argparse.Namespace) -> int:
    configs = check_args(args)
    ranks = current_ranks("cpu")  # under torchrun: joins the process group (gloo)
    folder = writable_folder(args.reports / args.name, "report folder") if ranks.writes else args.reports / args.name
    torch.set_num_threads(args.threads)
    bundle = load_data(args.data, seed=args.seed)
    variants = [("two-stage", False)] + ([("one-stage", True)] if args.one_stage else [])
    points = []
    for cfg in configs:
        for variant, underflow in variants:
            determinants = point_determinants(args, cfg, variant)
            key = provenance.settings_hash(determinants)
            points.append(TrainPoint(cfg, variant, underflow, determinants, key, point_path(folder / "points", "train", key),
                                     folder / "checkpoints" / f"{cfg.name}-{variant}-{key[: provenance.SHORT_HASH]}"))
    finished = sum(point.saved() is not None for point in points)
    say = print if ranks.writes else (lambda *_: None)
    say(f"reusing {finished} of {len(points)} points (saved points are keyed by a hash of every setting)"
        + (f"; {ranks.world_size} ranks" if ranks.distributed else ""))
    with signals_interrupt():
        try:
            rows = _run_points(args, bundle, folder, points, ranks, say)
        except Interrupted as stop:
            saved = sum(point.saved() is not None for point in points)
            raise stop.with_message(f"interrupted: {saved} of {len(points)} points saved; rerun the same command to finish") from None
    if not ranks.writes:
        return 0
    flat = pd.DataFrame([{k: v for k, v in row.items() if not isinstance(v, (list, dict))} for row in rows])
    atomic_write_text(folder / "accuracy.csv", flat.to_csv(index=False))
    atomic_write_text(folder / "accuracy.json", json.dumps(rows, indent=2))
    _write_markdown(folder / "accuracy.md", args, rows)
    print(folder / "accuracy.md")
    return 0


def _run_points(args, bundle, folder: Path, points: list[TrainPoint], ranks: Ranks, say) -> list[dict]:
    """Each point's row: read back from its record, or computed (and its record saved, on rank 0). Every rank
    decides from the same records before any work, so the ranks run the same points."""
    saved = [point.saved() for point in points]
    state = _baseline_state(args, bundle, folder, ranks) if any(record is None for record in saved) else None
    rows = []
    for point, record in zip(points, saved):
        if record is not None:
            rows.append({column: record["row"][column] for column in record["columns"]})
            continue
        say(f"== {point.cfg.name} ({point.variant})")
        options = FinetuneOptions(
            epochs=tuple(args.epochs), lr=tuple(args.lr), bias=args.bias, layers=LayerOptions(estimator=args.estimator),
            keep_first_last=args.keep_first_last, stage1_underflow=point.stage1_underflow, seed=args.seed,
            checkpoint_dir=point.checkpoints, progress=not args.quiet and ranks.writes, log=print,
        )
        result = run_accuracy_point(point.cfg, args.model, bundle, options=options, baseline_state=state)
        row = {"variant": point.variant, "settings_hash": point.key[: provenance.SHORT_HASH], **result}
        if ranks.writes:  # the column order is kept: the record's JSON sorts its keys
            write_point(point.record, {"key": point.key, "determinants": point.determinants, "columns": list(row),
                                       "row": row})
        rows.append(row)
    return rows
