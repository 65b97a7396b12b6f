"""Q1 on a pretrained Transformer: all-MiniLM-L6-v2 distilled toward its FP32 embeddings on the accumulator,
with the stage-1 (underflow off) / stage-2 (underflow on) split of a fixed step budget swept.

For each split s of S steps: a fresh copy of the encoder on the accumulator, s distillation steps with
underflow off, S - s with underflow on (lba_train.minilm_distill.distill: same seed, hence the same batch order,
for every split; the held-out sentences of prepare_workload are left unused, so every run takes S steps), then
the evaluation sentences' embeddings with the hardware's arithmetic (and, for reference, with underflow off).
Intervals: lba_train.minilm.bootstrap_metrics over the evaluation sentences; differences to the one-stage run
(s = 0) are paired over the same resampled sentences.

    .venv/bin/python experiments/q1_underflow_split_minilm.py           # reports/q1_underflow_split_minilm/

Needs the optional extra: pip install '.[transformers]'. The digits half: experiments/q1_underflow_split.py.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch and Numba start their OpenMP pools

import numpy as np
import torch
from questions import (
    ROOT, Runs, check_formats, comma_list, command_line, experiment_main, markdown_table, provenance_lines, run_stamp,
    write_report,
)

from lba_core import MacConfig
from lba_train import minilm, minilm_distill
from lba_train.bias import BIAS_MODES, resolve_bias
from lba_train.convert import set_lba_config
from lba_train.layers import LayerOptions

SCRIPT = "q1_underflow_split_minilm.py"
RUN_KEY = ("acc", "split", "seed", "steps")  # the fields that identify a saved run (experiments/questions.py Runs)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", default="e4m3", help="operand format")
    parser.add_argument("--acc", default="e3m8",
                        help="accumulator (e3m8: half of its accumulation steps underflow zero-shot, docs/minilm.md)")
    parser.add_argument("--bias", choices=BIAS_MODES, default="paper", help="accumulator bias rule (not 'calibrate')")
    parser.add_argument("--steps", type=int, default=80, help="distillation steps S, both stages together")
    parser.add_argument("--splits", default=None, help="stage-1 steps to try (default 0, S/4, S/2, 3S/4, S)")
    parser.add_argument("--seeds", default="0,1", help="distillation seeds (batch order)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW peak learning rate of both stages")
    parser.add_argument("--finetune-batch-size", type=int, default=8, help="sentences per distillation step")
    parser.add_argument("--eval-limit", type=int, default=64,
                        help="use only the first N evaluation sentences (0: all)")
    parser.add_argument("--eval-file", type=Path, default=ROOT / "data/sentences/eval.txt")
    parser.add_argument("--finetune-file", type=Path, default=ROOT / "data/sentences/finetune.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/q1_underflow_split_minilm")
    parser.add_argument("--report-only", action="store_true", help="only rebuild report.md from the saved runs")
    args = parser.parse_args(argv)
    args.seeds = comma_list(args.seeds, int)
    args.splits = ([round(args.steps * quarter / 4) for quarter in range(5)] if args.splits is None
                   else comma_list(args.splits, int))
    if args.steps < 1 or any(not 0 <= split <= args.steps for split in args.splits):
        parser.error(f"--splits must lie in 0..--steps ({args.steps}), got {args.splits}")
    if args.bias == "calibrate":
        parser.error("--bias calibrate is not supported here: use format or paper")
    if args.eval_limit and args.eval_limit < 3:
        parser.error("--eval-limit must be 0 (all) or at least 3")
    check_formats(parser, "--acc", [args.acc])
    return args


def metric_cell(interval: dict) -> str:
    return f"{interval['estimate']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"


def check_extra() -> None:
    missing = minilm.extra_missing()
    if missing:
        raise SystemExit(missing)


def run_order(splits: list[int], steps: int) -> list[int]:
    """The one-stage run first (the others are compared with it), then all-stage-1, then the middle ones: a
    run cut short by the deadline still has the extremes."""
    return sorted(splits, key=lambda split: (split != 0, split != steps, abs(split - steps / 2)))


def run(args: argparse.Namespace, argv) -> Runs:
    runs = Runs(args.out / "runs.jsonl", RUN_KEY)
    evaluation = minilm.read_sentences(args.eval_file)[: args.eval_limit or None]
    work = minilm.prepare_workload(evaluation, minilm.read_sentences(args.finetune_file),
                                   finetune_batch_size=args.finetune_batch_size)
    cfg = resolve_bias(MacConfig(input=args.input, acc=args.acc), args.bias)
    command = command_line(argv, SCRIPT)
    plan = [(None, 0)] + [(split, seed) for seed in args.seeds for split in run_order(args.splits, args.steps)]
    for split, seed in plan:  # split None: zero-shot
        key = {"acc": args.acc, "split": split, "seed": seed, "steps": 0 if split is None else args.steps}
        if runs.done(**key):
            continue
        started = time.perf_counter()
        model = minilm.lbaify_minilm(work.encoder, cfg, LayerOptions(collect_stats=False))
        losses = []
        if split is not None:  # a fixed budget: no held-out early stopping, every step runs
            config = minilm_distill.DistillConfig(stage1_steps=split, stage2_steps=args.steps - split, lr=args.lr,
                                                  seed=seed)
            losses = minilm_distill.distill(model, work.train_batches, work.train_targets, config,
                                            progress=False).losses
        embeddings = minilm.embed(model, work.eval_batches)
        one_stage_path = args.out / f"one_stage_{args.acc}_seed{seed}_steps{args.steps}.pt"
        if split == 0:
            torch.save(embeddings, one_stage_path)
        one_stage = torch.load(one_stage_path) if split and one_stage_path.exists() else None
        set_lba_config(model, underflow=False)
        row = {**key, "cfg": cfg.name, "lr": args.lr, "sentences": len(evaluation),
               "training_sentences": sum(len(target) for target in work.train_targets), "losses": losses,
               "underflow_on": minilm.bootstrap_metrics(embeddings, work.reference, one_stage).as_dict(),
               "underflow_off": minilm.bootstrap_metrics(minilm.embed(model, work.eval_batches),
                                                         work.reference).as_dict(),
               "seconds": round(time.perf_counter() - started, 1), "command": command, "finished": run_stamp()}
        runs.add(row)
        print(f"{cfg.name} split {split}/{key['steps']} seed {seed}: cosine "
              f"{metric_cell(row['underflow_on']['metrics']['mean_cosine'])} (underflow off "
              f"{metric_cell(row['underflow_off']['metrics']['mean_cosine'])}) {row['seconds']:.0f} s", flush=True)
    return runs


def report(args: argparse.Namespace, runs: Runs) -> Path:
    lines = ["# Q1 on MiniLM: where to switch underflow on during distillation", ""] + provenance_lines(runs.rows)
    for acc in dict.fromkeys(row["acc"] for row in runs.rows):
        zero_shot = runs.select(acc=acc, split=None)
        for steps in sorted({row["steps"] for row in runs.select(acc=acc)} - {0}):
            for seed in sorted({row["seed"] for row in runs.select(acc=acc, steps=steps)}):
                rows = sorted(runs.select(acc=acc, steps=steps, seed=seed), key=lambda row: row["split"])
                first = rows[0]
                lines += [f"## accumulator {acc} (`{first['cfg']}`), S = {steps} steps, AdamW peak lr {first['lr']}, "
                          f"seed {seed}, {first['sentences']} evaluation sentences, "
                          f"{first['training_sentences']} training sentences", ""]
                table = []
                if zero_shot:
                    shot = zero_shot[0]
                    table.append(["zero-shot", *(metric_cell(shot["underflow_on"]["metrics"][name])
                                                 for name in ("mean_cosine", "spearman", "top1")), "", "",
                                  metric_cell(shot["underflow_off"]["metrics"]["mean_cosine"]), ""])
                for row in rows:
                    measured, difference = row["underflow_on"]["metrics"], row["underflow_on"]["difference"]
                    paired = ([metric_cell(difference[name]) for name in ("mean_cosine", "spearman")] if difference
                              else ["(reference)"] * 2 if row["split"] == 0 else ["–"] * 2)
                    losses = row["losses"]
                    table.append([f"{row['split']} + {steps - row['split']}",
                                  *(metric_cell(measured[name]) for name in ("mean_cosine", "spearman", "top1")),
                                  *paired, metric_cell(row["underflow_off"]["metrics"]["mean_cosine"]),
                                  f"{np.mean(losses[-10:]):.4f}" if losses else ""])
                lines += markdown_table(["stage-1 + stage-2 steps", "mean cosine", "Spearman", "top-1",
                                         "cosine minus one-stage", "Spearman minus one-stage",
                                         "mean cosine, underflow off", "loss, last 10 steps"], table)
                lines += [""]
            seeds = sorted({row["seed"] for row in runs.select(acc=acc, steps=steps)})
            if len(seeds) > 1:
                lines += [f"### Over seeds {seeds}: mean cosine and its paired difference to one stage, per seed", ""]
                splits = sorted({row["split"] for row in runs.select(acc=acc, steps=steps)})
                summary = []
                for split in splits:
                    by_seed = [runs.select(acc=acc, steps=steps, seed=seed, split=split) for seed in seeds]
                    cosines = [rows[0]["underflow_on"]["metrics"]["mean_cosine"]["estimate"] if rows else None
                               for rows in by_seed]
                    differences = [rows[0]["underflow_on"]["difference"] if rows else None for rows in by_seed]
                    summary.append([f"{split} + {steps - split}",
                                    " / ".join("–" if value is None else f"{value:.4f}" for value in cosines),
                                    f"{np.mean([v for v in cosines if v is not None]):.4f}",
                                    "(reference)" if split == 0 else " / ".join(
                                        "–" if value is None else f"{value['mean_cosine']['estimate']:+.4f}"
                                        for value in differences)])
                lines += markdown_table(["stage-1 + stage-2 steps", "mean cosine per seed", "mean over seeds",
                                         "minus one-stage, per seed"], summary)
                lines += [""]
    lines += ["Metrics with the hardware's arithmetic (underflow on) against the FP32 model's embeddings of the "
              "evaluation sentences, [95% percentile bootstrap over sentences] (lba_train.minilm.bootstrap_metrics); "
              "the differences to the one-stage (0 + S) run are paired (the same resampled sentences). 'underflow "
              "off': the same trained model evaluated without flushing (not the hardware's arithmetic). Loss: "
              "1 - cosine to the teacher on the training batch, the last 10 steps (stage 2's arithmetic unless "
              "stage 2 is empty). Each stage has lba_train.minilm_distill.DistillConfig's own schedule (linear "
              "warm-up, cosine decay to zero at the stage's end); no early stopping, so every run takes S steps.", ""]
    return write_report(args.out, lines)


def main(argv=None) -> int:
    return experiment_main(parse_args(argv), RUN_KEY, run, report, argv, check_extra)


if __name__ == "__main__":
    raise SystemExit(main())
