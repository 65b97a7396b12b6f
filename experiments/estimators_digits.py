"""Fine-grained gradient estimators vs STE: digits models trained FROM SCRATCH on narrow accumulators.

Every linear/conv layer runs on the bit-true accumulator (lba_train.lbaify) in the forward pass; the backward
uses the estimator under test (docs/estimators.md). For each model, accumulator format, seed and estimator
the same initial weights, the same calibrated accumulator bias and the same batch order are used, so the
estimator is the only difference. Results: reports/estimators/results.csv (one row per run, appended as runs
finish; an interrupted run resumes), results.md (mean +- std over seeds) and accuracy_vs_acc_bits.png.

Run: .venv/bin/python experiments/estimators_digits.py            (MLP + CNN grid, ~30 min on 2 shared cores)
     .venv/bin/python experiments/estimators_digits.py --models mlp --formats e4m3,e4m2,e3m3 \
         --overflow-fraction 1e-2 --out reports/estimators/overflow_1e-2      (the saturation-heavy sweep)
     add --summarize (with the same --overflow-fraction and --out) to rebuild the table and plot only.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

# Numba's and torch's OpenMP pools otherwise busy-wait between parallel regions and starve each other:
# measured here, one MLP epoch took 13-19 s with the default policy and 2.9 s with PASSIVE. It must be set
# before the OpenMP runtimes start, i.e. before torch and the kernels are imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from tqdm.auto import tqdm

from lba_core import MacConfig
from lba_train.bias import calibrate_bias_config
from lba_train.convert import (
    event_stats_table,
    lbaify,
    set_collect_stats,
    set_lba_config,
)
from lba_train.data import load_data
from lba_train.estimators import ESTIMATORS
from lba_train.layers import LayerOptions
from lba_train.models import MLP, SmallResNet
from lba_train.train import TrainOptions, evaluate, train_float

FIELDS = ("model", "input", "acc", "acc_bits", "acc_bias", "estimator", "seed", "epochs", "lr", "accuracy", "final_loss",
          "overflow_rate", "underflow_rate", "swamp_rate", "seconds")
FLOAT = "float"  # the estimator column of the float (no accumulator) reference runs
CALIBRATION_BATCHES = 4
DATA_SEED = 0  # one train/validation split for every run: seeds vary the initial weights and the batch order


def build(model_name: str, input_shape, classes: int, seed: int, cnn_widths: tuple[int, ...]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model_name == "mlp":
            return MLP(input_shape, classes)
        return SmallResNet(input_shape, classes, widths=cnn_widths)


def event_rates(model: torch.nn.Module) -> dict[str, float]:
    rows = event_stats_table(model)
    steps = sum(row.get("steps", 0) for row in rows)
    return {f"{event}_rate": sum(row.get(event, 0) for row in rows) / max(steps, 1)
            for event in ("overflow", "underflow", "swamp")}


def run_one(model_name: str, acc: str | None, estimator: str, seed: int, args, data) -> dict:
    """Train one model from scratch; ``acc=None`` is the float reference. Returns a CSV row."""
    started = time.perf_counter()
    model = build(model_name, data.input_shape, data.classes, seed, args.cnn_widths)
    row = {"model": model_name, "input": args.input, "acc": acc or FLOAT, "estimator": estimator, "seed": seed,
           "epochs": args.epochs[model_name], "lr": args.lr[model_name]}
    training = TrainOptions(epochs=args.epochs[model_name], lr=args.lr[model_name], seed=seed)
    if acc is None:
        trained = train_float(model, data.train, data.val, options=training)
        row.update(acc_bits=32, acc_bias="", accuracy=trained.accuracy, final_loss=trained.history[-1]["loss"],
                   overflow_rate=0.0, underflow_rate=0.0, swamp_rate=0.0)
    else:
        cfg = MacConfig(input=args.input, acc=acc)
        lba_model = lbaify(model, cfg, LayerOptions(estimator=estimator))
        # The bias is a hardware constant: chosen once from the initial model's partial sums (the same for
        # every estimator of this model, format and seed) so that about ``overflow_fraction`` of them saturate.
        calibration = [inputs for (inputs, _), _ in zip(data.train, range(CALIBRATION_BATCHES))]
        cfg = calibrate_bias_config(lba_model, cfg, calibration, args.overflow_fraction)
        set_lba_config(lba_model, cfg)
        trained = train_float(lba_model, data.train, data.val, options=training)
        lba_model = trained.model
        set_collect_stats(lba_model, True)
        accuracy = evaluate(lba_model, data.val)
        row.update(acc_bits=cfg.acc.width, acc_bias=cfg.acc.bias, accuracy=accuracy,
                   final_loss=trained.history[-1]["loss"], **event_rates(lba_model))
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def planned_runs(args) -> list[tuple]:
    runs = []
    for model_name in args.models:
        formats = args.formats if model_name == "mlp" else args.cnn_formats
        seeds = args.seeds if model_name == "mlp" else args.cnn_seeds
        for seed in seeds:
            runs.append((model_name, None, FLOAT, seed))
            runs += [(model_name, acc, estimator, seed) for acc in formats for estimator in args.estimators]
    return runs


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def paired_difference(runs, estimator: str) -> str:
    """Accuracy of ``estimator`` minus that of ste on the same format and seed: mean +- standard error."""
    table = runs.pivot_table(index=["acc", "seed"], columns="estimator", values="accuracy")
    if estimator == "ste" or estimator not in table or "ste" not in table:
        return "–"
    difference = (table[estimator] - table["ste"]).dropna()
    error = difference.std(ddof=1) / len(difference) ** 0.5 if len(difference) > 1 else 0.0
    return f"{difference.mean():+.1f} +- {error:.1f} ({len(difference)})"


def summarize(rows: list[dict], out: Path, overflow_fraction: float) -> None:
    """results.md (mean +- std of accuracy over seeds, best estimator per format in bold) and the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame["accuracy"] = frame["accuracy"].astype(float) * 100
    for column in ("overflow_rate", "swamp_rate", "underflow_rate"):
        frame[column] = frame[column].astype(float) * 100
    frame["acc_bits"] = frame["acc_bits"].astype(int)
    lines = [
        "# Fine-grained estimators vs STE: digits, trained from scratch on the accumulator",
        "",
        (f"Accumulator bias calibrated on the initial model so that a fraction {overflow_fraction:g} of its "
         "partial sums would saturate."),
        "",
        ("Validation accuracy (%) after training, mean +- std over seeds (n = seeds). Bold: best estimator "
         "of the row. Event rates (% of accumulation steps, final evaluation, STE model) in the last column. "
         "The last two rows pair every run with the ste run of the same format and seed (same initial "
         "weights, bias and batch order) and average the accuracy differences."),
        "",
    ]
    estimators = [name for name in ESTIMATORS if name in set(frame["estimator"])]
    for model_name, by_model in frame.groupby("model", sort=False):
        float_runs = by_model[by_model["estimator"] == FLOAT]["accuracy"]
        lines += [(f"## {model_name} (input {by_model['input'].iloc[0]}, {by_model['epochs'].iloc[0]} epochs, "
                   f"Adam lr {by_model['lr'].iloc[0]}; float reference {float_runs.mean():.1f} +- "
                   f"{float_runs.std():.1f}, n={len(float_runs)})"),
                  "", "| accumulator (bits, bias) | " + " | ".join(estimators) + " | overflow / swamp / underflow |",
                  "|---|" + "---|" * (len(estimators) + 1)]
        lba = by_model[by_model["estimator"] != FLOAT]
        for acc, by_acc in sorted(lba.groupby("acc"), key=lambda item: (-item[1]["acc_bits"].iloc[0], item[0])):
            stats = by_acc.groupby("estimator")["accuracy"].agg(["mean", "std", "count"])
            best = stats["mean"].idxmax()
            cells = []
            for name in estimators:
                if name not in stats.index:
                    cells.append("–")
                    continue
                cell = f"{stats.loc[name, 'mean']:.1f} +- {stats.loc[name, 'std'] if stats.loc[name, 'count'] > 1 else 0:.1f}"
                cells.append(f"**{cell}**" if name == best else cell)
            ste = by_acc[by_acc["estimator"] == "ste"]
            events = (f"{ste['overflow_rate'].mean():.2f} / {ste['swamp_rate'].mean():.2f} / "
                      f"{ste['underflow_rate'].mean():.2f}") if len(ste) else "–"
            biases = sorted(set(by_acc["acc_bias"].astype(str)))
            lines.append(f"| {acc} ({by_acc['acc_bits'].iloc[0]}, {'/'.join(biases)}) n={int(stats['count'].max())} | "
                         + " | ".join(cells) + f" | {events} |")
        for label, subset in (("all formats", lba), ("narrowest formats", lba[lba["acc_bits"] == lba["acc_bits"].min()])):
            lines.append(f"| difference to ste, {label}: mean +- s.e. (n) | " + " | ".join(
                paired_difference(subset, name) for name in estimators) + " | |")
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))

    models = list(dict.fromkeys(frame["model"]))
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for axis, model_name in zip(axes[0], models):
        lba = frame[(frame["model"] == model_name) & (frame["estimator"] != FLOAT)]
        order = sorted(set(lba["acc"]), key=lambda acc: (-int(lba[lba["acc"] == acc]["acc_bits"].iloc[0]), acc))
        labels = [f"{acc}\n({lba[lba['acc'] == acc]['acc_bits'].iloc[0]} bits)" for acc in order]
        for offset, name in enumerate(estimators):
            stats = lba[lba["estimator"] == name].groupby("acc")["accuracy"].agg(["mean", "std"]).reindex(order)
            positions = [index + (offset - (len(estimators) - 1) / 2) * 0.08 for index in range(len(order))]
            axis.errorbar(positions, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=name)
        float_mean = frame[(frame["model"] == model_name) & (frame["estimator"] == FLOAT)]["accuracy"].mean()
        axis.axhline(float_mean, color="gray", linestyle="--", linewidth=1, label="float")
        axis.set_xticks(range(len(order)), labels)
        axis.set_xlabel("accumulator format (total bits), narrower to the right")
        axis.set_ylabel("validation accuracy (%)")
        axis.set_title(f"digits, {model_name}, from scratch (bias: {overflow_fraction:g} of sums saturate)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "accuracy_vs_acc_bits.png", dpi=120)
    plt.close(figure)


def split(text: str) -> list[str]:
    """A comma-separated command-line list, empty items dropped."""
    return [item for item in text.split(",") if item]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,resnet", help="comma list of mlp, resnet (default both)")
    parser.add_argument("--formats", default="e4m3,e5m2,e3m4,e4m2,e3m3", help="accumulator formats for the MLP")
    parser.add_argument("--cnn-formats", default="e4m3,e3m3", help="accumulator formats for the CNN (default e4m3,e3m3)")
    parser.add_argument("--input", default="e4m3", help="operand format of activations and weights (default e4m3)")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS), help="comma list (default all)")
    parser.add_argument("--seeds", default="0,1,2", help="MLP seeds (default 0,1,2)")
    parser.add_argument("--cnn-seeds", default="0,1", help="CNN seeds (default 0,1)")
    parser.add_argument("--epochs", type=int, default=4, help="MLP epochs (default 4)")
    parser.add_argument("--cnn-epochs", type=int, default=5, help="CNN epochs (default 5)")
    parser.add_argument("--cnn-widths", default="4,8", help="SmallResNet stage widths (default 4,8)")
    parser.add_argument("--overflow-fraction", type=float, default=1e-4,
                        help="accumulator bias: calibrated so that this fraction of the initial partial sums "
                             "would saturate (default 1e-4; larger values trade underflow for overflow)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the MLP (default 3e-3)")
    parser.add_argument("--cnn-lr", type=float, default=1e-2,
                        help="Adam learning rate of the CNN (default 1e-2: 3e-3 left it at ~58%% float after 3 epochs)")
    parser.add_argument("--out", default="reports/estimators", help="output folder (default reports/estimators)")
    parser.add_argument("--summarize", action="store_true", help="only rebuild results.md and the plot from the CSV")
    args = parser.parse_args(argv)
    args.models, args.formats, args.cnn_formats = split(args.models), split(args.formats), split(args.cnn_formats)
    args.estimators = split(args.estimators)
    args.seeds, args.cnn_seeds = [int(s) for s in split(args.seeds)], [int(s) for s in split(args.cnn_seeds)]
    args.cnn_widths = tuple(int(w) for w in split(args.cnn_widths))
    args.epochs = {"mlp": args.epochs, "resnet": args.cnn_epochs}
    args.lr = {"mlp": args.lr, "resnet": args.cnn_lr}
    unknown = [name for name in args.estimators if name not in ESTIMATORS]
    if unknown or not set(args.models) <= {"mlp", "resnet"}:
        parser.error(f"unknown estimator(s) {unknown} or model(s) in {args.models}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    rows = load_rows(csv_path)
    if not args.summarize:
        done = {(row["model"], row["acc"], row["estimator"], int(row["seed"])) for row in rows}
        todo = [run for run in planned_runs(args) if (run[0], run[1] or FLOAT, run[2], run[3]) not in done]
        data = load_data("digits", seed=DATA_SEED)
        new_file = not csv_path.exists()
        with csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            if new_file:
                writer.writeheader()
            bar = tqdm(todo, desc="runs")
            for model_name, acc, estimator, seed in bar:
                bar.set_postfix_str(f"{model_name} {acc or FLOAT} {estimator} seed {seed}")
                row = run_one(model_name, acc, estimator, seed, args, data)
                writer.writerow(row)
                handle.flush()
                rows.append({key: str(value) for key, value in row.items()})
                tqdm.write(f"{model_name} {acc or FLOAT:>6} {estimator:>15} seed {seed}: "
                           f"{100 * row['accuracy']:.1f}% ({row['seconds']:.0f} s)")
    if rows:
        summarize(rows, out, args.overflow_fraction)
        print(f"wrote {out / 'results.md'} and {out / 'accuracy_vs_acc_bits.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
