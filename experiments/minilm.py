"""all-MiniLM-L6-v2 with its GEMMs on low-bit-width accumulators: zero-shot and distillation-fine-tuned
embedding quality against the FP32-accumulator model, one row per accumulator format and stage.

    .venv/bin/python experiments/minilm.py                      # the report in reports/minilm/
    .venv/bin/python experiments/minilm.py --accs e4m7 --finetune none --eval-limit 32   # a quick look

Needs the optional extra: pip install '.[transformers]'. See docs/minilm.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numba
import torch

from lba_core import FloatFormat, MacConfig
from lba_train import minilm
from lba_train.bias import BIAS_MODES, resolve_bias
from lba_train.convert import lba_layers, set_collect_stats
from lba_train.events import EventStats
from lba_train.layers import LayerOptions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ACCS = ("e5m10", "e4m7", "e5m6", "e3m8", "e4m3")
CALIBRATION_BATCHES = 2
COLUMNS = ("acc", "config", "stage", "mean_cosine", "spearman", "top1", "overflow_rate", "underflow_rate",
           "swamp_rate", "mac_steps", "seconds")


def _format_list(text: str) -> list[str]:
    if text.strip().lower() in ("", "none"):
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        FloatFormat.parse(name)  # a bad name fails here, before any work
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", default="e4m3", help="input (activation and weight) format")
    parser.add_argument("--accs", type=_format_list, default=list(DEFAULT_ACCS),
                        help="comma-separated accumulator formats, evaluated zero-shot")
    parser.add_argument("--finetune", type=_format_list, default=list(DEFAULT_ACCS),
                        help="comma-separated accumulators (a subset of --accs) to fine-tune, or 'none'")
    parser.add_argument("--bias", choices=BIAS_MODES, default="paper",
                        help="accumulator exponent bias: the format's own, the paper's rule, or calibrated")
    parser.add_argument("--chunk-size", type=int, default=None, help="MAC chunk size (default: one chunk)")
    parser.add_argument("--stage1-steps", type=int, default=4, help="distillation steps with underflow=False")
    parser.add_argument("--stage2-steps", type=int, default=4, help="distillation steps with underflow=True")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    parser.add_argument("--batch-size", type=int, default=49, help="sentences per evaluation batch")
    parser.add_argument("--finetune-batch-size", type=int, default=8, help="sentences per distillation step")
    parser.add_argument("--max-length", type=int, default=minilm.DEFAULT_MAX_LENGTH, help="tokens per sentence, at most")
    parser.add_argument("--eval-limit", type=int, default=None, help="use only the first N evaluation sentences")
    parser.add_argument("--eval-file", type=Path, default=ROOT / "data/sentences/eval.txt")
    parser.add_argument("--finetune-file", type=Path, default=ROOT / "data/sentences/finetune.txt")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and Numba threads; 1 avoids waiting on busy cores for every small GEMM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/minilm", help="folder for results.csv/.md")
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild results.csv/.md from the rows already saved in OUT/rows")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.finetune) - set(args.accs))
    if unknown:
        parser.error(f"--finetune names accumulators not in --accs: {', '.join(unknown)}")
    if args.eval_limit is not None and args.eval_limit < 3:
        parser.error("--eval-limit must be at least 3 (the metrics compare pairs and rankings)")
    return args


@dataclass
class Workload:
    """The FP32 model and everything computed once: token batches and the FP32 embeddings (the targets)."""

    encoder: minilm.SentenceEncoder
    eval_batches: list
    reference: torch.Tensor
    finetune_batches: list
    targets: list


def prepare(args: argparse.Namespace) -> Workload:
    encoder, tokenizer = minilm.load_minilm(), minilm.load_tokenizer()
    evaluation = minilm.read_sentences(args.eval_file)[: args.eval_limit]
    finetuning = minilm.read_sentences(args.finetune_file)
    if not minilm.sentences_disjoint(evaluation, finetuning):
        raise ValueError(f"{args.eval_file} and {args.finetune_file} share sentences: the evaluation would leak")
    eval_batches = minilm.tokenize(tokenizer, evaluation, args.batch_size, args.max_length)
    finetune_batches = minilm.tokenize(tokenizer, finetuning, args.finetune_batch_size, args.max_length)
    targets = [minilm.embed(encoder, [batch]) for batch in finetune_batches]
    return Workload(encoder, eval_batches, minilm.embed(encoder, eval_batches), finetune_batches, targets)


def total_events(model: torch.nn.Module) -> EventStats:
    total = EventStats()
    for _, layer in lba_layers(model):
        total.merge(layer.stats)
    return total


def measure(model: torch.nn.Module, work: Workload, label: str) -> dict:
    """Metrics and event rates of ``model`` on the evaluation set, with the hardware's arithmetic."""
    set_collect_stats(model, True)
    start = time.perf_counter()
    embeddings = minilm.embed(model, work.eval_batches, progress=label)
    events = total_events(model)
    set_collect_stats(model, False)  # counting costs time and is not needed while fine-tuning
    row = minilm.embedding_metrics(embeddings, work.reference).as_dict()
    row.update({f"{event}_rate": events.rate(event) for event in ("overflow", "underflow", "swamp")})
    row.update(mac_steps=events.steps, seconds=time.perf_counter() - start)
    return row


