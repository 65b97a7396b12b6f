"""Q5: do the fine-grained gradient estimators work on convolutional layers, and what do they cost?

The paper calls them infeasible for convolutions because a weight is reused at every output position; here
every convolution is an im2col GEMM whose backward recomputes each output's accumulation chain
(docs/estimators.md), so nothing of size M*N*K is stored. A float ResNet (per seed) is fine-tuned on 8-10-bit
accumulators with each estimator of lba_train.estimators.ESTIMATORS (lba_train.finetune, two-stage recipe,
LayerOptions(estimator=...)); per seed the baseline, the accumulator bias and the batch order are shared, so
each estimator is compared with STE on the same examples and seeds (hwmodel.report.stats). The cost: time per
training step and peak resident memory of a few steps per estimator, each in a fresh process, and the
memory a stored-derivative backward would need instead (M*N*K float64 per layer and batch).

    .venv/bin/python experiments/q5_estimators_conv.py                  # reports/q5_estimators_conv/
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch and Numba start their OpenMP pools

from questions import (
    add_report_options, question_parser,
    ACCURACY_NOTE, Runs, accuracy_cell, bias_mode, check_formats, comma_list, command_line, comparison_cells,
    configs,    correctness, experiment_main, markdown_table, provenance_lines, run_stamp, single_thread, write_report,
)

from lba_core import FloatFormat, MacConfig
from lba_train import FinetuneOptions, LayerOptions, finetune, load_data, train_baseline
from lba_train.estimators import ESTIMATORS

SCRIPT = "q5_estimators_conv.py"
DATA_SEED = 0
RUN_KEY = ("acc", "estimator", "seed", "epochs")  # the fields that identify a saved run (experiments/questions.py Runs)
COST_STEPS = 4  # timed training steps per estimator, after one untimed step (Numba compiles its kernels)



def parse_args(argv=None) -> argparse.Namespace:
    parser = question_parser(__doc__, "e3m4_b-10,e3m5_b-10,e3m6_b-10",
                             "accumulators; a name with _bN keeps that bias (see docs/experiments.md)")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS), help="gradient estimators, ste first")
    parser.add_argument("--epochs", default="1,1", help="fine-tuning epochs 'stage1,stage2'")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the baseline and of the fine-tuning")
    parser.add_argument("--epochs-baseline", type=int, default=10, metavar="N", help="float baseline epochs (Adam lr 3e-3)")
    parser.add_argument("--no-cost", action="store_true", help="skip the time and memory measurement")
    add_report_options(parser, "reports/q5_estimators_conv")
    args = parser.parse_args(argv)
    args.accs, args.seeds = comma_list(args.accs), comma_list(args.seeds, int)
    args.estimators = comma_list(args.estimators)
    args.epochs = tuple(comma_list(args.epochs, int))
    unknown = [name for name in args.estimators if name not in ESTIMATORS]
    if unknown or "ste" not in args.estimators:
        parser.error(f"--estimators: must include ste and name only {', '.join(ESTIMATORS)}; "
                     f"got {unknown or args.estimators}")
    if len(args.epochs) != 2:
        parser.error(f"--epochs: expected 'stage1,stage2', got {args.epochs}")
    check_formats(parser, "--accs", args.accs)
    return args


def stored_derivative_bytes(lba_model, example_batch) -> int:
    """Bytes that D[m, n, k] (float64, one entry per product of every LBA layer) would take for one batch."""
    import torch

    from lba_train import lba_layers

    sizes = []

    def record(layer, inputs, output):
        if isinstance(layer, torch.nn.Conv2d):
            kernel = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            sizes.append(output.numel() * kernel)  # M*N = batch*H*W*C_out outputs, K = C_in/groups*kh*kw
        elif isinstance(layer, torch.nn.Linear):
            sizes.append(output.numel() * layer.in_features)

    handles = [layer.register_forward_hook(record) for _, layer in lba_layers(lba_model)]
    with torch.no_grad():
        lba_model(example_batch)
    for handle in handles:
        handle.remove()
    return 8 * sum(sizes)


def measure_cost(model_name: str, data_spec: str, cfg_dict: dict, estimator: str) -> dict:
    """In a fresh process: seconds per training step and peak resident memory growth over COST_STEPS steps."""
    import torch
    import torch.nn.functional as F

    from lba_train import build_model, lbaify, set_lba_config

    single_thread()
    data = load_data(data_spec, seed=DATA_SEED)
    cfg = MacConfig.from_dict(cfg_dict)
    model = lbaify(build_model(model_name, data.input_shape, data.classes, 0), cfg, LayerOptions(estimator=estimator))
    set_lba_config(model, underflow=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [batch for batch, _ in zip(data.train, range(COST_STEPS + 1))]

    def step(inputs, labels):
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(*batches[0])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for inputs, labels in batches[1:]:
        step(inputs, labels)
    seconds = (time.perf_counter() - started) / COST_STEPS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds_per_step": seconds, "peak_rss_kib": peak, "peak_growth_kib": peak - before,
            "batch": len(batches[0][0]), "stored_d_bytes": stored_derivative_bytes(model, batches[0][0])}


def run(args: argparse.Namespace, argv) -> Runs:
    runs = Runs(args.out / "runs.jsonl", RUN_KEY)
    data = load_data(args.data, seed=DATA_SEED)
    command = command_line(argv, SCRIPT)
    epochs = list(args.epochs)
    for seed in args.seeds:
        todo = [(acc, estimator) for acc in args.accs for estimator in args.estimators
                if not runs.done(acc=acc, estimator=estimator, seed=seed, epochs=epochs)]
        if not todo:
            continue
        baseline = train_baseline(args.model, data, epochs=args.epochs_baseline, seed=seed)
        for acc, estimator in todo:
            started = time.perf_counter()
            result = finetune(baseline.model, data.train, data.val, MacConfig(input=args.input, acc=acc),
                              options=FinetuneOptions(epochs=args.epochs, bias=bias_mode(acc), seed=seed,
                                                      layers=LayerOptions(estimator=estimator)))
            steps = sum(row.get("steps", 0) for row in result.zero_shot_events)
            runs.add({"acc": acc, "estimator": estimator, "seed": seed, "epochs": epochs, "model": args.model,
                      "data": data.name, "cfg": result.cfg.name, "baseline": result.baseline,
                      "zero_shot": result.zero_shot, "stage2": result.stage2, "labels": result.labels,
                      "predictions": {key: result.predictions[key] for key in ("zero_shot", "stage2")},
                      **{f"zero_shot_{event}_rate": sum(row.get(event, 0) for row in result.zero_shot_events)
                         / max(steps, 1) for event in ("overflow", "underflow", "swamp")},
                      "seconds": round(time.perf_counter() - started, 1), "command": command, "finished": run_stamp()})
            print(f"seed {seed} {result.cfg.name} {estimator}: {100 * result.stage2:.1f}%", flush=True)
    if not args.no_cost:
        cfg = MacConfig(input=args.input, acc=args.accs[0])
        context = multiprocessing.get_context("spawn")
        for estimator in args.estimators:
            if runs.done(acc="cost", estimator=estimator, seed=0, epochs=epochs):
                continue
            with context.Pool(1) as pool:
                cost = pool.apply(measure_cost, (args.model, args.data, cfg.to_dict(), estimator))
            runs.add({"acc": "cost", "estimator": estimator, "seed": 0, "epochs": epochs, "cfg": cfg.name,
                      **cost, "command": command, "finished": run_stamp()})
            print(f"cost {estimator}: {1000 * cost['seconds_per_step']:.0f} ms/step, "
                  f"peak RSS {cost['peak_rss_kib'] / 1024:.0f} MiB", flush=True)
    return runs


def report(args: argparse.Namespace, runs: Runs) -> Path:
    lines = ["# Q5: fine-grained estimators on convolutional layers vs STE", ""] + provenance_lines(runs.rows)
    accuracy_rows = [row for row in runs.rows if row["acc"] != "cost"]
    estimators = [name for name in ESTIMATORS if any(row["estimator"] == name for row in accuracy_rows)]
    for acc in sorted(dict.fromkeys(row["acc"] for row in accuracy_rows), key=lambda acc: FloatFormat.parse(acc).width):
        rows = runs.select(acc=acc)
        first = rows[0]
        seeds = sorted(set.intersection(*({row["seed"] for row in rows if row["estimator"] == name}
                                          for name in estimators)))
        rates = {event: sum(row[f"zero_shot_{event}_rate"] for row in rows) / len(rows)
                 for event in ("overflow", "underflow", "swamp")}
        lines += [f"## {first['model']} on {first['data']}, accumulator {acc} "
                  f"({FloatFormat.parse(acc).width} bits, {configs(rows)}), fine-tuning epochs {first['epochs']}, "
                  f"seeds {seeds}", "",
                  f"Float baseline {100 * sum(r['baseline'] for r in rows) / len(rows):.1f}% (mean), zero-shot "
                  f"{accuracy_cell(correctness(runs.select(acc=acc, estimator='ste'), 'zero_shot', seeds))}%; "
                  f"zero-shot event rates: overflow {rates['overflow']:.2%}, underflow {rates['underflow']:.2%}, "
                  f"swamp {rates['swamp']:.2%}.", ""]
        final = {name: correctness(runs.select(acc=acc, estimator=name), "stage2", seeds) for name in estimators}
        others = [name for name in estimators if name != "ste"]
        differences = dict(zip(others, comparison_cells([(final[name], final["ste"]) for name in others])))
        seconds = {name: sum(r["seconds"] for r in runs.select(acc=acc, estimator=name)) /
                   max(len(runs.select(acc=acc, estimator=name)), 1) for name in estimators}
        per_seed = {name: "/".join(f"{100 * (final[name][i].mean() - final['ste'][i].mean()):+.1f}"
                                   for i in range(len(seeds))) if final[name] is not None and name != "ste" else ""
                    for name in estimators}
        lines += markdown_table(["estimator", "accuracy after fine-tuning (%)", "minus ste, pp",
                                 "minus ste per seed, pp", "run time (s)"],
                                [[name, accuracy_cell(final[name]), differences.get(name, "(reference)"),
                                  per_seed[name], f"{seconds[name]:.0f}"] for name in estimators])
        lines += [""]
    costs = [row for row in runs.rows if row["acc"] == "cost"]
    if costs:
        ste = next((row for row in costs if row["estimator"] == "ste"), costs[0])
        lines += [f"## Cost per training step ({costs[0]['cfg']}, batch {costs[0]['batch']}, one thread, each "
                  f"estimator in a fresh process, {COST_STEPS} timed steps after one untimed)", ""]
        lines += markdown_table(
            ["estimator", "time per step (ms)", "x ste", "peak RSS of the process (MiB)",
             "D stored instead of recomputed (MiB per batch)"],
            [[row["estimator"], f"{1000 * row['seconds_per_step']:.0f}",
              f"{row['seconds_per_step'] / ste['seconds_per_step']:.1f}", f"{row['peak_rss_kib'] / 1024:.0f}",
              "0 (not needed)" if row["estimator"] == "ste" else f"{row['stored_d_bytes'] / 2**20:.0f}"]
             for row in costs])
        lines += [""]
    lines += [ACCURACY_NOTE + " Run time: wall-clock seconds of one fine-tuning run (zero-shot and final "
              "evaluations included) on the shared machine, mean over seeds; the cost table is the cleaner "
              "measurement.", ""]
    return write_report(args.out, lines)


def main(argv=None) -> int:
    return experiment_main(parse_args(argv), RUN_KEY, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
