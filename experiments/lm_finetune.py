"""The paper's two-stage fine-tuning of the byte-level language model (data/lm/byte_lm.pt) on each accumulator,
with an fp32-accumulator row fine-tuned the same way as the control: test bits per byte zero-shot and after
fine-tuning, and the paired 95% bootstrap interval of each row's difference from the fp32 row of the same stage.

    make lm-finetune                                          # reports/lm_finetune/ (resumes finished rows)
    .venv/bin/python experiments/lm_finetune.py --accs fp32,e4m3 --windows 4 --steps 2,2 --out /tmp/lmft

Every row converts the float model and fits its accumulator as the sweep's zero-shot rows do (lba_train.lm:
static operand ranges from training windows; "margin" for fp32/fp16/bf16, a calibrated bias for the other
formats, the fused tensor-core accumulators as they are), then trains the same steps on the same windows
(lba_train.lm.finetune: stage 1 with underflow off, stage 2 with underflow on). Each finished row is a point,
``<out>/points/lmft-<hash>.json`` (hwmodel.execution.points, written atomically), keyed by the accumulator and
every setting and by the hashes of the model and the corpus manifest: an interrupted run resumes at the next
row; ``--report-only`` rebuilds report.md and results.json from the saved rows. The first accumulator is the
control (fp32 by default) and must be a float format.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from hwmodel.execution.points import point_path, read_point, write_point
from hwmodel.execution.provenance import settings_hash
from lba_core import MacConfig
from lba_core.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
#: The default sweep's accumulators, fp32 first (the control), then the tensor-core presets.
DEFAULT_ACCS = ("fp32", "fp16", "bf16", "e5m6", "e4m7", "e3m8", "e4m3", "e5m2", "hopper-fp8", "hopper-fp8+promote128")
STANDARD = ("fp32", "fp16", "bf16")


def comma_list(text: str, kind=str) -> list:
    items = [kind(item.strip()) for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("empty list")
    return items


def pair(text: str, kind):
    values = comma_list(text, kind)
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"one value or two (stage 1,stage 2), got {text!r}")
    return tuple(values) if len(values) == 2 else (values[0], values[0])


def bias_mode(cfg: MacConfig) -> str:
    """The sweep's rule: fused accumulators as they are, fixed-bias formats per-layer margins, others calibrated."""
    if cfg.fused_acc:
        return "format"
    return "margin" if cfg.acc.name in ("e8m23", "e5m10", "e8m7") or "_b" in cfg.acc.name else "calibrate"


