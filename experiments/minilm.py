"""all-MiniLM-L6-v2 with its GEMMs on low-bit-width accumulators: zero-shot and distillation-fine-tuned
embedding quality against the FP32-accumulator model, one row per accumulator format and stage.

    .venv/bin/python experiments/minilm.py                      # the report in reports/minilm/ (make minilm)
    .venv/bin/python experiments/minilm.py --accs fp32,e4m7 --finetune none --eval-limit 32   # a quick look

Needs the optional extra: pip install '.[transformers]'. See docs/minilm.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numba
import numpy as np
import torch

from lba_core import FloatFormat, MacConfig
from lba_core.fileio import atomic_write, atomic_write_text
from lba_train import minilm, minilm_distill
from lba_train.bias import BIAS_MODES, resolve_bias
from lba_train.layers import LayerOptions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ACCS = ("fp32", "e5m10", "e4m7", "e5m6", "e3m8", "e4m3")
CALIBRATION_BATCHES = 2
REFERENCE_FILE = "reference.npy"
INTERVAL_COLUMNS = tuple(f"{name}_{end}" for name in minilm.METRIC_NAMES for end in ("low", "high"))
DIFFERENCE_COLUMNS = tuple(f"diff_{name}{end}" for name in minilm.METRIC_NAMES for end in ("", "_low", "_high"))
COLUMNS = ("acc", "config", "stage", *minilm.METRIC_NAMES, *INTERVAL_COLUMNS, "baseline", *DIFFERENCE_COLUMNS,
           "differs_from_baseline", "overflow_rate", "underflow_rate", "swamp_rate", "mac_steps", "steps", "seconds")


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
    parser.add_argument("--chunk", type=int, default=None, metavar="N", help="MAC chunk size (default: one chunk)")
    defaults = minilm_distill.DistillConfig()
    parser.add_argument("--baseline", default="fp32",
                        help="the accumulator every row is compared with, stage by stage (its rows may come from another shard)")
    parser.add_argument("--stage1-steps", type=int, default=defaults.stage1_steps,
                        help="distillation steps with underflow=False, at most")
    parser.add_argument("--stage2-steps", type=int, default=defaults.stage2_steps,
                        help="distillation steps with underflow=True, at most")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="AdamW peak learning rate (warm-up, cosine decay)")
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps, help="linear warm-up steps per stage")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between held-out losses")
    parser.add_argument("--patience", type=int, default=defaults.patience,
                        help="held-out measurements without improvement that end a stage")
    parser.add_argument("--held-out", type=int, default=minilm.DEFAULT_HELD_OUT,
                        help="fine-tuning sentences held out for early stopping")
    parser.add_argument("--resamples", type=int, default=minilm.BOOTSTRAP_RESAMPLES,
                        help="bootstrap resamples of the evaluation sentences")
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
    FloatFormat.parse(args.baseline)
    try:
        args.distill = minilm_distill.DistillConfig(args.stage1_steps, args.stage2_steps, args.lr, args.seed,
                                                    warmup_steps=args.warmup_steps, eval_every=args.eval_every,
                                                    patience=args.patience)
    except ValueError as error:
        parser.error(str(error))
    if args.resamples < 2:
        parser.error("--resamples must be at least 2")
    return args


def prepare(args: argparse.Namespace) -> minilm.Workload:
    evaluation = minilm.read_sentences(args.eval_file)[: args.eval_limit]
    finetuning = minilm.read_sentences(args.finetune_file)
    return minilm.prepare_workload(evaluation, finetuning, args.held_out, args.batch_size, args.finetune_batch_size,
                                   args.max_length, args.seed)


def measure(model: torch.nn.Module, work: minilm.Workload, label: str) -> tuple[dict, torch.Tensor]:
    """Metrics and event rates of ``model`` on the evaluation set, with the hardware's arithmetic, and the
    embeddings (saved for the report's bootstrap)."""
    start = time.perf_counter()
    embeddings, events = minilm.embed_with_events(model, work.eval_batches, progress=label)
    row = minilm.embedding_metrics(embeddings, work.reference).as_dict()
    row.update({f"{event}_rate": events.rate(event) for event in ("overflow", "underflow", "swamp")})
    row.update(mac_steps=events.steps, eval_seconds=time.perf_counter() - start)
    return row, embeddings


def accumulator_config(base: MacConfig, bias_mode: str, work: minilm.Workload) -> MacConfig:
    """``base`` with the accumulator bias of ``bias_mode``; calibration looks at fine-tuning sentences only."""
    if bias_mode != "calibrate":
        return resolve_bias(base, bias_mode)
    model = _TokenBatches(minilm.lbaify_minilm(work.encoder, base, LayerOptions(collect_stats=False)))
    return resolve_bias(base, bias_mode, model, work.train_batches[:CALIBRATION_BATCHES])


def _save_array(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda stream: np.save(stream, array))


def run(args: argparse.Namespace, command: str) -> None:
    """Evaluate (and fine-tune) every accumulator of ``args.accs``; each finished row is saved at once as
    ``<out>/rows/<acc>-<stage>.json`` (so shards may run in parallel and a cut-short run keeps its rows)."""
    work = prepare(args)
    rows_dir = args.out / "rows"
    _save_array(rows_dir / REFERENCE_FILE, work.reference.numpy())
    for acc in args.accs:
        # The reference row is the standard IEEE accumulator, bias included (as in the sweep).
        bias = "format" if acc == args.baseline else args.bias
        cfg = accumulator_config(MacConfig(input=args.input, acc=acc, chunk_size=args.chunk), bias, work)
        model = minilm.lbaify_minilm(work.encoder, cfg, LayerOptions(collect_stats=False))
        stages = [("zero-shot", None)]
        if acc in args.finetune:
            stages.append(("fine-tuned", args.distill))
        for stage, distill_config in stages:
            start = time.perf_counter()
            result = None
            if distill_config is not None:
                result = minilm_distill.distill(model, work.train_batches, work.train_targets, distill_config,
                                                held_out=work.held_out)
            metrics, embeddings = measure(model, work, f"{acc} {stage}")
            row = {"acc": acc, "config": cfg.name, "stage": stage, **metrics}
            row.update(seconds=time.perf_counter() - start, steps=result.steps if result else 0,
                       losses=result.losses if result else [], held_out=result.held_out if result else [],
                       stage_steps=result.stage_steps if result else [0, 0],
                       kept_step=result.kept_step if result else [0, 0], command=command,
                       settings=_settings_text(args, bias, distill_config is not None))
            _save_array(rows_dir / f"{acc}-{stage}.npy", embeddings.numpy())
            atomic_write_text(rows_dir / f"{acc}-{stage}.json", json.dumps(row, indent=1))
            print(_row_text(row), flush=True)


class _TokenBatches(torch.nn.Module):
    """Calls the encoder with one token batch (a dict), as lba_train.bias's calibration calls a model."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: dict) -> torch.Tensor:
        return self.encoder(**batch)


def _row_text(row: dict) -> str:
    return (f"{row['acc']:>8} {row['stage']:<10} {row['steps']:>3} steps  cos {row['mean_cosine']:.4f}  spearman {row['spearman']:.4f}  "
            f"top1 {row['top1']:.3f}  swamp {row['swamp_rate']:.3g}  underflow {row['underflow_rate']:.3g}  "
            f"overflow {row['overflow_rate']:.3g}  ({row['seconds']:.0f} s)")


def _settings_text(args: argparse.Namespace, bias: str, finetuned: bool) -> str:
    text = (f"inputs {args.input}, bias rule {bias}, chunk {args.chunk or 'none'}, "
            f"{args.eval_limit or 'all'} eval sentences in batches of {args.batch_size}, max {args.max_length} tokens")
    if finetuned:
        d = args.distill
        text += (f"; distillation at most {d.stage1_steps} steps underflow=False + {d.stage2_steps} steps "
                 f"underflow=True, batch {args.finetune_batch_size}, AdamW peak lr {d.lr:g} ({d.warmup_steps} warm-up "
                 f"steps, cosine decay per stage), held-out loss on {args.held_out} fine-tuning sentences every "
                 f"{d.eval_every} steps, patience {d.patience}, seed {d.seed}")
    return text


def _row_order(row: dict) -> tuple:
    acc_rank = DEFAULT_ACCS.index(row["acc"]) if row["acc"] in DEFAULT_ACCS else len(DEFAULT_ACCS)
    return acc_rank, row["acc"], row["stage"] != "zero-shot"


def _load_rows(out: Path) -> tuple[list[dict], dict[tuple[str, str], torch.Tensor], torch.Tensor]:
    rows_dir = out / "rows"
    rows = sorted((json.loads(path.read_text()) for path in rows_dir.glob("*.json")), key=_row_order)
    if not rows or not (rows_dir / REFERENCE_FILE).is_file():
        raise SystemExit(f"no saved rows (or no {REFERENCE_FILE}) in {rows_dir}: nothing to report")
    reference = torch.from_numpy(np.load(rows_dir / REFERENCE_FILE))
    embeddings = {}
    for row in rows:
        array = torch.from_numpy(np.load(rows_dir / f"{row['acc']}-{row['stage']}.npy"))
        if array.shape != reference.shape:
            raise SystemExit(f"{rows_dir}/{row['acc']}-{row['stage']}.npy has {tuple(array.shape)} embeddings, the "
                             f"reference {tuple(reference.shape)}: rows of other evaluation sentences; rerun that row")
        embeddings[row["acc"], row["stage"]] = array
    return rows, embeddings, reference


def add_intervals(rows: list[dict], embeddings: dict, reference: torch.Tensor, baseline: str, resamples: int,
                  seed: int) -> None:
    """Bootstrap intervals of every row's metrics and, paired, of its differences from the baseline
    accumulator's row of the same stage (its zero-shot row when the baseline was not fine-tuned)."""
    for row in rows:
        base_stage = row["stage"] if (baseline, row["stage"]) in embeddings else "zero-shot"
        base = embeddings.get((baseline, base_stage))
        compare = base is not None and row["acc"] != baseline
        result = minilm.bootstrap_metrics(embeddings[row["acc"], row["stage"]], reference,
                                          base if compare else None, resamples, seed)
        for name, interval in result.metrics.items():
            row[f"{name}_low"], row[f"{name}_high"] = interval.low, interval.high
        row["baseline"] = f"{baseline} {base_stage}" if compare else ""
        for name in minilm.METRIC_NAMES:
            interval = result.difference[name] if compare else None
            for end, attribute in (("", "estimate"), ("_low", "low"), ("_high", "high")):
                row[f"diff_{name}{end}"] = getattr(interval, attribute) if interval else math.nan
        row["differs_from_baseline"] = result.differs() if compare else ""


def _interval(row: dict, name: str, digits: int = 3) -> str:
    return f"{row[name]:.{digits}f} [{row[name + '_low']:.{digits}f}, {row[name + '_high']:.{digits}f}]"


def write_reports(out: Path, baseline: str, resamples: int = minilm.BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[dict]:
    """results.csv and results.md from every row saved under ``out/rows``."""
    rows, embeddings, reference = _load_rows(out)
    add_intervals(rows, embeddings, reference, baseline, resamples, seed)
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    lines = [
        "# all-MiniLM-L6-v2 on low-bit-width accumulators",
        "",
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {len(rows)} rows in `rows/`. Every GEMM of "
        "the encoder (36 Linears, 12 attention products) runs bit-true on the accumulator; metrics compare the "
        f"{len(reference)} evaluation sentences' embeddings with the FP32 model's (see docs/minilm.md). Brackets: "
        f"95% percentile-bootstrap intervals over the sentences ({resamples} resamples, seed {seed}). 'vs {baseline}': "
        f"the paired bootstrap interval of the difference from the {baseline}-accumulator row of the same stage (its "
        "zero-shot row where it was not fine-tuned; the row list below names it); "
        "'differs' when some metric's interval excludes 0 (per row, not adjusted for multiplicity). Times are "
        "wall-clock seconds of one single-threaded process (machine load in docs/minilm.md). Event rates are per "
        "accumulation step over the evaluation pass.",
        "",
        f"| accumulator | config | stage | steps | mean cosine | Spearman | top-1 | Δcos vs {baseline} | ΔSpearman vs {baseline} "
        "| differs | underflow | swamp | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        compared = bool(row["baseline"])
        delta = {name: f"{row['diff_' + name]:+.4f} [{row['diff_' + name + '_low']:+.4f}, {row['diff_' + name + '_high']:+.4f}]"
                 if compared else "—" for name in ("mean_cosine", "spearman")}
        verdict = ("yes" if row["differs_from_baseline"] else "no") if compared else (
            "(baseline)" if row["acc"] == baseline else "—")
        lines.append(
            f"| {row['acc']} | `{row['config']}` | {row['stage']} | {row['steps']} | {_interval(row, 'mean_cosine', 4)} "
            f"| {_interval(row, 'spearman', 4)} | {_interval(row, 'top1')} | {delta['mean_cosine']} | {delta['spearman']} "
            f"| {verdict} | {row['underflow_rate']:.2e} | {row['swamp_rate']:.2e} | {row['seconds']:.0f} |")
    lines += ["", "## How each row was made", ""]
    for row in rows:
        line = f"- {row['acc']} {row['stage']}: `{row['command']}` ({row['settings']})"
        if row["baseline"]:
            line += f"; compared with {row['baseline']}"
        if row["steps"]:
            held = ", ".join(f"{step}: {loss:.4f}" for step, _, loss in row["held_out"])
            line += (f"; ran {row['stage_steps'][0]} + {row['stage_steps'][1]} steps, kept the weights after steps "
                     f"{row['kept_step'][0]} and {row['kept_step'][1]}; held-out loss by step {held}")
        lines.append(line)
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
    rows = write_reports(args.out, args.baseline, args.resamples, args.seed)
    print(f"{time.perf_counter() - start:.0f} s; {len(rows)} rows in {args.out / 'results.csv'} and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
