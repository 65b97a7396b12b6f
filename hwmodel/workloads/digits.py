"""The digits workload: the accuracy points of a sweep on the embedded digits (or a folder) data set — the
float baseline, then per configuration and seed the zero-shot and two-stage fine-tuned accuracy (lba_train),
each a saved point keyed by its determinants (execution/points.py), run on the sweep's executor.

``spec`` arguments are :class:`hwmodel.sweep.spec.SweepSpec` objects (not imported: the sweep sits above its
workloads)."""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lba_core import FloatFormat, MacConfig
from lba_core.fileio import atomic_write
from lba_train.models import MODEL_NAMES

from ..execution import provenance
from ..execution.jobs import progress_bars, worker_pool
from ..execution.points import POINT_THREADS, limit_threads, point_path, read_point, write_point
from ..synthesis import columns
from .base import Log, PointRun, ReportSection, RowPart, executor_of

#: The digits models (lba_train.models), the sweep's ``accuracy.model`` values this workload runs.
MODELS = MODEL_NAMES

#: The accuracies of a point (top1_<phase> columns of results.csv).
PHASES = ("baseline", "zero_shot", "stage1", "stage2")

#: The accumulator events of a point (<event>_rate columns of results.csv, declared in synthesis/columns.py).
EVENTS = columns.EVENTS


def baseline_determinants(spec, threads: int = POINT_THREADS) -> dict[str, Any]:
    """What the float baseline of ``spec.accuracy`` depends on; the one definition, also ``hwmodel train``'s
    (which trains it with its own ``--threads``)."""
    accuracy = spec.accuracy
    return {
        "kind": "baseline", "model": accuracy.model, "data": provenance.data_fingerprint(accuracy.data),
        "width": accuracy.width, "epochs": accuracy.epochs_baseline, "lr": accuracy.lr_baseline, "seed": accuracy.seed,
        "threads": threads, "source": provenance.accuracy_source_hash(), "tools": provenance.accuracy_tools(),
        **({"device": accuracy.device} if accuracy.device != "cpu" else {}),  # CPU points keep their old keys
    }


def accuracy_determinants(spec, cfg: MacConfig, seed: int | None = None) -> dict[str, Any]:
    """What one accuracy point depends on. The base seed's point chooses the bias of ``cfg`` (the requested
    configuration); a further fine-tuning ``seed`` trains the configuration that point chose, bias as is."""
    accuracy = spec.accuracy
    determinants = {
        "kind": "accuracy", "cfg": cfg.to_dict(), "bias_mode": spec.bias_mode(cfg),
        "epochs": list(accuracy.epochs), "lr": list(accuracy.lr), "estimator": accuracy.estimator,
        "baseline": baseline_determinants(spec),
    }
    if seed is not None and seed != accuracy.seed:  # margins are per model: every seed calibrates its own
        determinants.update(bias_mode="margin" if determinants["bias_mode"] == "margin" else "format",
                            finetune_seed=seed)
    return determinants


def _baseline_job(accuracy: dict, path: str) -> float:
    import torch

    from lba_train.data import load_data
    from lba_train.train import train_baseline

    limit_threads(POINT_THREADS)
    data = load_data(accuracy["data"], seed=accuracy["seed"])
    trained = train_baseline(accuracy["model"], data, accuracy["epochs_baseline"], seed=accuracy["seed"],
                             lr=accuracy["lr_baseline"], progress=False, width=accuracy["width"],
                             device=accuracy["device"])
    atomic_write(path, lambda stream: torch.save({"state": trained.state, "accuracy": trained.accuracy}, stream))
    return trained.accuracy


def _accuracy_job(cfg_dict: dict, bias_mode: str, accuracy: dict, baseline_path: str, seed: int) -> dict[str, Any]:
    """One accuracy point: the split and the baseline of the base seed, fine-tuned with ``seed``."""
    import torch

    from lba_train import FinetuneOptions, LayerOptions, run_accuracy_point
    from lba_train.bias import with_acc_bias
    from lba_train.data import load_data

    limit_threads(POINT_THREADS)
    cfg = MacConfig.from_dict(cfg_dict)
    baseline = torch.load(baseline_path, weights_only=False, map_location="cpu")
    options = FinetuneOptions(epochs=tuple(accuracy["epochs"]), lr=tuple(accuracy["lr"]), bias=bias_mode,
                              layers=LayerOptions(estimator=accuracy["estimator"]), seed=seed,
                              device=accuracy["device"])
    bundle = load_data(accuracy["data"], seed=accuracy["seed"])
    record = run_accuracy_point(cfg, accuracy["model"], bundle, options=options, baseline_state=baseline["state"],
                                width=accuracy["width"])
    trained = with_acc_bias(cfg, record["acc_bias"]) if isinstance(cfg.acc, FloatFormat) else cfg
    if trained.name != record["cfg"]:
        raise AssertionError(f"trained configuration {record['cfg']} is not {trained.name}")
    return {**record, "mac_config": trained.to_dict()}


