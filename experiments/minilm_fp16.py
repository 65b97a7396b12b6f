"""Why fp16 with calibrated operand margins still loses ~0.006 of MiniLM cosine against fp32 (issue 26): per-layer
event rates of the sweep's fp16 row, and the same row with margins that leave no calibrated partial sum above
fp16's range.

    .venv/bin/python experiments/minilm_fp16.py              # reports/minilm_fp16/ (needs the transformers extra)
    .venv/bin/python experiments/minilm_fp16.py --sentences 49 --out /tmp/fp16

Rows, all zero-shot, e4m3 operands, on the sweep's evaluation sentences (hwmodel.workloads.minilm):
``fp32`` and ``fp16`` as in the default sweep (bias mode "margin": per-layer power-of-two operand margins from the
first fine-tuning batch of 8 sentences, the bias calibration's headroom rule: at most 1e-4 of the calibrated
partial sums above the accumulator's top binade), then ``fp16`` with margins from the same batch but no
calibrated sum allowed above it (``overflow_fraction=0``), and ``fp16`` with the sweep's margins plus one binade
on every layer. Each row: mean cosine to the float model with its 95% bootstrap interval, the paired difference
from the fp32 row, and the per-layer overflow/underflow/swamp rates. Each finished row (with its embeddings) is
saved in ``.cache/minilm_fp16/rows.json`` at once (git-ignored; a rerun skips finished rows).
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

from lba_core import MacConfig
from lba_core.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
#: (row name, accumulator, how its margins are chosen)
ROWS = (("fp32", "fp32", "sweep"), ("fp16", "fp16", "sweep"), ("fp16, no calibrated overflow", "fp16", "no-overflow"),
        ("fp16, sweep margins + 1", "fp16", "plus-one"))


def margins_for(model, cfg: MacConfig, how: str, batches) -> dict[str, int]:
    from lba_train.bias import calibrate_scale_margins

    if how == "no-overflow":
        return calibrate_scale_margins(model, cfg, batches, overflow_fraction=0.0)
    margins = calibrate_scale_margins(model, cfg, batches)
    return {name: value + 1 for name, value in margins.items()} if how == "plus-one" else margins


def run_row(work, acc: str, how: str, threads: int) -> dict:
    import torch

    from lba_train import minilm
    from lba_train.bias import set_scale_margins
    from lba_train.convert import event_stats_table, set_collect_stats
    from lba_train.layers import LayerOptions

    torch.set_num_threads(threads)
    started = time.perf_counter()
    cfg = MacConfig(input="e4m3", acc=acc)
    model = minilm.lbaify_minilm(work.encoder, cfg, LayerOptions(collect_stats=False))
    margins = margins_for(model, cfg, how, work.train_batches[:1])  # the sweep's calibration batch
    set_scale_margins(model, margins)
    set_collect_stats(model, True)
    embeddings = minilm.embed(model, work.eval_batches)
    layers = event_stats_table(model)
    set_collect_stats(model, False)
    return {"acc": acc, "margins_from": how, "margins": margins, "layers": layers,
            "embeddings": embeddings.tolist(), "seconds": time.perf_counter() - started}


def summarize(rows: dict, reference) -> list[dict]:
    import torch

    from lba_train import minilm

    base = torch.tensor(rows["fp32"]["embeddings"])
    out = []
    for name, row in rows.items():
        embeddings = torch.tensor(row["embeddings"])
        metrics = minilm.bootstrap_metrics(embeddings, reference, None if name == "fp32" else base, resamples=1000)
        steps = sum(layer.get("steps", 0) for layer in row["layers"]) or 1
        totals = {event: sum(layer.get(event, 0) for layer in row["layers"]) for event in ("overflow", "underflow", "swamp")}
        out.append({"row": name, "cosine": vars(metrics.metrics["mean_cosine"]),
                    "delta": None if metrics.difference is None else vars(metrics.difference["mean_cosine"]),
                    "rates": {event: count / steps for event, count in totals.items()}, "overflows": totals["overflow"],
                    "margins": row["margins"], "seconds": row["seconds"],
                    "worst": sorted(({"layer": layer["layer"], "overflow": layer.get("overflow", 0),
                                      "overflow_rate": layer.get("overflow", 0) / max(layer.get("steps", 0), 1),
                                      "swamp_rate": layer.get("swamp", 0) / max(layer.get("steps", 0), 1),
                                      "margin": row["margins"].get(layer["layer"], 0)}
                                     for layer in row["layers"]), key=lambda item: -item["overflow"])[:6]})
    return out


def markdown(summary: list[dict], meta: dict) -> str:
    lines = ["# MiniLM: where fp16 with calibrated margins loses against fp32", "",
             f"Command: `{meta['command']}`; {meta['date']}; {meta['machine']}; load average {meta['load_before']:.1f} "
             f"before, {meta['load_after']:.1f} after; {meta['seconds'] / 60:.1f} min wall; {meta['sentences']} "
             "evaluation sentences (the sweep's), e4m3 operands, zero-shot.", "",
             "Margins are chosen on the sweep's calibration batch (the first 8 fine-tuning sentences). Cosine: mean "
             "cosine to the float model, 95% bootstrap interval (1,000 resamples); Δ: paired with the fp32 row. Rates: "
             "shares of all accumulation steps (all layers).", "",
             "| row | mean cosine [95%] | Δ vs fp32 [95%] | overflow rate | overflowed steps | underflow rate | swamp rate | s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summary:
        cos, delta, rates = row["cosine"], row["delta"], row["rates"]
        delta_text = "—" if delta is None else f"{delta['estimate']:+.4f} [{delta['low']:+.4f}, {delta['high']:+.4f}]"
        lines.append(f"| {row['row']} | {cos['estimate']:.4f} [{cos['low']:.4f}, {cos['high']:.4f}] | {delta_text} | "
                     f"{rates['overflow']:.2e} | {row['overflows']:,} | {rates['underflow']:.2e} | {rates['swamp']:.3f} | "
                     f"{row['seconds']:.0f} |")
    lines += ["", "Layers with the most overflowed steps, per row (layer: overflowed steps, overflow rate, swamp rate, "
              "margin in binades):", ""]
    for row in summary:
        worst = "; ".join(f"`{item['layer']}`: {item['overflow']:,}, {item['overflow_rate']:.1e}, {item['swamp_rate']:.3f}, "
                          f"m={item['margin']}" for item in row["worst"] if item["overflow"]) or "none"
        lines.append(f"- {row['row']}: {worst}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=0, help="evaluation sentences (0: all, as the sweep)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "minilm_fp16")
    args = parser.parse_args(argv)
    if args.sentences < 0 or args.threads < 1:
        parser.error("--sentences must be >= 0 and --threads >= 1")
    from lba_train import minilm

    missing = minilm.extra_missing()
    if missing:
        parser.error(missing)
    from hwmodel.workloads.minilm import EVAL_FILE, FINETUNE_FILE

    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = ROOT / ".cache" / "minilm_fp16" / "rows.json"  # embeddings (5 MB): git-ignored
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(rows_path.read_text()) if rows_path.is_file() else {}
    rows = saved.get("rows", {}) if saved.get("sentences") == args.sentences else {}
    load_before, started = os.getloadavg()[0], time.perf_counter()
    evaluation = minilm.read_sentences(EVAL_FILE)
    evaluation = evaluation[:args.sentences] if args.sentences else evaluation
    work = minilm.prepare_workload(evaluation, minilm.read_sentences(FINETUNE_FILE), minilm.DEFAULT_HELD_OUT, 49, seed=0)
    for name, acc, how in ROWS:
        if name in rows:
            continue
        rows[name] = run_row(work, acc, how, args.threads)
        atomic_write_text(rows_path, json.dumps({"sentences": args.sentences, "rows": rows}) + "\n")
        print(f"{name}: {rows[name]['seconds']:.0f} s", flush=True)
    meta = {"command": "python experiments/minilm_fp16.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_before": load_before,
            "load_after": os.getloadavg()[0], "seconds": time.perf_counter() - started, "sentences": len(evaluation)}
    summary = summarize(rows, work.reference)
    atomic_write_text(args.out / "results.json", json.dumps({"meta": meta, "rows": summary}, indent=1) + "\n")
    atomic_write_text(args.out / "report.md", markdown(summary, meta))
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
