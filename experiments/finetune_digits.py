"""The fine-tuning demo: one float baseline on scikit-learn's digits, then zero-shot and two-stage fine-tuned
accuracy per accumulator format (e4m3 inputs), plus the one-stage ablation for the narrowest format.

    .venv/bin/python experiments/finetune_digits.py                  # resnet, e4m7,e5m2,e4m3, ablation on e4m3
    .venv/bin/python experiments/finetune_digits.py --model mlp --acc e4m7,e4m3 --epochs 2,2

Writes reports/<name>/results.json and results.md and prints the table. The baseline is cached in the
report folder and each format checkpoints per epoch, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lba_core import MacConfig
from lba_train.data import load_data
from lba_train.train import run_accuracy_point, train_baseline

ACCURACIES = ("baseline", "exact_acc", "zero_shot", "stage1_nouf", "stage1", "stage2")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet", choices=("mlp", "resnet", "transformer"))
    parser.add_argument("--data", default="digits", help="digits, imagefolder:PATH or mnist:PATH")
    parser.add_argument("--in", dest="input", default="e4m3", help="input format (default e4m3)")
    parser.add_argument("--acc", default="e4m7,e5m2,e4m3", help="accumulator formats, comma-separated")
    parser.add_argument("--ablation", default="e4m3",
                        help="formats that also get the one-stage ablation (empty for none)")
    parser.add_argument("--bias", default="calibrate", choices=("format", "paper", "calibrate"))
    parser.add_argument("--chunk", type=int, default=None, help="chunk size (default: one chunk)")
    parser.add_argument("--epochs-baseline", type=int, default=10)
    parser.add_argument("--epochs", default="1,1", help="fine-tuning epochs of stage 1 and stage 2")
    parser.add_argument("--lr", default="1e-3,5e-4", help="fine-tuning learning rates of stage 1 and stage 2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the bit-true kernels dominate and extra threads oversubscribe "
                        "a shared 2-core machine)")
    parser.add_argument("--name", default="finetune_digits", help="report folder under reports/")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args()


def markdown(rows: list[dict], header: str) -> str:
    columns = ["acc_format", "variant", *ACCURACIES, "events_overflow", "events_underflow", "events_swamp", "seconds"]
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            if column in ACCURACIES:
                cells.append(f"{100 * value:.2f}")
            elif column.startswith("events_"):
                cells.append(f"{value / max(row['events_steps'], 1):.2e}")
            elif column == "seconds":
                cells.append(f"{value:.0f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    epochs = tuple(int(part) for part in args.epochs.split(","))
    lr = tuple(float(part) for part in args.lr.split(","))
    folder = Path("reports") / args.name
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bundle = load_data(args.data, seed=args.seed)
    baseline_path = folder / f"baseline-{args.model}-{args.epochs_baseline}-{args.seed}.pt"
    if baseline_path.exists():
        state = torch.load(baseline_path)
    else:
        trained = train_baseline(args.model, bundle, args.epochs_baseline, args.seed, progress=not args.quiet)
        state = trained["state"]
        torch.save(state, baseline_path)
        print(f"float baseline {100 * trained['accuracy']:.2f}% ({time.perf_counter() - started:.0f} s)")
    ablation = {fmt for fmt in args.ablation.split(",") if fmt}
    rows = []
    for acc in args.acc.split(","):
        cfg = MacConfig(args.input, acc, chunk_size=args.chunk)
        for variant in ("two-stage", "one-stage") if acc in ablation else ("two-stage",):
            point = run_accuracy_point(
                cfg, args.model, bundle, epochs, args.seed, state, lr=lr, bias=args.bias,
                stage1_underflow=variant == "one-stage", progress=not args.quiet, log=print,
                checkpoint_dir=folder / "checkpoints" / f"{args.model}-{cfg.name}-{args.bias}-{variant}",
            )
            rows.append({"variant": variant, **point})
            print(f"{acc} {variant}: " + ", ".join(f"{key} {100 * point[key]:.2f}%" for key in ACCURACIES))
    total = time.perf_counter() - started
    header = (f"# Fine-tuning on low-bit-width accumulators: {args.model} on {bundle.name}\n\n"
              f"Inputs {args.input}, bias `{args.bias}`, chunk {args.chunk}, baseline {args.epochs_baseline} epochs, "
              f"fine-tuning {epochs} epochs at lr {lr}, seed {args.seed}; total {total:.0f} s. Accuracies in %, "
              "events as rates per accumulation step of the final evaluation.")
    (folder / "results.json").write_text(json.dumps(rows, indent=2))
    (folder / "results.md").write_text(markdown(rows, header))
    print(markdown(rows, header))
    print(folder / "results.md")


if __name__ == "__main__":
    main()