def _seeds(spec) -> list[int]:
    return [spec.accuracy.seed + index for index in range(spec.accuracy.seeds)]


def run_accuracy(spec, configs: list[MacConfig], points: Path, log: Log, run: PointRun,
                 progress: bool = True) -> None:
    """Every configuration at every seed; matching saved points are reused, the rest run in parallel."""
    seeds = _seeds(spec)
    run.total = len(configs) * len(seeds)
    found: dict[tuple[str, int], dict] = {}

    def saved(cfg: MacConfig, seed: int, trained: MacConfig) -> dict | None:
        key = provenance.settings_hash(accuracy_determinants(spec, trained if seed != seeds[0] else cfg, seed))
        return read_point(point_path(points, "accuracy", key), key)

    for cfg in configs:
        base = saved(cfg, seeds[0], cfg)
        if base is not None:
            found[cfg.name, seeds[0]] = base
            trained = MacConfig.from_dict(base["mac_config"])
            for seed in seeds[1:]:
                record = saved(cfg, seed, trained)
                if record is not None:
                    found[cfg.name, seed] = record
    run.saved = len(found)
    log(f"accuracy: reusing {len(found)} of {run.total} points" + (" (all finished)" if len(found) == run.total else ""))
    if len(found) < run.total:
        _compute(spec, configs, seeds, points, found, run, log, progress)
    run.records = {cfg.name: [found[cfg.name, seed] for seed in seeds] for cfg in configs}