def accumulator_config(base: MacConfig, bias_mode: str, work: Workload) -> MacConfig:
    """``base`` with the accumulator bias of ``bias_mode``; calibration looks at fine-tuning sentences only."""
    if bias_mode != "calibrate":
        return resolve_bias(base, bias_mode)
    model = _TokenBatches(minilm.lbaify_minilm(work.encoder, base, LayerOptions(collect_stats=False)))
    return resolve_bias(base, bias_mode, model, work.finetune_batches[:CALIBRATION_BATCHES])


def run(args: argparse.Namespace, command: str) -> None:
    """Evaluate (and fine-tune) every accumulator of ``args.accs``; each finished row is saved at once as
    ``<out>/rows/<acc>-<stage>.json`` (so shards may run in parallel and a cut-short run keeps its rows)."""
    work = prepare(args)
    rows_dir = args.out / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    for acc in args.accs:
        cfg = accumulator_config(MacConfig(input=args.input, acc=acc, chunk_size=args.chunk_size), args.bias, work)
        model = minilm.lbaify_minilm(work.encoder, cfg, LayerOptions(collect_stats=False))
        stages = [("zero-shot", None)]
        if acc in args.finetune:
            stages.append(("fine-tuned", minilm.DistillConfig(args.stage1_steps, args.stage2_steps, args.lr, args.seed)))
        for stage, distill_config in stages:
            start = time.perf_counter()
            losses = []
            if distill_config is not None:
                losses = minilm.distill(model, work.finetune_batches, work.targets, distill_config)
            row = {"acc": acc, "config": cfg.name, "stage": stage, **measure(model, work, f"{acc} {stage}")}
            row.update(seconds=time.perf_counter() - start, losses=losses, command=command,
                       settings=_settings_text(args, distill_config is not None))
            (rows_dir / f"{acc}-{stage}.json").write_text(json.dumps(row, indent=1))
            print(_row_text(row), flush=True)


class _TokenBatches(torch.nn.Module):
    """Calls the encoder with one token batch (a dict), as lba_train.bias's calibration calls a model."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: dict) -> torch.Tensor:
        return self.encoder(**batch)


def _row_text(row: dict) -> str:
    return (f"{row['acc']:>8} {row['stage']:<10} cos {row['mean_cosine']:.4f}  spearman {row['spearman']:.4f}  "
            f"top1 {row['top1']:.3f}  swamp {row['swamp_rate']:.3g}  underflow {row['underflow_rate']:.3g}  "
            f"overflow {row['overflow_rate']:.3g}  ({row['seconds']:.0f} s)")


def _settings_text(args: argparse.Namespace, finetuned: bool) -> str:
    text = (f"inputs {args.input}, bias rule {args.bias}, chunk {args.chunk_size or 'none'}, "
            f"{args.eval_limit or 'all'} eval sentences in batches of {args.batch_size}, max {args.max_length} tokens")
    if finetuned:
        text += (f"; distillation {args.stage1_steps} steps underflow=False + {args.stage2_steps} steps "
                 f"underflow=True, batch {args.finetune_batch_size}, AdamW lr {args.lr}, seed {args.seed}")
    return text


def _row_order(row: dict) -> tuple:
    acc_rank = DEFAULT_ACCS.index(row["acc"]) if row["acc"] in DEFAULT_ACCS else len(DEFAULT_ACCS)
    return acc_rank, row["acc"], row["stage"] != "zero-shot"


def write_reports(out: Path) -> list[dict]:
    """results.csv and results.md from every row saved under ``out/rows``."""
    rows = sorted((json.loads(path.read_text()) for path in (out / "rows").glob("*.json")), key=_row_order)
    if not rows:
        raise SystemExit(f"no saved rows in {out / 'rows'}: nothing to report")
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    lines = [
        "# all-MiniLM-L6-v2 on low-bit-width accumulators",
        "",
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {len(rows)} rows in `rows/`. Every GEMM of "
        "the encoder (36 Linears, 12 attention products) runs bit-true on the accumulator; metrics compare the "
        "evaluation sentences' embeddings with the FP32 model's (see docs/minilm.md). Times are wall-clock "
        "seconds on a shared 2-core CPU machine under heavy contention (load average 6-10: five shards of this run in parallel plus other jobs): "
        "they are not benchmarks. Event rates are per accumulation step over the whole evaluation pass.",
        "",
        "| accumulator | config | stage | mean cosine | Spearman | top-1 | overflow | underflow | swamp | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['acc']} | `{row['config']}` | {row['stage']} | {row['mean_cosine']:.4f} | {row['spearman']:.4f} "
            f"| {row['top1']:.3f} | {row['overflow_rate']:.2e} | {row['underflow_rate']:.2e} "
            f"| {row['swamp_rate']:.2e} | {row['seconds']:.0f} |")
    lines += ["", "## How each row was made", ""]
    for row in rows:
        losses = ", ".join(f"{loss:.4f}" for loss in row["losses"])
        lines.append(f"- {row['acc']} {row['stage']}: `{row['command']}` ({row['settings']})"
                     + (f"; step losses {losses}" if losses else ""))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.manual_seed(args.seed)
    command = shlex.join([".venv/bin/python", "experiments/minilm.py", *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    if not args.report_only:
        run(args, command)
    rows = write_reports(args.out)
    print(f"{time.perf_counter() - start:.0f} s; {len(rows)} rows in {args.out / 'results.csv'} and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
