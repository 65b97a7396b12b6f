"""Q1 on a pretrained Transformer: all-MiniLM-L6-v2 distilled toward its FP32 embeddings on the accumulator,
with the stage-1 (underflow off) / stage-2 (underflow on) split of a fixed step budget swept.

For each split s of S steps: a fresh copy of the encoder on the accumulator, s distillation steps with
underflow off, S - s with underflow on (lba_train.minilm.distill: same seed, hence the same batch order, for
every split), then the evaluation sentences' embeddings with the hardware's arithmetic (and, for reference,
with underflow off). Interval: bootstrap over the evaluation sentences of the mean cosine to the FP32
embeddings; differences to the one-stage run (s = 0) are paired over the same sentences.

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
import torch.nn.functional as F
from questions import (
    ROOT, Runs, check_formats, comma_list, command_line, experiment_main, markdown_table, provenance_lines, run_stamp,
    write_report,
)

from lba_core import MacConfig
from lba_train import minilm
from lba_train.bias import BIAS_MODES, resolve_bias
from lba_train.convert import set_lba_config
from lba_train.layers import LayerOptions

SCRIPT = "q1_underflow_split_minilm.py"
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
RUN_KEY = ("acc", "split", "seed", "steps")  # the fields that identify a run in runs.jsonl


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", default="e4m3", help="operand format")
    parser.add_argument("--acc", default="e3m8",
                        help="accumulator (e3m8: half of its accumulation steps underflow zero-shot, docs/minilm.md)")
    parser.add_argument("--bias", choices=BIAS_MODES, default="paper", help="accumulator bias rule (not 'calibrate')")
    parser.add_argument("--steps", type=int, default=80, help="distillation steps S, both stages together")
    parser.add_argument("--splits", default=None, help="stage-1 steps to try (default 0, S/4, S/2, 3S/4, S)")
    parser.add_argument("--seeds", default="0", help="distillation seeds (batch order)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of both stages")
    parser.add_argument("--finetune-batch-size", type=int, default=8, help="sentences per distillation step")
    parser.add_argument("--eval-limit", type=int, default=64,
                        help="use only the first N evaluation sentences (0: all)")
    parser.add_argument("--eval-file", type=Path, default=ROOT / "data/sentences/eval.txt")
    parser.add_argument("--finetune-file", type=Path, default=ROOT / "data/sentences/finetune.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/q1_underflow_split_minilm")
    parser.add_argument("--report-only", action="store_true", help="only rebuild report.md from runs.jsonl")
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


def per_sentence_cosine(embeddings: torch.Tensor, reference: torch.Tensor) -> list[float]:
    return F.cosine_similarity(embeddings.double(), reference.double(), dim=1).tolist()


def measure(model, eval_batches, reference) -> dict:
    embeddings = minilm.embed(model, eval_batches)
    return {"cosines": per_sentence_cosine(embeddings, reference),
            **minilm.embedding_metrics(embeddings, reference).as_dict()}


def check_extra() -> None:
    missing = minilm.extra_missing()
    if missing:
        raise SystemExit(missing)


def run(args: argparse.Namespace, argv) -> Runs:
    runs = Runs(args.out / "runs.jsonl", RUN_KEY)
    encoder, tokenizer = minilm.load_minilm(), minilm.load_tokenizer()
    evaluation = minilm.read_sentences(args.eval_file)[: args.eval_limit or None]
    finetuning = minilm.read_sentences(args.finetune_file)
    if not minilm.sentences_disjoint(evaluation, finetuning):
        raise SystemExit(f"{args.eval_file} and {args.finetune_file} share sentences: the evaluation would leak")
    eval_batches = minilm.tokenize(tokenizer, evaluation)
    batches = minilm.tokenize(tokenizer, finetuning, args.finetune_batch_size)
    reference = minilm.embed(encoder, eval_batches)
    targets = [minilm.embed(encoder, [batch]) for batch in batches]
    cfg = resolve_bias(MacConfig(input=args.input, acc=args.acc), args.bias)
    command = command_line(argv, SCRIPT)
    plan = [(None, 0)] + [(split, seed) for seed in args.seeds for split in args.splits]  # None: zero-shot
    for split, seed in plan:
        key = {"acc": args.acc, "split": split, "seed": seed, "steps": 0 if split is None else args.steps}
        if runs.done(**key):
            continue
        started = time.perf_counter()
        model = minilm.lbaify_minilm(encoder, cfg, LayerOptions(collect_stats=False))
        losses = []
        if split is not None:
            losses = minilm.distill(model, batches, targets,
                                    minilm.DistillConfig(split, args.steps - split, args.lr, seed), progress=False)
        row = {**key, "cfg": cfg.name, "lr": args.lr, "sentences": len(evaluation), "losses": losses,
               "underflow_on": measure(model, eval_batches, reference)}
        set_lba_config(model, underflow=False)
        row["underflow_off"] = measure(model, eval_batches, reference)
        row.update(seconds=round(time.perf_counter() - started, 1), command=command, finished=run_stamp())
        runs.add(row)
        print(f"{cfg.name} split {split}/{key['steps']} seed {seed}: cosine "
              f"{row['underflow_on']['mean_cosine']:.4f} (underflow off {row['underflow_off']['mean_cosine']:.4f}) "
              f"{row['seconds']:.0f} s", flush=True)
    return runs


def bootstrap_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` over resampled sentences."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAP_RESAMPLES, len(values)))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def cell(values: np.ndarray) -> str:
    low, high = bootstrap_interval(values)
    return f"{values.mean():.4f} [{low:.4f}, {high:.4f}]"


def report(args: argparse.Namespace, runs: Runs) -> Path:
    lines = ["# Q1 on MiniLM: where to switch underflow on during distillation", ""] + provenance_lines(runs.rows)
    for acc in dict.fromkeys(row["acc"] for row in runs.rows):
        zero_shot = runs.select(acc=acc, split=None)
        for steps in sorted({row["steps"] for row in runs.select(acc=acc)} - {0}):
            for seed in sorted({row["seed"] for row in runs.select(acc=acc, steps=steps)}):
                rows = sorted(runs.select(acc=acc, steps=steps, seed=seed), key=lambda row: row["split"])
                first = rows[0]
                lines += [f"## accumulator {acc} (`{first['cfg']}`), S = {steps} steps, AdamW lr {first['lr']}, "
                          f"seed {seed}, {first['sentences']} evaluation sentences", ""]
                reference = next((np.array(row["underflow_on"]["cosines"]) for row in rows if row["split"] == 0), None)
                table = []
                if zero_shot:
                    shot = zero_shot[0]
                    table.append(["zero-shot", cell(np.array(shot["underflow_on"]["cosines"])),
                                  f"{shot['underflow_on']['spearman']:.4f}", f"{shot['underflow_on']['top1']:.3f}",
                                  "", cell(np.array(shot["underflow_off"]["cosines"])), ""])
                for row in rows:
                    cosines = np.array(row["underflow_on"]["cosines"])
                    if reference is None or row["split"] == 0:
                        difference = "(reference)" if row["split"] == 0 else "–"
                    else:
                        difference = cell(cosines - reference)
                    losses = row["losses"]
                    table.append([f"{row['split']} + {steps - row['split']}", cell(cosines),
                                  f"{row['underflow_on']['spearman']:.4f}", f"{row['underflow_on']['top1']:.3f}",
                                  difference, cell(np.array(row["underflow_off"]["cosines"])),
                                  f"{np.mean(losses[-10:]):.4f}" if losses else ""])
                lines += markdown_table(["stage-1 + stage-2 steps", "mean cosine, underflow on", "Spearman",
                                         "top-1", "cosine minus one-stage (paired)", "mean cosine, underflow off",
                                         "loss, last 10 steps"], table)
                lines += [""]
    lines += [f"Cosine: mean over the evaluation sentences of the cosine similarity to the FP32 model's "
              f"embedding [{CONFIDENCE:.0%} percentile bootstrap over sentences, {BOOTSTRAP_RESAMPLES} resamples]; "
              "the paired column resamples the per-sentence differences to the one-stage (0 + S) run. Spearman "
              "(of the pairwise similarities) and top-1 self-retrieval are point values. 'underflow off': the same "
              "trained model evaluated without flushing (not the hardware's arithmetic). The loss (1 - cosine "
              "to the teacher on the training batch) of the last steps is measured with the stage-2 arithmetic "
              "unless stage 2 is empty.", ""]
    return write_report(args.out, lines)


def main(argv=None) -> int:
    return experiment_main(parse_args(argv), RUN_KEY, run, report, argv, check_extra)


if __name__ == "__main__":
    raise SystemExit(main())
