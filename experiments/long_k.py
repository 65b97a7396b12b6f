"""Long accumulations (issue #16 item 2): what the sweep's width knob (``--width``) does to K, to the events
per layer, to accuracy and to the time of an accuracy point (docs/sweep.md §7).

Each run is a small ``hwmodel sweep`` (one fine-tuning epoch with underflow on, one seed, generic synthesis)
of one model at one width; this script runs the missing ones (``--run``; finished points are reused, as in
any sweep) and writes reports/long_k/summary.md and summary.csv from their results.csv, layer_events.csv and
points: per run and accumulator the largest K, MACs per example, the whole-model and largest-K-layer swamp
rates, zero-shot and fine-tuned top-1 and the seconds of the point.

Run: .venv/bin/python experiments/long_k.py --work DIR [--run]     (sweeps go to DIR/<model>-w<width>)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from lba_core import standard_name
from lba_core.fileio import atomic_write_text, markdown_table

ROOT = Path(__file__).resolve().parent.parent
#: (model, width, accumulators): the MLP's hidden layers are 128w and 64w wide (K up to 128w), the ResNet's
#: channels 8w and 16w (K up to 144w); the widest runs get fewer accumulators (a point costs about w² more; at
#: width 32 a calibrated e4m7 point was killed by the kernel's OOM killer at 18 GB resident on a 23 GB machine).
RUNS = (
    ("mlp", 1, "fp32,bf16,e5m6,e4m7,e4m3"), ("mlp", 8, "fp32,bf16,e5m6,e4m7,e4m3"),
    ("mlp", 16, "fp32,bf16,e5m6,e4m7,e4m3"), ("mlp", 32, "fp32,bf16"),
    ("resnet", 1, "fp32,bf16,e4m7,e4m3"), ("resnet", 2, "fp32,bf16,e4m7,e4m3"),
    ("resnet", 4, "fp32,bf16,e4m7,e4m3"), ("resnet", 8, "fp32,bf16,e4m7,e4m3"),
)
TRAINING = ("--accuracy", "--epochs", "0,1", "--seeds", "1", "--target", "generic", "--jobs", "1")


def sweep_command(model: str, width: int, accs: str, work: Path) -> list[str]:
    return [sys.executable, "-m", "hwmodel.cli", "sweep", "--acc", accs, "--model", model, "--width", str(width),
            *TRAINING, "--reports", str(work), "--name", f"{model}-w{width}"]


def summarize(folder: Path, model: str, width: int) -> list[dict]:
    """One row per accumulator of a finished run's folder."""
    results = pd.read_csv(folder / "results.csv")
    layers = pd.read_csv(folder / "layer_events.csv")
    seconds = {}
    for path in (folder / "points").glob("accuracy-*.json"):
        record = json.loads(path.read_text())
        seconds[record["cfg"]] = record["seconds"]
    rows = []
    for _, row in results.iterrows():
        mine = layers[layers["config"] == row["config"]]
        widest = mine.loc[mine["k"].idxmax()]
        rows.append({
            "model": model, "width": width, "acc": standard_name(row["acc"]), "max_k": int(widest["k"]),
            "max_k_layer": widest["layer"], "macs_per_example": int(mine["macs_per_example"].sum()),
            "swamp_rate": row["swamp_rate"], "max_k_swamp_rate": widest["swamp_rate"],
            "peak_layer_swamp_rate": mine["swamp_rate"].max(), "underflow_rate": row["underflow_rate"],
            "overflow_rate": row["overflow_rate"], "top1_zero_shot": row["top1_zero_shot"],
            "top1_stage2": row["top1_stage2"], "point_seconds": seconds.get(row["config"]),
        })
    return rows


def _percent(value: float) -> str:
    return "0" if value == 0 else "< 0.01" if value < 1e-4 else f"{100 * value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="reports root of the runs' sweep folders")
    parser.add_argument("--run", action="store_true", help="run the sweeps that are missing or unfinished")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "long_k", help="summary folder")
    args = parser.parse_args()
    rows = []
    for model, width, accs in RUNS:
        folder = args.work / f"{model}-w{width}"
        if args.run:
            subprocess.run(sweep_command(model, width, accs, args.work), check=True, cwd=ROOT)
        if not (folder / "layer_events.csv").is_file():
            print(f"{folder}: not run (pass --run)", file=sys.stderr)
            continue
        rows.extend(summarize(folder, model, width))
    if not rows:
        raise SystemExit(f"no finished run under {args.work}")
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "summary.csv", table.to_csv(index=False, float_format="%.6g"))
    header = ["Model", "Width", "Accumulator", "Largest K (layer)", "MACs / example", "Swamp [%]",
              "Swamp, largest-K layer [%]", "Swamp, worst layer [%]", "Underflow [%]", "Zero-shot top-1 [%]",
              "Fine-tuned top-1 [%]", "Point [s]"]
    body = [[row["model"], str(row["width"]), row["acc"], f"{row['max_k']:,} ({row['max_k_layer']})",
             f"{row['macs_per_example']:,}", _percent(row["swamp_rate"]), _percent(row["max_k_swamp_rate"]),
             _percent(row["peak_layer_swamp_rate"]), _percent(row["underflow_rate"]),
             f"{100 * row['top1_zero_shot']:.1f}", f"{100 * row['top1_stage2']:.1f}",
             "" if row["point_seconds"] is None else f"{row['point_seconds']:.0f}"] for row in rows]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"# Long accumulations: the sweep's --width knob\n\nEach run: `hwmodel sweep --acc ACCS --model MODEL "
            f"--width W {' '.join(TRAINING)}` (experiments/long_k.py; summary written {when} on "
            f"{platform.machine()}, {platform.node() or 'unnamed host'}). Rates: events per accumulation step of the "
            "fine-tuned model's evaluation on the 359 validation digits; point: seconds of one accuracy point (one "
            "fine-tuning epoch and four evaluations, one thread, on a shared machine).\n\n"
            + markdown_table(header, body, "lrllrrrrrrrr") + "\n")
    atomic_write_text(args.out / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