def _compute(spec, configs: list[MacConfig], seeds: list[int], points: Path, found: dict,
             run: PointRun, log: Log, progress: bool) -> None:
    accuracy = asdict(spec.accuracy)
    baseline_path = point_path(points, "baseline", provenance.settings_hash(baseline_determinants(spec)), ".pt")
    missing = run.total - len(found)
    gpus = 1.0 if spec.accuracy.device == "cuda" else 0.0
    with worker_pool(max(1, min(spec.jobs, missing)), executor_of(spec), gpus_per_task=gpus) as pool:
        if baseline_path.is_file():
            log(f"reusing the float baseline {baseline_path.name}")
        else:
            log(f"training the float baseline: {spec.accuracy.model} on {spec.accuracy.data}, "
                f"{spec.accuracy.epochs_baseline} epochs")
            score = pool.submit(_baseline_job, accuracy, str(baseline_path)).result()
            log(f"float baseline: {100 * score:.2f}%")
        pending: dict[Future, tuple[MacConfig, MacConfig, int]] = {}

        def submit(cfg: MacConfig, trained: MacConfig, seed: int) -> None:
            mode = spec.bias_mode(cfg) if seed == seeds[0] or spec.bias_mode(cfg) == "margin" else "format"
            future = pool.submit(_accuracy_job, trained.to_dict(), mode, accuracy, str(baseline_path), seed)
            pending[future] = (cfg, trained, seed)

        def submit_further_seeds(cfg: MacConfig, trained: MacConfig) -> None:
            for seed in seeds[1:]:
                if (cfg.name, seed) not in found:
                    submit(cfg, trained, seed)

        for cfg in configs:
            if (cfg.name, seeds[0]) in found:
                submit_further_seeds(cfg, MacConfig.from_dict(found[cfg.name, seeds[0]]["mac_config"]))
            else:
                submit(cfg, cfg, seeds[0])
        with tqdm(total=missing, desc="accuracy points", unit="point", file=sys.stderr, disable=not progress_bars(progress)) as bar:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    cfg, trained, seed = pending.pop(future)
                    determinants = accuracy_determinants(spec, trained if seed != seeds[0] else cfg, seed)
                    key = provenance.settings_hash(determinants)
                    record = {**future.result(), "key": key, "determinants": determinants,
                              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                    write_point(point_path(points, "accuracy", key), record)
                    found[cfg.name, seed] = record
                    run.saved += 1
                    if seed == seeds[0]:
                        submit_further_seeds(cfg, MacConfig.from_dict(record["mac_config"]))
                    bar.set_postfix_str(f"{record['acc_format']} seed {seed}: {100 * record['stage2']:.1f}%")
                    bar.update()


def row_columns(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A configuration's accuracy columns from its seeds' records: accuracies (mean over the seeds, and the
    sample standard deviation of the zero-shot and fine-tuned ones), event rates (mean over the seeds)."""
    columns: dict[str, Any] = {"seeds": len(records)}
    # the base seed's per-layer operand margins (bias mode "margin"; each seed calibrates its own), "0": none
    columns["scale_margin"] = records[0].get("scale_margin", "0")
    for phase in PHASES:
        values = [record[phase] for record in records]
        columns[f"top1_{phase}"] = statistics.fmean(values)
        if phase in ("zero_shot", "stage2") and len(values) > 1:
            columns[f"top1_{phase}_sd"] = statistics.stdev(values)
    for event in EVENTS:
        columns[f"{event}_rate"] = statistics.fmean(record.get(f"events_{event}", 0) / max(record.get("events_steps", 0), 1)
                                                    for record in records)
    return columns


class DigitsWorkload:
    """The digits models' accuracy points (the Workload protocol, hwmodel.workloads.base)."""

    name = "digits"
    models = MODELS
    settings_table = None  # its settings are the sweep's [accuracy] table

    def selected(self, spec) -> bool:
        return spec.accuracy.enabled and spec.accuracy.model in MODELS

    def check_settings(self, spec, given: dict[str, str], where: str) -> None:
        return None

    def check(self, spec) -> None:
        return None

    def run(self, spec, configs: list[MacConfig], points: Path, log: Log, run: PointRun, progress: bool) -> None:
        run_accuracy(spec, configs, points, log, run, progress)

    def circuit(self, spec, cfg: MacConfig, run: PointRun) -> MacConfig | None:
        records = run.records.get(cfg.name)
        return MacConfig.from_dict(records[0]["mac_config"]) if records else None

    def row(self, spec, cfg: MacConfig, run: PointRun) -> RowPart | None:
        records = run.records.get(cfg.name)
        if not records:
            return None
        return RowPart(bias_mode=spec.bias_mode(cfg), determinants={"accuracy": [record["key"] for record in records]},
                       columns=row_columns(records), records=records)

    def write_tables(self, out: Path, spec, configs: list[MacConfig], run: PointRun, earlier: dict | None,
                     settings: dict[str, Any]) -> None:
        return None  # the rows are in results.csv (the sweep writes the per-layer events of their records)

    def settings(self, spec) -> dict[str, Any] | None:
        return None  # the spec's accuracy settings, already in every report folder's settings

    def notes(self, spec, table) -> str:
        if not self.selected(spec):
            return ""
        accuracy = spec.accuracy
        by_mode: dict[str, list[str]] = {}
        for _, row in table.iterrows():
            if row.get("bias_mode") is not None:
                by_mode.setdefault(row["bias_mode"], []).append(row["acc"])
        standard = by_mode.pop("format", [])
        margin = by_mode.pop("margin", [])
        parts = [
            f"Accuracy: {accuracy.model} on {accuracy.data}, baseline {accuracy.epochs_baseline} epochs, fine-tuning "
            f"{accuracy.epochs[0]}+{accuracy.epochs[1]} epochs, lr {accuracy.lr[0]:g}/{accuracy.lr[1]:g}, seed "
            f"{accuracy.seed}, estimator {accuracy.estimator}. Each row is one circuit: the accumulator bias that was "
            f"trained is the bias that was synthesized (column acc_bias)."
        ]
        for mode, accs in by_mode.items():
            parts.append(f"Bias chosen by '{mode}': {', '.join(accs)}.")
        if margin:
            parts.append("Bias as given, operands scaled down by per-layer power-of-two margins ('margin', column "
                         f"scale_margin): {', '.join(margin)}.")
        if standard:
            parts.append(f"Bias as given (standard or explicit): {', '.join(standard)}.")
        return " ".join(parts)

    def report_section(self, out: Path) -> ReportSection | None:
        """The report's main table is the digits table: its accuracy columns are results.csv's."""
        path = out / "results.csv"
        try:
            header = path.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
        except (OSError, UnicodeDecodeError):
            return None
        return ReportSection("", "", "Digits", in_results=True) if "top1_stage2" in header else None
