"""The main job: area and accuracy of every configuration of a sweep, one circuit per row, in one report.

Order of work: the accuracy points first (each chooses its accumulator bias, e.g. by calibration), then the
synthesis of exactly the configurations that were trained, bias included, so a row's area and accuracy
describe one circuit (``e4m7_b11``). Area-only sweeps synthesize the formats as given.

Every saved result is keyed by the hash of what determines it (hwmodel.provenance): points live in
``<out>/points/accuracy-<hash>.json`` and ``baseline-<hash>.pt``, synthesis results in the content-addressed
cache. A rerun reuses what matches and recomputes what changed, and says so. A report folder belongs to one
model, data set and kind (area-only or not); another one is refused. A run adds and updates rows; rows of the
same configurations measured with other settings are replaced, never mixed. Timestamps, durations and tool
versions go into ``sweep.json``, not ``results.csv``, so two runs of the same sweep give identical tables.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from lba_core import FloatFormat, MacConfig
from lba_core.errors import ConfigError
from lba_core.fileio import atomic_write, atomic_write_text

from . import provenance
from .area import area_sweep, write_area_report
from .cache import ResultCache
from .interrupt import Interrupted
from .jobs import each_result, worker_pool
from .report import predictions_from_points, write_results
from .sweepspec import SweepSpec

#: Threads per training process. Fixed, not derived from the machine, because torch's float reductions
#: depend on the thread count: the same sweep gives the same bits on any machine with the same libraries.
POINT_THREADS = 1
SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.csv"
POINTS = "points"
#: What a report folder is about; a run with other values needs another folder.
IDENTITY_KEYS = ("model", "data")

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------- determinants
def baseline_determinants(spec: SweepSpec) -> dict[str, Any]:
    accuracy = spec.accuracy
    return {
        "kind": "baseline", "model": accuracy.model, "data": provenance.data_fingerprint(accuracy.data),
        "epochs": accuracy.epochs_baseline, "lr": accuracy.lr_baseline, "seed": accuracy.seed,
        "threads": POINT_THREADS, "source": provenance.accuracy_source_hash(), "tools": provenance.accuracy_tools(),
    }


def accuracy_determinants(spec: SweepSpec, cfg: MacConfig) -> dict[str, Any]:
    accuracy = spec.accuracy
    return {
        "kind": "accuracy", "cfg": cfg.to_dict(), "bias_mode": spec.bias_mode(cfg),
        "epochs": list(accuracy.epochs), "lr": list(accuracy.lr), "estimator": accuracy.estimator,
        "baseline": baseline_determinants(spec),
    }


def area_determinants(spec: SweepSpec, cfg: MacConfig, blocks: bool) -> dict[str, Any]:
    return {
        "kind": "area", "cfg": cfg.to_dict(), "targets": list(spec.targets), "blocks": blocks,
        **({"energy": True} if spec.energy else {}),
        "baseline_acc": FloatFormat.parse(spec.baseline_acc).name,
        "source": provenance.area_source_hash(), "tools": provenance.area_tools(),
    }


# ------------------------------------------------------------------------------------------- points
def _read_point(path: Path, key: str) -> dict[str, Any] | None:
    """A finished point whose key matches, or None (absent, half-written, or of other settings)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not record.get("complete") or record.get("key") != key:
        return None
    return record


def _write_point(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps({**record, "complete": True}, indent=1, sort_keys=True))


def _point_path(points: Path, kind: str, key: str, suffix: str = ".json") -> Path:
    return points / f"{kind}-{key[:provenance.SHORT_HASH]}{suffix}"


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def _baseline_job(accuracy: dict, path: str) -> float:
    import torch

    from lba_train.data import load_data
    from lba_train.train import train_baseline

    _limit_threads(POINT_THREADS)
    data = load_data(accuracy["data"], seed=accuracy["seed"])
    trained = train_baseline(accuracy["model"], data, accuracy["epochs_baseline"], seed=accuracy["seed"],
                             lr=accuracy["lr_baseline"], progress=False)
    atomic_write(path, lambda stream: torch.save({"state": trained.state, "accuracy": trained.accuracy}, stream))
    return trained.accuracy


