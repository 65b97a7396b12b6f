"""The main job: area and accuracy of every configuration of a sweep, one circuit per row, in one report.

Order of work: the accuracy points first (each chooses its accumulator bias, e.g. by calibration), then the
synthesis of exactly the configurations that were trained, bias included, so a row's area and accuracy
describe one circuit (``e4m7_b11``). Area-only sweeps synthesize the formats as given.

Every saved result is keyed by the hash of what determines it (hwmodel.execution.provenance): points live in
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from lba_core import FloatFormat, MacConfig
from lba_core.errors import ConfigError
from lba_core.fileio import atomic_write_text, writable_folder

from ..execution import provenance
from ..execution.cache import ResultCache
from ..execution.interrupt import Interrupted
from ..execution.jobs import executor_session
from ..execution.points import POINT_THREADS
from ..report.data import predictions_from_points
from ..report.heatmap import layer_event_rows, layer_event_table, write_layer_events
from ..report.report import write_results
from ..synthesis.area import area_sweep, register_bits, write_area_report
from ..synthesis.flows.operands import StreamSpec
from ..workloads import registry
from ..workloads.base import Log, PointRun, RowPart, executor_of
from .spec import SweepSpec

SWEEP_FILE = "sweep.json"


RESULTS_FILE = "results.csv"


POINTS = "points"


#: What a report folder is about; a run with other values needs another folder.
IDENTITY_KEYS = ("model", "data")


def energy_streams(spec: SweepSpec) -> StreamSpec | None:
    """Whose operands the energy per MAC and per inference are measured on: the swept model on the swept
    data set (an area-only sweep: the digits ResNet); None without ``energy``."""
    if not spec.energy:
        return None
    if spec.area_only:
        return StreamSpec()
    return StreamSpec(model=spec.accuracy.model, data=spec.accuracy.data, seed=spec.accuracy.seed,
                      width=spec.accuracy.width)


def area_determinants(spec: SweepSpec, cfg: MacConfig, blocks: bool) -> dict[str, Any]:
    streams = energy_streams(spec)
    return {
        "kind": "area", "cfg": cfg.to_dict(), "targets": list(spec.targets), "blocks": blocks,
        **({"energy": asdict(streams)} if streams else {}),
        "baseline_acc": FloatFormat.parse(spec.baseline_acc).name,
        "source": provenance.area_source_hash(), "tools": provenance.area_tools(),
    }


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
                   energy=spec.energy, stream_spec=energy_streams(spec), **options)
    except _CacheMiss:
        return False
    return True


def _cached_areas(spec: SweepSpec, configs: list[MacConfig], synthesis: dict[str, Any]) -> int:
    return sum(area_is_cached(cfg, spec, synthesis) for cfg in configs)


def result_row(trained: MacConfig, spec: SweepSpec, area: dict[str, Any] | None, parts: list[RowPart],
               blocks: bool) -> dict[str, Any]:
    """One row: the measured-and-synthesized configuration ``trained``, its settings hash, area, then the
    workloads' columns (``parts``, e.g. accuracies and event rates)."""
    determinants: dict[str, Any] = {"area": area_determinants(spec, trained, blocks)}
    for part in parts:
        determinants.update(part.determinants)
    row: dict[str, Any] = {
        "config": trained.name,
        "input": trained.input.name,
        "acc": trained.acc.name,
        "acc_bias": getattr(trained.acc, "bias", None),
        "bias_mode": parts[0].bias_mode if parts else "format",
        "rounding": trained.rounding,
        "chunk": trained.chunk_size or 0,
        "acc_bits": register_bits(trained),
        "settings_hash": provenance.settings_hash(determinants)[: provenance.SHORT_HASH],
    }
    row.update({key: value for key, value in (area or {}).items() if key not in row})
    for part in parts:
        row.update(part.columns)
    return row


def _identity(spec: SweepSpec) -> dict[str, Any]:
    if spec.area_only:
        return {"kind": "area"}
    identity = {"kind": "area+accuracy", **{key: getattr(spec.accuracy, key) for key in IDENTITY_KEYS}}
    if spec.accuracy.width != 1:  # a widened model is another model; width 1 keeps earlier folders' identity
        identity["width"] = spec.accuracy.width
    return identity


