"""Q1: how sensitive is the two-stage recipe to the point where underflow is switched on?

A float model is fine-tuned on the accumulator for a fixed number of epochs T; the first s of them train with
underflow off (stage 1), the other T - s with the hardware's flushing accumulator (stage 2), for s = 0 (the
one-stage ablation) ... T (no stage 2). Both stages use the same learning rate, so the split is the only
difference. Every accuracy is measured with underflow on; per seed the float baseline (its initial weights
and batch order come from the seed), the accumulator bias and the validation examples are shared by all
splits, so each split is compared with the one-stage run on the same examples and seeds (hwmodel.report.stats).

    .venv/bin/python experiments/q1_underflow_split.py                  # reports/q1_underflow_split/
    .venv/bin/python experiments/q1_underflow_split.py --data imagefolder:PATH --model resnet --accs e4m3

An accumulator named with its bias (``e2m5_b-14``) keeps that bias; a plain name (``e3m2``) gets the bias
calibrated on training batches. The MiniLM half of the question: experiments/q1_underflow_split_minilm.py.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch and Numba start their OpenMP pools

from questions import (
    add_report_options, question_parser,
    ACCURACY_NOTE, Runs, accuracy_cell, bias_mode, check_formats, comma_list, command_line, comparison_cells,
    configs,    correctness, experiment_main, markdown_table, provenance_lines, run_stamp, write_report,
)

from lba_core import MacConfig
from lba_train import FinetuneOptions, load_data, train_baseline
from lba_train import finetune as finetune_model

SCRIPT = "q1_underflow_split.py"
DATA_SEED = 0  # one train/validation split for every run: seeds vary the initial weights and the batch order
RUN_KEY = ("acc", "split", "seed", "epochs")  # the fields that identify a saved run (experiments/questions.py Runs)



def parse_args(argv=None) -> argparse.Namespace:
    parser = question_parser(__doc__, "e2m5_b-14,e3m2,e3m4",
                             "accumulators (see docs/experiments.md for why these discriminate)")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs T, both stages together")
    parser.add_argument("--splits", default=None, help="stage-1 epochs to try (default every s = 0..T)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the baseline and of the fine-tuning")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of both stages")
    parser.add_argument("--epochs-baseline", type=int, default=10, metavar="N", help="float baseline epochs (Adam lr 3e-3)")
    add_report_options(parser, "reports/q1_underflow_split")
    args = parser.parse_args(argv)
    args.accs, args.seeds = comma_list(args.accs), comma_list(args.seeds, int)
    args.splits = list(range(args.epochs + 1)) if args.splits is None else comma_list(args.splits, int)
    if args.epochs < 1 or any(not 0 <= split <= args.epochs for split in args.splits):
        parser.error(f"--splits must lie in 0..--epochs ({args.epochs}), got {args.splits}")
    check_formats(parser, "--accs", args.accs)
    return args


def run(args: argparse.Namespace, argv) -> Runs:
    runs = Runs(args.out / "runs.jsonl", RUN_KEY)
    data = load_data(args.data, seed=DATA_SEED)
    command = command_line(argv, SCRIPT)
    for seed in args.seeds:
        todo = [(acc, split) for acc in args.accs for split in args.splits
                if not runs.done(acc=acc, split=split, seed=seed, epochs=args.epochs)]
        if not todo:
            continue
        baseline = train_baseline(args.model, data, epochs=args.epochs_baseline, seed=seed)
        for acc, split in todo:
            started = time.perf_counter()
            options = FinetuneOptions(epochs=(split, args.epochs - split), lr=(args.lr, args.lr),
                                      bias=bias_mode(acc), seed=seed)
            result = finetune_model(baseline.model, data.train, data.val, MacConfig(input=args.input, acc=acc),
                                    options=options)
            steps = sum(row.get("steps", 0) for row in result.zero_shot_events)
            runs.add({
                "acc": acc, "split": split, "seed": seed, "epochs": args.epochs, "model": args.model,
                "data": data.name, "cfg": result.cfg.name, "lr": args.lr, "baseline": result.baseline,
                "zero_shot": result.zero_shot, "stage1_nouf": result.stage1_nouf, "stage2": result.stage2,
                **{f"zero_shot_{event}_rate": sum(row.get(event, 0) for row in result.zero_shot_events) / max(steps, 1)
                   for event in ("overflow", "underflow", "swamp")},
                "history": result.history, "labels": result.labels,
                "predictions": {key: result.predictions[key] for key in ("zero_shot", "stage1_nouf", "stage2")
                                if key in result.predictions},
                "seconds": round(time.perf_counter() - started, 2), "command": command, "finished": run_stamp(),
            })
            print(f"seed {seed} {result.cfg.name} split {split}/{args.epochs}: {100 * result.stage2:.1f}% "
                  f"(underflow off after stage 1: {100 * result.stage1_nouf:.1f}%)", flush=True)
    return runs


def report(args: argparse.Namespace, runs: Runs) -> Path:
    lines = ["# Q1: where to switch underflow on (two-stage fine-tuning, split swept)", ""]
    lines += provenance_lines(runs.rows)
    for acc in dict.fromkeys(row["acc"] for row in runs.rows):
        for epochs in sorted({row["epochs"] for row in runs.select(acc=acc)}):
            rows = runs.select(acc=acc, epochs=epochs)
            seeds = sorted({row["seed"] for row in rows})
            splits = sorted({row["split"] for row in rows})
            complete = [seed for seed in seeds if all(runs.select(acc=acc, epochs=epochs, split=s, seed=seed)
                                                      for s in splits)]
            first = rows[0]
            rates = {event: sum(row[f"zero_shot_{event}_rate"] for row in rows) / len(rows)
                     for event in ("overflow", "underflow", "swamp")}
            lines += [f"## {first['model']} on {first['data']}, accumulator {acc} ({configs(rows)}), "
                      f"T = {epochs} epochs, Adam lr {first['lr']}, seeds {complete}", "",
                      f"Float baseline {100 * sum(r['baseline'] for r in rows) / len(rows):.1f}% (mean over runs); "
                      f"zero-shot event rates (share of accumulation steps): overflow {rates['overflow']:.2%}, "
                      f"underflow {rates['underflow']:.2%}, swamp {rates['swamp']:.2%}.", ""]
            by_split = {split: runs.select(acc=acc, epochs=epochs, split=split) for split in splits}
            final = {split: correctness(by_split[split], "stage2", complete) for split in splits}
            nouf = {split: correctness(by_split[split], "stage1_nouf", complete) if split else None for split in splits}
            later = [split for split in splits if split]
            differences = dict(zip(later, comparison_cells([(final[split], final.get(0)) for split in later])))
            table = [[f"{split} + {epochs - split}", accuracy_cell(final[split]), differences.get(split, "(reference)"),
                      accuracy_cell(nouf[split])] for split in splits]
            lines += markdown_table(["stage-1 + stage-2 epochs", "accuracy, underflow on (%)",
                                     "minus one-stage (0 + T), pp", "after stage 1, underflow off (%)"], table)
            lines += [""]
    lines += [ACCURACY_NOTE, ""]
    return write_report(args.out, lines)


def main(argv=None) -> int:
    return experiment_main(parse_args(argv), RUN_KEY, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