def _accuracy_job(cfg_dict: dict, bias_mode: str, accuracy: dict, baseline_path: str) -> dict[str, Any]:
    import torch

    from lba_train import FinetuneOptions, LayerOptions, run_accuracy_point
    from lba_train.bias import with_acc_bias

    _limit_threads(POINT_THREADS)
    cfg = MacConfig.from_dict(cfg_dict)
    baseline = torch.load(baseline_path, weights_only=False)
    options = FinetuneOptions(epochs=tuple(accuracy["epochs"]), lr=tuple(accuracy["lr"]), bias=bias_mode,
                              layers=LayerOptions(estimator=accuracy["estimator"]), seed=accuracy["seed"])
    record = run_accuracy_point(cfg, accuracy["model"], accuracy["data"], options=options,
                                baseline_state=baseline["state"])
    trained = with_acc_bias(cfg, record["acc_bias"]) if isinstance(cfg.acc, FloatFormat) else cfg
    if trained.name != record["cfg"]:
        raise AssertionError(f"trained configuration {record['cfg']} is not {trained.name}")
    return {**record, "mac_config": trained.to_dict()}


@dataclass
class AccuracyRun:
    """The accuracy records of a sweep's configurations, by requested configuration name."""

    records: dict[str, dict[str, Any]]
    reused: int


def run_accuracy(spec: SweepSpec, configs: list[MacConfig], points: Path, log: Log, progress: bool = True) -> AccuracyRun:
    """Accuracy record per configuration; matching saved points are reused, the rest run in parallel."""
    keys = {cfg.name: provenance.settings_hash(accuracy_determinants(spec, cfg)) for cfg in configs}
    records = {cfg.name: _read_point(_point_path(points, "accuracy", keys[cfg.name]), keys[cfg.name]) for cfg in configs}
    todo = [cfg for cfg in configs if records[cfg.name] is None]
    reused = len(configs) - len(todo)
    log(f"accuracy: reusing {reused} of {len(configs)} points" + ("" if todo else " (all finished)"))
    if not todo:
        return AccuracyRun(records, reused)
    accuracy = asdict(spec.accuracy)
    baseline_key = provenance.settings_hash(baseline_determinants(spec))
    baseline_path = _point_path(points, "baseline", baseline_key, ".pt")
    workers = max(1, min(spec.jobs, len(todo)))
    with worker_pool(workers) as pool:
        if baseline_path.is_file():
            log(f"reusing the float baseline {baseline_path.name}")
        else:
            log(f"training the float baseline: {spec.accuracy.model} on {spec.accuracy.data}, "
                f"{spec.accuracy.epochs_baseline} epochs")
            score = pool.submit(_baseline_job, accuracy, str(baseline_path)).result()
            log(f"float baseline: {100 * score:.2f}%")
        futures = {pool.submit(_accuracy_job, cfg.to_dict(), spec.bias_mode(cfg), accuracy, str(baseline_path)): cfg
                   for cfg in todo}
        with tqdm(total=len(todo), desc="accuracy points", unit="point", file=sys.stderr, disable=not progress) as bar:
            _collect(futures, spec, keys, points, records, bar)
    return AccuracyRun(records, reused)


