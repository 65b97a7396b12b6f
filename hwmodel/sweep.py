"""The main job: area and accuracy of every configuration of a sweep, joined into one report.

Every point is an independent job whose result is written atomically to ``<out>/points/`` as soon as it is
done; a re-run skips the points already there, so a killed sweep resumes where it stopped. The float baseline
is trained once per sweep and shared by every accuracy point.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from tqdm import tqdm

from lba_core import MacConfig
from lba_core.fileio import atomic_write, atomic_write_text

from .area import area_sweep, write_area_report
from .report import write_results
from .sweepspec import SweepSpec


def _read_point(path: Path) -> dict[str, Any] | None:
    """A finished point's record, or None when absent or unreadable (a crash mid-write is redone)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("complete") else None


def _write_point(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps({**record, "complete": True}, indent=1, sort_keys=True))


def _limit_threads(threads: int) -> None:
    """Each worker process gets its share of the cores, so parallel points do not oversubscribe them."""
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def _accuracy_job(cfg_dict: dict, accuracy: dict, baseline_path: str, threads: int) -> dict[str, Any]:
    import torch

    from lba_train import FinetuneOptions, LayerOptions, run_accuracy_point

    _limit_threads(threads)
    baseline = torch.load(baseline_path, weights_only=False)
    options = FinetuneOptions(epochs=tuple(accuracy["epochs"]), lr=accuracy["lr"], bias=accuracy["bias"],
                              layers=LayerOptions(estimator=accuracy["estimator"]), seed=accuracy["seed"])
    return run_accuracy_point(MacConfig.from_dict(cfg_dict), accuracy["model"], accuracy["data"], options=options,
                              baseline_state=baseline["state"])


def _ensure_baseline(spec: SweepSpec, points: Path, log: Callable[[str], None]) -> Path:
    import torch

    from lba_train.data import load_data
    from lba_train.train import train_baseline

    path = points / "baseline.pt"
    if path.is_file():
        return path
    accuracy = spec.accuracy
    log(f"training the float baseline: {accuracy.model} on {accuracy.data}, {accuracy.epochs_baseline} epochs")
    data = load_data(accuracy.data, seed=accuracy.seed)
    trained = train_baseline(accuracy.model, data, accuracy.epochs_baseline, seed=accuracy.seed, progress=True)
    atomic_write(path, lambda stream: torch.save({"state": trained.state, "accuracy": trained.accuracy}, stream))
    return path


def run_accuracy(spec: SweepSpec, configs: list[MacConfig], points: Path, jobs: int, log) -> dict[str, dict]:
    """Accuracy record per configuration name; finished points are read back, the rest run in parallel."""
    records = {cfg.name: _read_point(points / f"accuracy-{cfg.name}.json") for cfg in configs}
    todo = [cfg for cfg in configs if records[cfg.name] is None]
    if not todo:
        return records
    baseline_path = _ensure_baseline(spec, points, log)
    accuracy = asdict(spec.accuracy)
    workers = max(1, min(jobs, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    bar = tqdm(total=len(todo), desc="accuracy points", unit="point", file=sys.stderr)
    # spawn, not fork: the parent has already started torch/numba thread pools, which a forked child inherits locked.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_accuracy_job, cfg.to_dict(), accuracy, str(baseline_path), threads): cfg for cfg in todo}
        for future in as_completed(futures):
            cfg = futures[future]
            record = future.result()
            _write_point(points / f"accuracy-{cfg.name}.json", record)
            records[cfg.name] = record
            bar.set_postfix_str(f"{cfg.acc.name}: {100 * record['stage2']:.1f}%")
            bar.update()
    bar.close()
    return records


def _join(configs: list[MacConfig], area: pd.DataFrame | None, accuracy: dict[str, dict]) -> pd.DataFrame:
    """One row per configuration of the sweep, in its order: synthesis columns, accuracies, event rates."""
    rows = []
    area_by_name = {} if area is None else {row["config"]: row for row in area.to_dict("records")}
    for cfg in configs:
        row: dict[str, Any] = {
            "config": cfg.name,
            "input": cfg.input.name,
            "acc": cfg.acc.name,
            "rounding": cfg.rounding,
            "chunk": cfg.chunk_size or 0,
            "acc_bits": cfg.acc.width,
        }
        row.update({key: value for key, value in area_by_name.get(cfg.name, {}).items() if key not in row})
        record = accuracy.get(cfg.name)
        if record is not None:
            row.update({f"top1_{phase}": record[phase] for phase in ("baseline", "zero_shot", "stage1", "stage2")})
            steps = max(record.get("events_steps", 0), 1)
            row.update({f"{event}_rate": record.get(f"events_{event}", 0) / steps for event in ("overflow", "underflow", "swamp")})
        rows.append(row)
    return pd.DataFrame(rows)


def run_sweep(
    spec: SweepSpec,
    out_dir: "str | Path",
    *,
    area: bool = True,
    synthesis: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> Path:
    """Run (or resume) a sweep; returns the path of its index.html.

    ``synthesis`` are keyword options of :func:`hwmodel.area.area_sweep` (cache, blocks, progress, timeout_s).
    """
    out = Path(out_dir)
    points = out / "points"
    points.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sweep.json", json.dumps(asdict(spec), indent=1))
    configs = spec.configs()
    started = time.perf_counter()
    area_table = None
    if area:
        log(f"synthesizing {len(configs)} configurations (targets: {', '.join(spec.targets)}; cached results are reused)")
        area_table = area_sweep(configs, spec.targets, jobs=spec.jobs, baseline=spec.baseline_acc, **(synthesis or {}))
        write_area_report(area_table, out, title=f"MAC area sweep '{spec.name}'")
    accuracy_records: dict[str, dict] = {}
    if spec.accuracy.enabled:
        accuracy_records = run_accuracy(spec, configs, points, spec.jobs, log)
    df = _join(configs, area_table, accuracy_records)
    if spec.array is not None:
        from .pe_array import add_array_columns

        log(f"costing each configuration as a {spec.array} PE array")
        df = add_array_columns(df, configs, *spec.array_shape(), workers=spec.jobs,
                               cache=(synthesis or {}).get("cache"))
    minutes = (time.perf_counter() - started) / 60
    notes = (
        f"{len(configs)} configurations; model {spec.accuracy.model} on {spec.accuracy.data}; "
        f"synthesis targets {', '.join(spec.targets)}; this run took {minutes:.1f} min."
    )
    return write_results(df, out, title=f"LBA sweep '{spec.name}': area and accuracy", notes=notes)