def acc_width(cfg: MacConfig) -> int:
    """The accumulator's bits; a fused unit's output register (as the sweep's acc_bits)."""
    return cfg.acc.output.width if cfg.fused_acc else cfg.acc.width


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_args(argv):
    from lba_train.lm.checkpoint import DEFAULT_WEIGHTS
    from lba_train.lm.corpus import DEFAULT_CACHE
    from lba_train.lm.finetune import LMFinetuneOptions

    defaults = LMFinetuneOptions(steps=(12, 12), lr=(5e-4, 2.5e-4), batch=4, warmup=2)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", default="e4m3", help="operand (activation and weight) format")
    parser.add_argument("--accs", type=comma_list, default=",".join(DEFAULT_ACCS),
                        help="accumulators, comma-separated; the first is the control")
    parser.add_argument("--windows", type=int, default=32, help="test windows of 257 bytes")
    parser.add_argument("--calibration-windows", type=int, default=8, help="training windows for ranges and bias")
    parser.add_argument("--steps", type=lambda text: pair(text, int), default=",".join(map(str, defaults.steps)),
                        help="fine-tuning steps: stage 1 (underflow off),stage 2 (underflow on)")
    parser.add_argument("--lr", type=lambda text: pair(text, float), default=",".join(map(str, defaults.lr)),
                        help="peak learning rates of stage 1,stage 2 (AdamW, warm-up then cosine decay)")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="training windows per step")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="warm-up steps per stage")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS, help="a model saved by scripts/train_lm.py")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the corpus archive is fetched to")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "lm_finetune", help="report folder")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from the saved rows")
    args = parser.parse_args(argv)
    if isinstance(args.accs, str):
        args.accs = comma_list(args.accs)
    for name in ("windows", "calibration_windows", "batch", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.warmup < 0 or min(args.steps) < 0 or not min(args.lr) > 0:
        parser.error("--warmup and --steps must be >= 0 and --lr positive")
    configs = []
    for acc in args.accs:
        try:
            configs.append(MacConfig(input=args.input, acc=acc))
        except Exception as error:  # one clear line, before any work
            parser.error(f"--accs {acc!r} (with --input {args.input!r}): {error}")
    if configs[0].fused_acc:
        parser.error(f"--accs: the first accumulator is the control and must be a number format, got {args.accs[0]!r}")
    if not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    args.configs = configs
    return args


def row_key(args, cfg: MacConfig, model_hash: str, manifest_hash: str) -> str:
    return settings_hash({"kind": "lmft", "cfg": cfg.to_dict(), "bias_mode": bias_mode(cfg), "windows": args.windows,
                          "calibration_windows": args.calibration_windows, "steps": list(args.steps),
                          "lr": list(args.lr), "batch": args.batch, "warmup": args.warmup, "seed": 0,
                          "threads": args.threads, "model": model_hash, "corpus": manifest_hash})


def run_rows(args, points: Path, keys: dict[str, str], done=lambda count: None) -> int:
    """Every missing row, in order; ``done(count)`` after each; returns how many ran."""
    import torch

    from lba_train.lm.checkpoint import load_model
    from lba_train.lm.corpus import load_corpus
    from lba_train.lm.evaluate import LMEvalOptions, model_outputs, test_windows
    from lba_train.lm.finetune import LMFinetuneOptions, finetune_batches, finetune_point

    missing = [cfg for cfg in args.configs if read_point(point_path(points, "lmft", keys[cfg.name]), keys[cfg.name]) is None]
    if not missing:
        return 0
    torch.set_num_threads(args.threads)
    model, corpus = load_model(args.model), load_corpus(args.cache)
    windows = test_windows(model, corpus.test, args.windows)
    calibration = test_windows(model, corpus.train, args.calibration_windows)[:, :-1]
    reference = model_outputs(model, windows)
    options = LMFinetuneOptions(steps=args.steps, lr=args.lr, batch=args.batch, warmup=args.warmup, threads=args.threads)
    batches = finetune_batches(corpus.train, model.cfg.context, options)
    for cfg in missing:
        load_before, started = os.getloadavg(), time.perf_counter()
        evaluation = LMEvalOptions(windows=args.windows, calibration_windows=args.calibration_windows,
                                   bias=bias_mode(cfg), threads=args.threads)
        point = finetune_point(model, cfg, windows, calibration, reference, batches, evaluation, options)
        record = {"key": keys[cfg.name], "acc": cfg.acc.name, "bias_mode": bias_mode(cfg), "width": acc_width(cfg),
                  "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_before": load_before,
                  "load_after": os.getloadavg(), "seconds": time.perf_counter() - started, "point": point.as_dict()}
        write_point(point_path(points, "lmft", keys[cfg.name]), record)
        print(f"{cfg.acc.name}: zero-shot {point.zero_shot.bpb.value:.4f}, fine-tuned {point.finetuned.bpb.value:.4f} "
              f"bits/byte, {record['seconds']:.0f} s", flush=True)
        done(missing.index(cfg) + 1)
    return len(missing)


# ------------------------------------------------------------------------------------------------ the report
def _interval(entry: dict, signed: bool = False, digits: int = 4) -> str:
    form = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    return f"{form.format(entry['value'])} [{form.format(entry['low'])}, {form.format(entry['high'])}]"


def _rates(layers: list[dict]) -> dict[str, float]:
    steps = sum(row.get("steps", 0) for row in layers) or 1
    return {event: sum(row.get(event, 0) for row in layers) / steps for event in ("overflow", "underflow", "swamp")}


def row_summaries(records: list[dict]) -> list[dict]:
    """Per row and stage (zero-shot, fine-tuned): bits per byte and the paired Δ from the control (the first
    record) of the same stage, as intervals (lba_train.lm.stats, the evaluation's bootstrap settings)."""
    from hwmodel.workloads.comparison import acc_label
    from lba_train.lm.stats import bootstrap_mean, paired_difference

    control = records[0]["point"]
    summaries = []
    for record in records:
        point = record["point"]
        fitted = MacConfig.from_dict(point["config"]).acc  # with the bias the row was fitted with
        row = {"acc": acc_label(fitted), "width": record["width"], "record": record}
        for stage in ("zero_shot", "finetuned"):
            values = point[stage]["per_window"]["bpb"]
            row[stage] = {"bpb": bootstrap_mean(values).__dict__,
                          "delta": paired_difference(values, control[stage]["per_window"]["bpb"]).__dict__
                          if record is not records[0] else None,
                          "kl": point[stage]["kl_bits"], "top1": point[stage]["top1"],
                          "rates": _rates(point[stage]["layers"]), "nan": point[stage]["nan"], "inf": point[stage]["inf"]}
        summaries.append(row)
    return summaries


def narrowest_sentence(summaries: list[dict], stage: str, settings: dict) -> str:
    """Which narrowest accumulator's paired interval contains 0 (ties: every one of that width), or none."""
    steps = settings["steps"]
    label = "zero-shot" if stage == "zero_shot" else (
        f"after fine-tuning ({steps[0]} + {steps[1]} steps of {settings['batch']} windows)")
    control = summaries[0]["acc"]
    if len(summaries) < 2:
        return f"{label.capitalize()}: only the control row ({control}) has run; nothing to compare yet."
    within = [row for row in summaries[1:] if row[stage]["delta"] is not None
              and row[stage]["delta"]["low"] <= 0.0 <= row[stage]["delta"]["high"]]
    if not within:
        return (f"**{label.capitalize()}: no accumulator's 95% interval of Δ bits/byte against the {control} row "
                f"contains 0** (of the rows run).")
    width = min(row["width"] for row in within)
    names = ", ".join(f"{row['acc']} (Δ {_interval(row[stage]['delta'], True)})" for row in within if row["width"] == width)
    others = ", ".join(row["acc"] for row in within if row["width"] != width)
    return (f"**{label.capitalize()}, the narrowest accumulator whose 95% interval of Δ bits/byte against the "
            f"{control} row contains 0: {width} bits, {names}.**" + (f" Also within: {others}." if others else ""))


def markdown(summaries: list[dict], runs: list[dict], settings: dict) -> str:
    control = summaries[0]["record"]
    point = control["point"]
    seconds = sum(row["record"]["seconds"] for row in summaries)
    lines = ["# The language model fine-tuned on each accumulator (the paper's two stages)", ""]
    for run in runs:
        lines.append(f"Run: `{run['command']}`; {run['date']}; {run['machine']}; load average {run['load_before'][0]:.1f} "
                     f"before, {run['load_after'][0]:.1f} after; {run['rows']} rows in {run['seconds'] / 60:.1f} min wall.")
    lines += ["", f"Rows: {len(summaries)}, {seconds / 60:.1f} min in all (sum of the rows' wall times; each row's "
              "finishing time and load average before and after it are in the table).", "",
              f"Model `data/lm/byte_lm.pt` (ByteLM: 2 blocks, d_model 256, FFN 1024, context 256), operands "
              f"{settings['input']}; {point['zero_shot']['windows']} test windows of 256 scored bytes (Shakespeare "
              f"test split); static operand ranges from {settings['calibration_windows']} training windows; "
              "fp32/fp16/bf16 with per-layer operand margins, other formats with a calibrated bias, the fused "
              "tensor-core units as they are (lba_train.lm, as in the sweep's zero-shot rows).", "",
              f"Fine-tuning, the same for every row: stage 1 {settings['steps'][0]} steps with underflow off (lr "
              f"{settings['lr'][0]:g}), stage 2 {settings['steps'][1]} steps with underflow on (lr {settings['lr'][1]:g}); "
              f"AdamW, {settings['warmup']} warm-up steps then cosine decay per stage, gradient clipping at 1, STE; "
              f"{settings['batch']} random training windows of 257 bytes per step, the same windows in the same order "
              f"for every row ({sum(settings['steps']) * settings['batch'] * 256:,} training bytes seen).", "",
              "Intervals: 95% percentile bootstrap over test windows (2,000 resamples, seed 0); Δ is paired (same "
              f"windows) with the {summaries[0]['acc']} row of the same stage: zero-shot with zero-shot, fine-tuned "
              "with the equally fine-tuned control. Event rates and KL (to the float model) after fine-tuning.", "",
              narrowest_sentence(summaries, "zero_shot", settings), "", narrowest_sentence(summaries, "finetuned", settings), "",
              f"Rows in this report: {', '.join(row['acc'] for row in summaries)}"
              f"{'' if not settings.get('missing') else '; not run yet: ' + ', '.join(settings['missing'])}.", "",
              "| accumulator | bits | bits/byte zero-shot [95%] | Δ zero-shot | bits/byte fine-tuned [95%] | Δ fine-tuned "
              "vs fine-tuned control | KL | top-1 | overflow | underflow | swamp | NaN/Inf | skipped steps | wall s (finished UTC, load) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summaries:
        tuned, record = row["finetuned"], row["record"]
        delta = {stage: "—" if row[stage]["delta"] is None else _interval(row[stage]["delta"], True)
                 for stage in ("zero_shot", "finetuned")}
        rates = tuned["rates"]
        lines.append(f"| {row['acc']} ({record['bias_mode']}) | {row['width']} | {_interval(row['zero_shot']['bpb'])} | "
                     f"{delta['zero_shot']} | {_interval(tuned['bpb'])} | {delta['finetuned']} | "
                     f"{tuned['kl']['value']:.4f} | {tuned['top1']['value']:.3f} | {rates['overflow']:.1e} | "
                     f"{rates['underflow']:.1e} | {rates['swamp']:.1e} | {tuned['nan']}/{tuned['inf']} | "
                     f"{record['point']['skipped_steps']} | {record['seconds']:.0f} ({record['date']}, "
                     f"{record['load_before'][0]:.1f}–{record['load_after'][0]:.1f}) |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, records: list[dict], runs: list[dict], settings: dict) -> None:
    summaries = row_summaries(records)
    plain = {key: (list(value) if isinstance(value, tuple) else value) for key, value in settings.items()
             if key in ("input", "windows", "calibration_windows", "steps", "lr", "batch", "warmup", "threads", "missing")}
    results = {"settings": plain, "runs": runs,
               "rows": [{key: value for key, value in row.items() if key != "record"} for row in summaries],
               "narrowest": {stage: narrowest_sentence(summaries, stage, plain) for stage in ("zero_shot", "finetuned")}}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out / "report.md", markdown(summaries, runs, plain))


def main(argv: list[str] | None = None) -> int:
    from lba_train.lm.corpus import MANIFEST

    args = parse_args(argv)
    points = args.out / "points"
    model_hash, manifest_hash = file_hash(args.model), file_hash(MANIFEST)
    keys = {cfg.name: row_key(args, cfg, model_hash, manifest_hash) for cfg in args.configs}
    log_path = args.out / "runs.json"
    runs = json.loads(log_path.read_text()) if log_path.is_file() else []
    if not args.report_only:
        args.out.mkdir(parents=True, exist_ok=True)
        load_before, started = os.getloadavg(), time.perf_counter()
        entry = {"command": "python experiments/lm_finetune.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
                 "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": 0, "load_before": load_before}

        def done(count: int) -> None:  # the run's line is saved after every row, so an interrupted run keeps it
            entry.update(rows=count, load_after=os.getloadavg(), seconds=time.perf_counter() - started)
            atomic_write_text(log_path, json.dumps(runs + [entry], indent=1) + "\n")

        if run_rows(args, points, keys, done):
            runs.append(entry)
    records = [read_point(point_path(points, "lmft", keys[cfg.name]), keys[cfg.name]) for cfg in args.configs]
    if records[0] is None:
        print(f"{args.out}: the control row ({args.accs[0]}) has not run yet; no report written", file=sys.stderr)
        return 1
    settings = {**vars(args), "missing": [acc for acc, record in zip(args.accs, records) if record is None]}
    write_report(args.out, [record for record in records if record is not None], runs, settings)
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
