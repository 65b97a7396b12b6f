"""``hwmodel train``: baseline, zero-shot and two-stage fine-tuning accuracy for a list of accumulator formats.

Trains (or reuses, from reports/<name>/baseline.pt) one float baseline, then runs lba_train's recipe once
per accumulator format, and writes reports/<name>/accuracy.csv and accuracy.md (with per-layer event
statistics). Every format checkpoints under reports/<name>/checkpoints/, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from lba_core import ROUNDING_MODES, ConfigError, MacConfig
from lba_core.fileio import atomic_write, atomic_write_text, markdown_table
from lba_train.bias import BIAS_MODES
from lba_train.data import load_data
from lba_train.estimators import ESTIMATORS
from lba_train.models import MODEL_NAMES
from lba_train.layers import LayerOptions
from lba_train.train import FinetuneOptions, run_accuracy_point, train_baseline

ACCURACY_KEYS = ("baseline", "exact_acc", "zero_shot", "stage1", "stage1_nouf", "stage2")


def _numbers(text: str, kind, name: str, count: int | None = None) -> tuple:
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--{name}: expected comma-separated {kind.__name__}s, got {text!r}") from None
    if count is not None and len(values) not in (1, count):
        raise ConfigError(f"--{name}: expected 1 or {count} values, got {text!r}")
    return values if count is None or len(values) == count else values * count


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
    parser.add_argument("--chunk", type=int, metavar="N", help="chunk size of the accumulation (default: one chunk)")
    parser.add_argument("--rounding", choices=ROUNDING_MODES, default="rne", help="rounding mode (default: rne)")
    parser.add_argument("--model", choices=MODEL_NAMES, default="resnet", help="model (default: resnet)")
    parser.add_argument("--data", default="digits", metavar="SPEC",
                        help="digits (default), imagefolder:PATH or mnist:PATH")
    parser.add_argument("--epochs-baseline", type=int, default=10, metavar="N",
                        help="float training epochs of the baseline (default: 10)")
    parser.add_argument("--epochs", default="1,1", metavar="E1,E2", help="fine-tuning epochs of stage 1 and stage 2 "
                        "(default: 1,1)")
    parser.add_argument("--lr", default="1e-3,5e-4", metavar="LR[,LR2]",
                        help="Adam learning rate of the fine-tuning stages (default: 1e-3,5e-4)")
    parser.add_argument("--lr-baseline", type=float, default=3e-3, metavar="LR",
                        help="Adam learning rate of the baseline (default: 3e-3)")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="ste",
                        help="gradient estimator through the accumulator (default: ste; docs/estimators.md)")
    parser.add_argument("--bias", choices=BIAS_MODES, default="calibrate",
                        help="accumulator exponent bias: calibrated on observed partial sums (default), the paper's "
                        "rule, or the format's own; operands are max-abs scaled to the top of their format, so a "
                        "narrow accumulator usually needs 'calibrate' (docs/training.md)")
    parser.add_argument("--one-stage", action="store_true",
                        help="also run the ablation: the same epochs with underflow on in both stages")
    parser.add_argument("--keep-first-last", action="store_true", help="keep the first and last layer in float")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the shuffles")
    parser.add_argument("--name", default="train", help="report name: results go to <reports>/<name>/")
    parser.add_argument("--reports", default="reports", metavar="DIR", help="reports folder (default: reports)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: the bit-true kernels dominate, and more threads "
                        "oversubscribe a small shared machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _baseline_state(args, bundle, folder: Path) -> dict:
    """Train the float baseline, or reuse the one saved by an earlier run with the same settings."""
    identity = {"model": args.model, "data": args.data, "seed": args.seed, "epochs": args.epochs_baseline,
                "lr": args.lr_baseline}
    path = folder / "baseline.pt"
    if path.exists():
        saved = torch.load(path, weights_only=False)
        if saved["identity"] == identity:
            print(f"reusing the float baseline in {path}")
            return saved["state"]
    trained = train_baseline(args.model, bundle, args.epochs_baseline, args.seed, args.lr_baseline,
                             progress=not args.quiet)
    print(f"float baseline: {100 * trained.accuracy:.2f}%")
    atomic_write(path, lambda stream: torch.save({"identity": identity, "state": trained.state}, stream))
    return trained.state


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
    epochs = _numbers(args.epochs, int, "epochs", 2)
    lr = _numbers(args.lr, float, "lr", 2)
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    configs = [MacConfig(args.input, acc, rounding=args.rounding, chunk_size=args.chunk)
               for acc in args.acc.split(",")]
    folder = Path(args.reports) / args.name
    folder.mkdir(parents=True, exist_ok=True)
    bundle = load_data(args.data, seed=args.seed)
    state = _baseline_state(args, bundle, folder)
    variants = [("two-stage", False)] + ([("one-stage", True)] if args.one_stage else [])
    rows = []
    for cfg in configs:
        for variant, stage1_underflow in variants:
            print(f"== {cfg.name} ({variant})")
            options = FinetuneOptions(
                epochs=epochs, lr=lr, bias=args.bias, layers=LayerOptions(estimator=args.estimator),
                keep_first_last=args.keep_first_last, stage1_underflow=stage1_underflow, seed=args.seed,
                checkpoint_dir=folder / "checkpoints" / f"{cfg.name}-{args.bias}-{variant}",
                progress=not args.quiet, log=print,
            )
            point = run_accuracy_point(cfg, args.model, bundle, options=options, baseline_state=state)
            rows.append({"variant": variant, **point})
    flat = pd.DataFrame([{k: v for k, v in row.items() if not isinstance(v, (list, dict))} for row in rows])
    atomic_write_text(folder / "accuracy.csv", flat.to_csv(index=False))
    atomic_write_text(folder / "accuracy.json", json.dumps(rows, indent=2))
    _write_markdown(folder / "accuracy.md", args, rows)
    print(folder / "accuracy.md")
    return 0