def _collect(futures: dict, spec: SweepSpec, keys: dict[str, str], points: Path, records: dict, bar) -> None:
    """Save each accuracy point as soon as it arrives."""
    for cfg, record in each_result(futures):
        key = keys[cfg.name]
        record = {**record, "key": key, "determinants": accuracy_determinants(spec, cfg),
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_point(_point_path(points, "accuracy", key), record)
        records[cfg.name] = record
        bar.set_postfix_str(f"{record['acc_format']}: {100 * record['stage2']:.1f}%")
        bar.update()


# ------------------------------------------------------------------------------------------- area
class _CacheMiss(Exception):
    pass


class _ProbeCache(ResultCache):
    """Read-only view of a cache that raises at the first missing result (finds out what is finished)."""

    def __init__(self, cache: ResultCache):
        super().__init__(cache.root)

    def get(self, key: str) -> Any:
        result = super().get(key)
        if result is None:
            raise _CacheMiss(key)
        return result

    def put(self, key: str, result: Any) -> None:
        raise AssertionError("a probe never computes")


def area_is_cached(cfg: MacConfig, spec: SweepSpec, synthesis: dict[str, Any]) -> bool:
    cache = synthesis.get("cache")
    if cache is None or cache.root is None:
        return False
    options = {key: value for key, value in synthesis.items() if key not in ("cache", "progress")}
    try:
        area_sweep([cfg], spec.targets, cache=_ProbeCache(cache), progress=False, baseline=spec.baseline_acc,
                   energy=spec.energy, **options)
    except _CacheMiss:
        return False
    return True


def _saved_points(spec: SweepSpec, configs: list[MacConfig], points: Path, synthesis: dict[str, Any]) -> int:
    """How many points a rerun will not have to compute: saved accuracy points, or cached areas (area-only)."""
    if spec.area_only:
        return sum(area_is_cached(cfg, spec, synthesis) for cfg in configs)
    keys = [provenance.settings_hash(accuracy_determinants(spec, cfg)) for cfg in configs]
    return sum(_read_point(_point_path(points, "accuracy", key), key) is not None for key in keys)


# ------------------------------------------------------------------------------------------- the table
def _row(cfg: MacConfig, spec: SweepSpec, area: dict[str, Any] | None, record: dict[str, Any] | None,
         blocks: bool) -> dict[str, Any]:
    """One row: the trained-and-synthesized configuration, its settings hash, area, accuracies, event rates."""
    trained = MacConfig.from_dict(record["mac_config"]) if record is not None else cfg
    determinants = {"area": area_determinants(spec, trained, blocks)}
    if record is not None:
        determinants["accuracy"] = record["key"]
    row: dict[str, Any] = {
        "config": trained.name,
        "input": trained.input.name,
        "acc": trained.acc.name,
        "acc_bias": getattr(trained.acc, "bias", None),
        "bias_mode": spec.bias_mode(cfg) if record is not None else "format",
        "rounding": trained.rounding,
        "chunk": trained.chunk_size or 0,
        "acc_bits": trained.acc.width,
        "settings_hash": provenance.settings_hash(determinants)[: provenance.SHORT_HASH],
    }
    row.update({key: value for key, value in (area or {}).items() if key not in row})
    if record is not None:
        row.update({f"top1_{phase}": record[phase] for phase in ("baseline", "zero_shot", "stage1", "stage2")})
        steps = max(record.get("events_steps", 0), 1)
        row.update({f"{event}_rate": record.get(f"events_{event}", 0) / steps for event in ("overflow", "underflow", "swamp")})
    return row


# ------------------------------------------------------------------------------------------- the folder
def _identity(spec: SweepSpec) -> dict[str, Any]:
    if spec.area_only:
        return {"kind": "area"}
    return {"kind": "area+accuracy", **{key: getattr(spec.accuracy, key) for key in IDENTITY_KEYS}}


def _describe(identity: dict[str, Any]) -> str:
    if identity.get("kind") == "area":
        return "an area-only sweep"
    return f"--model {identity.get('model')} --data {identity.get('data')}"


def check_output(out: Path, spec: SweepSpec) -> dict[str, Any] | None:
    """Check the report folder before any work: creatable, writable, and not holding another sweep's rows.
    Returns the earlier run's sweep.json (or None for a new folder)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"report folder {out} is a file, not a folder (choose another --name or --reports)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        atomic_write_text(probe, "")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"report folder {out} is not writable: {error.strerror or error}") from None
    sweep_file = out / SWEEP_FILE
    if not sweep_file.exists():
        if (out / RESULTS_FILE).exists():
            raise ConfigError(f"{out} holds a {RESULTS_FILE} without {SWEEP_FILE}: not a sweep folder of this "
                              "version; choose another --name or remove the folder")
        return None
    try:
        earlier = json.loads(sweep_file.read_text(encoding="utf-8"))
        earlier_identity = earlier["identity"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{sweep_file} is damaged ({type(error).__name__}): remove {out} or choose another --name") from None
    identity = _identity(spec)
    if earlier_identity != identity:
        raise ConfigError(
            f"{out} holds {_describe(earlier_identity)}; this run is {_describe(identity)}: rows of both would mix. "
            f"Use --name for a new report folder (or remove {out})"
        )
    return earlier


def _earlier_rows(out: Path, earlier: dict[str, Any] | None, settings: dict[str, Any], log: Log) -> pd.DataFrame | None:
    """The earlier run's rows, if it used the same run-wide settings; else None (they are replaced)."""
    if earlier is None or not (out / RESULTS_FILE).exists():
        return None
    if earlier.get("settings") != settings:
        changed = sorted(key for key in settings if earlier.get("settings", {}).get(key) != settings[key])
        log(f"{out}: the earlier rows were measured with other settings ({', '.join(changed) or 'unknown'}); "
            "they are replaced by this run's rows (their points stay in points/)")
        return None
    path = out / RESULTS_FILE
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} cannot be read ({error}); remove it and rerun (the points are kept)") from None
    requested = earlier.get("requested", {})
    complete = (all(column in table for column in ("config", "settings_hash"))
                and table[["config", "settings_hash"]].notna().all().all()
                and sorted(table["config"]) == sorted(requested))
    if not complete:
        raise ConfigError(f"{path} is truncated or has other columns than {SWEEP_FILE} describes; "
                          "remove it and rerun (the points are kept)")
    return table