def _legacy_identity(document: dict[str, Any]) -> dict[str, Any]:
    """The identity of a sweep.json written before identities were recorded (it held the bare spec). Its rows
    carry no settings, so a run replaces them (see :func:`_earlier_rows`)."""
    accuracy = document["accuracy"]
    if not accuracy["enabled"]:
        return {"kind": "area"}
    return {"kind": "area+accuracy", **{key: accuracy[key] for key in IDENTITY_KEYS}}


def _describe(identity: dict[str, Any]) -> str:
    if identity.get("kind") == "area":
        return "an area-only sweep"
    width = f" --width {identity['width']}" if "width" in identity else ""
    return f"--model {identity.get('model')} --data {identity.get('data')}{width}"


def check_output(out: Path, spec: SweepSpec) -> dict[str, Any] | None:
    """Check the report folder before any work: creatable, writable, and not holding another sweep's rows.
    Returns the earlier run's sweep.json (or None for a new folder)."""
    writable_folder(out, "report folder")
    sweep_file = out / SWEEP_FILE
    if not sweep_file.exists():
        if (out / RESULTS_FILE).exists():
            raise ConfigError(f"{out} holds a {RESULTS_FILE} without {SWEEP_FILE}: not a sweep folder of this "
                              "version; choose another --name or remove the folder")
        return None
    try:
        earlier = json.loads(sweep_file.read_text(encoding="utf-8"))
        earlier_identity = earlier["identity"] if "identity" in earlier else _legacy_identity(earlier)
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
        kept = (f"their saved points stay in {out / POINTS}, for a run with their settings" if (out / POINTS).is_dir()
                else f"no points of theirs are saved in {out / POINTS}")
        log(f"{out}: the earlier rows were measured with other settings ({', '.join(changed) or 'unknown'}); "
            f"they are replaced by this run's rows ({kept})")
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


