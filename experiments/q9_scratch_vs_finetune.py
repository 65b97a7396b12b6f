"""Q9: train from scratch on the low-bit-width accumulator, or train in float and fine-tune on it, with the
same number of optimizer steps?

Three arms per seed, each N epochs (the same batches per epoch, hence the same optimizer steps):
- float:    N epochs in float (lba_train.train_baseline); reference only, measured in float;
- finetune: N - F epochs in float, then F epochs of the two-stage fine-tuning on the accumulator
            (lba_train.finetune; F = stage 1 + stage 2 epochs);
- scratch:  a randomly initialised model (the same initial weights as the float arms) trained N epochs on the
            accumulator with lba_train.finetune (bias calibrated on the random model; epochs split between
            the stages as --scratch-epochs says).
Accuracies of the accumulator arms are measured with the hardware's arithmetic (underflow on) on the same
validation examples; scratch is compared with finetune paired over examples and seeds (hwmodel.report.stats). MACs:
forward MACs per example (lba_train.accumulator_coverage) times the training examples seen; a training step
costs about three times its forward (forward plus the two gradient GEMMs, which run in float here).

    .venv/bin/python experiments/q9_scratch_vs_finetune.py              # reports/q9_scratch_vs_finetune/
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
    configs, correctness, experiment_main, forward_macs_per_example, markdown_table, provenance_lines, run_stamp,
    write_report,
)

from lba_core import MacConfig
from lba_train import FinetuneOptions, build_model, finetune, load_data, train_baseline
from lba_train.train import predict

SCRIPT = "q9_scratch_vs_finetune.py"
DATA_SEED = 0  # one train/validation split for every run: seeds vary the initial weights and the batch order
RUN_KEY = ("arm", "acc", "seed", "epochs")  # the fields that identify a saved run (experiments/questions.py Runs)
ARMS = ("float", "finetune", "scratch")



def epoch_pair(text: str) -> tuple[int, int]:
    pair = tuple(comma_list(text, int))
    if len(pair) != 2 or min(pair) < 0:
        raise argparse.ArgumentTypeError(f"expected two non-negative epoch counts 'stage1,stage2', got {text!r}")
    return pair


def parse_args(argv=None) -> argparse.Namespace:
    parser = question_parser(__doc__, "e4m3,e3m2,e2m5_b-14",
                             "accumulators (a name with _bN keeps that bias)")
    parser.add_argument("--epochs", type=int, default=10, help="N: epochs of every arm")
    parser.add_argument("--finetune-epochs", type=epoch_pair, default=(1, 1),
                        help="F as 'stage1,stage2': the finetune arm's epochs on the accumulator")
    parser.add_argument("--scratch-epochs", type=epoch_pair, default=None,
                        help="'stage1,stage2' of the scratch arm (default 0,N: all with underflow on)")
    parser.add_argument("--float-lr", type=float, default=3e-3, help="Adam lr of float training")
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="Adam lr of both fine-tuning stages")
    parser.add_argument("--scratch-lr", type=float, default=3e-3, help="Adam lr of training from scratch")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the initial weights and the batch order")
    add_report_options(parser, "reports/q9_scratch_vs_finetune")
    args = parser.parse_args(argv)
    args.accs, args.seeds = comma_list(args.accs), comma_list(args.seeds, int)
    args.scratch_epochs = args.scratch_epochs or (0, args.epochs)
    if sum(args.scratch_epochs) != args.epochs or sum(args.finetune_epochs) > args.epochs:
        parser.error(f"--scratch-epochs must add up to --epochs ({args.epochs}) and --finetune-epochs "
                     f"({args.finetune_epochs}) may not exceed it")
    check_formats(parser, "--accs", args.accs)
    return args


def training_macs(forward_per_example: int, examples_per_epoch: int, epochs: int) -> int:
    """MACs of ``epochs`` of training: forward plus the two gradient GEMMs, about 3 x forward."""
    return 3 * forward_per_example * examples_per_epoch * epochs


def run(args: argparse.Namespace, argv) -> Runs:
    runs = Runs(args.out / "runs.jsonl", RUN_KEY)
    data = load_data(args.data, seed=DATA_SEED)
    examples, steps_per_epoch = len(data.train.dataset), len(data.train)
    command = command_line(argv, SCRIPT)
    float_epochs = args.epochs - sum(args.finetune_epochs)
    example_batch = next(iter(data.val))[0]
    for seed in args.seeds:
        common = {"seed": seed, "epochs": args.epochs, "model": args.model, "data": data.name,
                  "steps_per_epoch": steps_per_epoch, "examples_per_epoch": examples, "command": command}
        started = time.perf_counter()
        if not runs.done(arm="float", acc="float", seed=seed, epochs=args.epochs):
            trained = train_baseline(args.model, data, epochs=args.epochs, seed=seed, lr=args.float_lr)
            predicted, labels = predict(trained.model, data.val)
            runs.add({**common, "arm": "float", "acc": "float", "cfg": "float", "accuracy": trained.accuracy,
                      "labels": labels.tolist(), "predictions": {"final": predicted.tolist()},
                      "float_epochs": args.epochs, "lba_epochs": 0, "seconds": round(time.perf_counter() - started, 1),
                      "finished": run_stamp()})
        baseline = None
        for acc in args.accs:
            cfg = MacConfig(input=args.input, acc=acc)
            for arm in ("finetune", "scratch"):
                if runs.done(arm=arm, acc=acc, seed=seed, epochs=args.epochs):
                    continue
                started = time.perf_counter()
                if arm == "finetune":
                    if baseline is None:
                        baseline = train_baseline(args.model, data, epochs=float_epochs, seed=seed, lr=args.float_lr)
                    start_model, stages, lr = baseline.model, args.finetune_epochs, args.finetune_lr
                    seconds = baseline.seconds
                else:
                    start_model = build_model(args.model, data.input_shape, data.classes, seed)
                    stages, lr, seconds = args.scratch_epochs, args.scratch_lr, 0.0
                result = finetune(start_model, data.train, data.val, cfg, options=FinetuneOptions(
                    epochs=stages, lr=(lr, lr), bias=bias_mode(acc), seed=seed))
                on_accumulator, in_float = forward_macs_per_example(result.model, example_batch)
                runs.add({**common, "arm": arm, "acc": acc, "cfg": result.cfg.name, "accuracy": result.stage2,
                          "zero_shot": result.zero_shot, "labels": result.labels,
                          "predictions": {"final": result.predictions["stage2"]},
                          "float_epochs": args.epochs - sum(stages), "lba_epochs": sum(stages), "stages": list(stages),
                          "lr": lr, "forward_macs_accumulator": on_accumulator, "forward_macs_float": in_float,
                          "seconds": round(seconds + time.perf_counter() - started, 1), "finished": run_stamp()})
                print(f"seed {seed} {result.cfg.name} {arm}: {100 * result.stage2:.1f}%", flush=True)
    return runs


def report(args: argparse.Namespace, runs: Runs) -> Path:
    lines = ["# Q9: training from scratch on the accumulator vs fine-tuning a float model, same optimizer steps", ""]
    lines += provenance_lines(runs.rows)
    for epochs in sorted({row["epochs"] for row in runs.rows}):
        floats = runs.select(arm="float", epochs=epochs)
        seeds_float = sorted(row["seed"] for row in floats)
        first = runs.rows[0]
        lines += [f"## {first['model']} on {first['data']}, N = {epochs} epochs = {epochs * first['steps_per_epoch']} "
                  f"optimizer steps per arm ({first['examples_per_epoch']} training examples per epoch)", ""]
        float_cell = accuracy_cell(correctness(floats, "final", seeds_float))
        table = []
        macs_row = None
        for acc in dict.fromkeys(row["acc"] for row in runs.rows if row["arm"] != "float"):
            by_arm = {arm: runs.select(arm=arm, acc=acc, epochs=epochs) for arm in ("finetune", "scratch")}
            seeds = sorted(set.intersection(*({row["seed"] for row in rows} for rows in by_arm.values())))
            finetuned = correctness(by_arm["finetune"], "final", seeds)
            scratch = correctness(by_arm["scratch"], "final", seeds)
            difference, = comparison_cells([(scratch, finetuned)])
            table.append([f"{acc} ({configs(by_arm['finetune'] + by_arm['scratch'])})", str(seeds),
                          accuracy_cell(finetuned), accuracy_cell(scratch), difference])
            macs_row = macs_row or next((row for row in by_arm["scratch"] + by_arm["finetune"]), None)
        lines += [f"Float reference (N epochs in float, float arithmetic): {float_cell} %, seeds {seeds_float}.", ""]
        lines += markdown_table(["accumulator", "seeds", "finetune: float then accumulator (%)",
                                 "scratch: accumulator only (%)", "scratch minus finetune, pp"], table)
        if macs_row is not None:
            forward = macs_row["forward_macs_accumulator"] + macs_row["forward_macs_float"]
            examples = macs_row["examples_per_epoch"]
            finetune_row = next((row for row in runs.select(arm="finetune", epochs=epochs)), None)
            scratch_row = next((row for row in runs.select(arm="scratch", epochs=epochs)), None)
            macs = []
            for label, row in (("float", None), ("finetune", finetune_row), ("scratch", scratch_row)):
                lba_epochs = 0 if row is None else row["lba_epochs"]
                on_acc = macs_row["forward_macs_accumulator"] * examples * lba_epochs
                total = forward * examples * epochs * 3
                macs.append([label, f"{epochs - lba_epochs} + {lba_epochs}", f"{on_acc:.3g}", f"{total - on_acc:.3g}"])
            lines += ["", f"MACs per arm: {forward} forward MACs per example "
                          f"({macs_row['forward_macs_accumulator']} on the accumulator once converted); training "
                          "counted as 3 x forward per example seen (evaluation not counted).", ""]
            lines += markdown_table(["arm", "float + accumulator epochs", "MACs on the accumulator (forward)",
                                     "MACs in float (float epochs, and every backward)"], macs)
        lines += [""]
    lines += [ACCURACY_NOTE + " Here each row is one comparison: its p is not adjusted.", ""]
    return write_report(args.out, lines)


def main(argv=None) -> int:
    return experiment_main(parse_args(argv), RUN_KEY, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