def _merge(earlier: pd.DataFrame | None, earlier_requested: dict[str, str], current: pd.DataFrame,
           requested: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Earlier rows of configurations this run did not ask for, in their order, then this run's rows."""
    if earlier is None:
        return current, requested
    mine = set(requested.values())
    keep = [name not in mine for name in earlier["config"].map(lambda c: earlier_requested.get(c, c))]
    kept = earlier[keep]
    merged = pd.concat([kept, current], ignore_index=True) if len(kept) else current
    names = {config: earlier_requested.get(config, config) for config in kept["config"]} | requested
    return merged, names


# ------------------------------------------------------------------------------------------- the run
def run_settings(spec: SweepSpec, blocks: bool) -> dict[str, Any]:
    """Run-wide settings (everything but the grid and the report name): rows of one table share them."""
    settings = {"accuracy": asdict(spec.accuracy), "targets": list(spec.targets), "blocks": blocks,
                "baseline_acc": FloatFormat.parse(spec.baseline_acc).name, "product": spec.product, "array": spec.array}
    return json.loads(json.dumps(settings))


def run_sweep(
    spec: SweepSpec,
    out_dir: "str | Path",
    *,
    synthesis: dict[str, Any] | None = None,
    log: Log = lambda message: print(message, file=sys.stderr),
    progress: bool = True,
) -> Path:
    """Run (or resume) a sweep; returns the path of its index.html.

    ``synthesis`` are keyword options of :func:`hwmodel.area.area_sweep` (cache, blocks, progress, timeout_s).
    On SIGINT/SIGTERM (:class:`Interrupted`) the finished points stay saved and the exception says how many.
    """
    out = Path(out_dir)
    synthesis = {"cache": ResultCache(None), **(synthesis or {})}
    blocks = synthesis.get("blocks", True)
    earlier = check_output(out, spec)
    settings = run_settings(spec, blocks)
    earlier_rows = _earlier_rows(out, earlier, settings, log)  # a damaged table fails here, before any work
    configs = spec.configs()
    points = out / POINTS
    started = time.perf_counter()
    records: dict[str, dict[str, Any]] = {}
    try:
        if spec.accuracy.enabled:
            records = run_accuracy(spec, configs, points, log, progress).records
        trained = [MacConfig.from_dict(records[cfg.name]["mac_config"]) if cfg.name in records else cfg for cfg in configs]
        cached = sum(area_is_cached(cfg, spec, synthesis) for cfg in trained)
        log(f"synthesis: reusing {cached} of {len(trained)} points from the cache (targets: {', '.join(spec.targets)})")
        area_table = area_sweep(trained, spec.targets, jobs=spec.jobs, baseline=spec.baseline_acc, energy=spec.energy,
                                **{"progress": progress, **synthesis})
    except Interrupted as stop:
        saved = _saved_points(spec, configs, points, synthesis)
        raise stop.with_message(f"interrupted: {saved} of {len(configs)} points saved; rerun the same command to finish") from None
    area_by_name = {row["config"]: row for row in area_table.to_dict("records")}
    rows = [_row(cfg, spec, area_by_name[trained_cfg.name], records.get(cfg.name), blocks)
            for cfg, trained_cfg in zip(configs, trained)]
    current = pd.DataFrame(rows)
    if spec.array is not None:
        from .pe_array import add_array_columns

        log(f"costing each configuration as a {spec.array} PE array")
        current = add_array_columns(current, trained, *spec.array_shape(), workers=spec.jobs, cache=synthesis["cache"])
    requested = {row["config"]: cfg.name for row, cfg in zip(rows, configs)}
    table, requested = _merge(earlier_rows, (earlier or {}).get("requested", {}), current, requested)
    area_rows = _merge_area(out, earlier, settings, area_table)
    minutes = (time.perf_counter() - started) / 60
    _write_sweep_file(out, spec, settings, requested, records, earlier, minutes)
    kind = "MAC area" if spec.area_only else "area and accuracy"
    write_area_report(area_rows, out, title=f"MAC area sweep '{spec.name}'")
    notes = _notes(spec, table)
    title = f"MAC area sweep '{spec.name}'" if spec.area_only else f"LBA sweep '{spec.name}': {kind}"
    measured = {row["config"]: [records[cfg.name]] for row, cfg in zip(rows, configs)
                if cfg.name in records and "predictions" in records[cfg.name]}
    predictions = predictions_from_points(measured) if measured else None
    return write_results(table, out, title=title, notes=notes, predictions=predictions)


def _merge_area(out: Path, earlier: dict[str, Any] | None, settings: dict[str, Any], area: pd.DataFrame) -> pd.DataFrame:
    path = out / "area.csv"
    if earlier is None or earlier.get("settings") != settings or not path.exists():
        return area
    try:
        old = pd.read_csv(path)
    except (OSError, ValueError):
        return area
    kept = old[~old["config"].isin(area["config"])] if "config" in old else old.iloc[0:0]
    return pd.concat([kept, area], ignore_index=True) if len(kept) else area


def _notes(spec: SweepSpec, table: pd.DataFrame) -> str:
    parts = [f"{len(table)} configurations with {', '.join(sorted(set(table['input'])))} inputs; "
             f"synthesis targets {', '.join(spec.targets)}."]
    if not spec.area_only:
        accuracy = spec.accuracy
        calibrated = [row["acc"] for _, row in table.iterrows() if row.get("bias_mode") not in ("format", None)]
        standard = [row["acc"] for _, row in table.iterrows() if row.get("bias_mode") == "format"]
        parts.append(
            f"Accuracy: {accuracy.model} on {accuracy.data}, baseline {accuracy.epochs_baseline} epochs, fine-tuning "
            f"{accuracy.epochs[0]}+{accuracy.epochs[1]} epochs, lr {accuracy.lr[0]:g}/{accuracy.lr[1]:g}, seed "
            f"{accuracy.seed}, estimator {accuracy.estimator}. Each row is one circuit: the accumulator bias that was "
            f"trained is the bias that was synthesized (column acc_bias)."
        )
        if calibrated:
            parts.append(f"Bias chosen by '{accuracy.bias}': {', '.join(calibrated)}.")
        if standard:
            parts.append(f"Bias as given (standard or explicit): {', '.join(standard)}.")
    return " ".join(parts)


def _write_sweep_file(out: Path, spec: SweepSpec, settings: dict[str, Any], requested: dict[str, str],
                      records: dict[str, dict[str, Any]], earlier: dict[str, Any] | None, minutes: float) -> None:
    measured = dict((earlier or {}).get("measured_at", {})) if earlier and earlier.get("settings") == settings else {}
    measured.update({record["cfg"]: record.get("measured_at") for record in records.values() if record})
    document = {
        "identity": _identity(spec),
        "spec": asdict(spec),
        "settings": settings,
        "requested": requested,
        "measured_at": measured,
        "provenance": {
            **provenance.environment(),
            "accuracy_source": provenance.accuracy_source_hash(),
            "area_source": provenance.area_source_hash(),
            "point_threads": POINT_THREADS,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "minutes": round(minutes, 2),
        },
    }
    atomic_write_text(out / SWEEP_FILE, json.dumps(document, indent=1, sort_keys=True, default=str) + "\n")