def run_settings(spec: SweepSpec, blocks: bool) -> dict[str, Any]:
    """Run-wide settings (everything but the grid and the report name): rows of one table share them."""
    accuracy = {key: value for key, value in asdict(spec.accuracy).items()
                if (key, value) != ("device", "cpu")}  # sweeps from before the device setting trained on the CPU
    settings = {"accuracy": accuracy, "targets": list(spec.targets), "blocks": blocks,
                "baseline_acc": FloatFormat.parse(spec.baseline_acc).name, "product": spec.product, "array": spec.array}
    for workload in registry.selected(spec):
        extra = workload.settings(spec)
        if extra is not None:
            settings[workload.name] = extra
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

    ``synthesis`` are keyword options of :func:`hwmodel.synthesis.area.area_sweep` (cache, blocks, progress, timeout_s).
    On SIGINT/SIGTERM (:class:`Interrupted`) the finished points stay saved and the exception says how many.
    """
    with executor_session(executor_of(spec), spec.jobs):  # one Ray connection for the points and every synthesis stage
        return _run_sweep(spec, out_dir, synthesis=synthesis, log=log, progress=progress)


def _run_sweep(spec: SweepSpec, out_dir: "str | Path", *, synthesis: dict[str, Any] | None, log: Log,
               progress: bool) -> Path:
    out = Path(out_dir)
    synthesis = {"cache": ResultCache(None), **(synthesis or {})}
    blocks = synthesis.get("blocks", True)
    earlier = check_output(out, spec)
    settings = run_settings(spec, blocks)
    earlier_rows = _earlier_rows(out, earlier, settings, log)  # a damaged table fails here, before any work
    workloads = registry.selected(spec)
    for workload in workloads:
        workload.check(spec)
    configs = spec.configs()
    points = out / POINTS
    started = time.perf_counter()
    runs = {workload.name: PointRun() for workload in workloads}
    try:
        for workload in workloads:
            workload.run(spec, configs, points, log, runs[workload.name], progress)
        trained = [_circuit(spec, cfg, workloads, runs) for cfg in configs]  # synthesize what was measured
        cached = _cached_areas(spec, trained, synthesis)
        log(f"synthesis: reusing {cached} of {len(trained)} points from the cache (targets: {', '.join(spec.targets)})")
        area_table = area_sweep(trained, spec.targets, jobs=spec.jobs, baseline=spec.baseline_acc, energy=spec.energy,
                                executor=executor_of(spec), stream_spec=energy_streams(spec),
                                **{"progress": progress, **synthesis})
    except Interrupted as stop:
        saved, total = ((sum(run.saved for run in runs.values()), sum(run.total for run in runs.values()))
                        if spec.accuracy.enabled else (_cached_areas(spec, configs, synthesis), len(configs)))
        raise stop.with_message(f"interrupted: {saved} of {total} points saved; rerun the same command to finish") from None
    area_by_name = {row["config"]: row for row in area_table.to_dict("records")}
    parts = [[part for workload in workloads if (part := workload.row(spec, cfg, runs[workload.name])) is not None]
             for cfg in configs]
    records = {cfg.name: [record for part in cfg_parts for record in part.records]
               for cfg, cfg_parts in zip(configs, parts) if cfg_parts}
    # a row is named after its circuit: the configuration the workloads measured
    rows = [result_row(trained_cfg, spec, area_by_name[trained_cfg.name], cfg_parts, blocks)
            for trained_cfg, cfg_parts in zip(trained, parts)]
    current = pd.DataFrame(rows)
    if spec.array is not None:
        from ..synthesis.pe_array import add_array_columns

        log(f"costing each configuration as a {spec.array} PE array")
        current = add_array_columns(current, trained, *spec.array_shape(), workers=spec.jobs, cache=synthesis["cache"],
                                    executor=executor_of(spec))
    requested = {row["config"]: cfg.name for row, cfg in zip(rows, configs)}
    table, requested = _merge(earlier_rows, (earlier or {}).get("requested", {}), current, requested)
    area_rows = _merge_area(out, earlier, settings, area_table)
    if records:
        layers = [layer for row, cfg in zip(rows, configs) if cfg.name in records
                  for layer in layer_event_rows(row["config"], row["acc"], records[cfg.name])]
        write_layer_events(out, layer_event_table(layers), list(table["config"]))
    for workload in workloads:
        workload.write_tables(out, spec, configs, runs[workload.name], earlier, settings)
    minutes = (time.perf_counter() - started) / 60
    _write_sweep_file(out, spec, settings, requested, records, earlier, minutes)
    kind = "MAC area" if spec.area_only else "area and accuracy"
    write_area_report(area_rows, out, title=f"MAC area sweep '{spec.name}'")
    notes = _notes(spec, table)
    title = f"MAC area sweep '{spec.name}'" if spec.area_only else f"LBA sweep '{spec.name}': {kind}"
    measured = {row["config"]: records[cfg.name] for row, cfg in zip(rows, configs)
                if cfg.name in records and all("predictions" in record for record in records[cfg.name])}
    predictions = predictions_from_points(measured) if measured else None
    return write_results(table, out, title=title, notes=notes, predictions=predictions)


def _circuit(spec: SweepSpec, cfg: MacConfig, workloads, runs: dict[str, PointRun]) -> MacConfig:
    """The circuit the first workload that measured ``cfg`` as the sweep's model ran (bias resolved), else ``cfg``."""
    for workload in workloads:
        circuit = workload.circuit(spec, cfg, runs[workload.name])
        if circuit is not None:
            return circuit
    return cfg


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
    streams = energy_streams(spec)
    if streams is not None:
        parts.append(f"Energy per MAC: gate-level switching of each mapped MAC at its own minimum clock period, on "
                     f"the operands of {streams.describe()}, and on uniformly random codes; energy per inference = "
                     "the sum over that model's layers of MACs per image x pJ/MAC on the layer's operands.")
    parts += [words for workload in registry.selected(spec) if (words := workload.notes(spec, table))]
    return " ".join(parts)


def _write_sweep_file(out: Path, spec: SweepSpec, settings: dict[str, Any], requested: dict[str, str],
                      records: dict[str, list[dict[str, Any]]], earlier: dict[str, Any] | None, minutes: float) -> None:
    measured = dict((earlier or {}).get("measured_at", {})) if earlier and earlier.get("settings") == settings else {}
    measured.update({f"{record['cfg']} seed {record['seed']}": record.get("measured_at")
                     for per_seed in records.values() for record in per_seed})
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
