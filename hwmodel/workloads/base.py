"""The ``Workload`` protocol: what a sweep measures besides area, one implementation per module of this package,
named in one registry (:mod:`hwmodel.workloads.registry`). The sweep and the report loop over the registry's
workloads that a spec selects and never branch on a workload's name.

A workload says

- its own settings (:attr:`Workload.settings_table`), and which of those given would have no effect
  (:meth:`Workload.check_settings`);
- whether a spec runs it (:meth:`Workload.selected`) and, before any work, whether it can (:meth:`Workload.check`);
- what determines a point and how the points run (:meth:`Workload.run`: saved points are reused, the rest run on
  the spec's executor, local worker processes or Ray tasks, see :func:`executor_of`; counts go into a
  :class:`PointRun` as points arrive, so an interrupted sweep still says how many it saved);
- which circuit it measured for a requested configuration, when it is the sweep's model (:meth:`Workload.circuit`:
  a row's area and accuracy then describe one circuit);
- the columns it adds to a configuration's row of ``results.csv`` (:meth:`Workload.row`, a :class:`RowPart`)
  and the tables it writes beside it (:meth:`Workload.write_tables`);
- the run-wide settings that the rows of a report folder share (:meth:`Workload.settings`) and its words in
  the report's notes (:meth:`Workload.notes`);
- its report section and README block, read back from the folder (:meth:`Workload.report_section`).

``spec`` arguments are :class:`hwmodel.sweep.spec.SweepSpec` objects (not imported: the sweep sits above its
workloads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from lba_core import MacConfig
from lba_core.fileio import atomic_write_text

from ..execution.jobs import Executor
from ..synthesis import columns

Log = Callable[[str], None]


@dataclass
class PointRun:
    """A workload's points of one sweep, by its own key (e.g. requested configuration name), filled as they
    arrive; ``total`` points asked for, ``saved`` of them saved (reused or computed)."""

    records: dict[Any, Any] = field(default_factory=dict)
    total: int = 0
    saved: int = 0


@dataclass(frozen=True)
class RowPart:
    """A workload's part of one configuration's row of ``results.csv``.

    ``determinants`` join the row's settings hash (keyed as given, e.g. ``{"accuracy": [point keys]}``);
    ``bias_mode`` is how the row's accumulator bias was chosen; ``columns`` follow the area columns;
    ``records`` are the point records behind the row (one per seed: the per-layer events, the per-example
    predictions and the measurement times are read from them)."""

    bias_mode: str
    determinants: dict[str, Any]
    columns: dict[str, Any]
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class TaskMetric:
    """A workload's task metric per accumulator, read from its table, for the report's headline sentence and its
    metric-vs-cost plot: ``rows`` has the columns config, acc, value, low, high (the interval), diff, diff_low,
    diff_high (paired difference from the fp32-accumulator row) and differs (True/False; None for that row)."""

    title: str
    words: str
    unit: str
    stage: str
    higher_is_better: bool
    intervals: str
    rows: pd.DataFrame


@dataclass(frozen=True)
class ReportSection:
    """A workload's section of a report folder: in results.md and the README block (``markdown``) and in
    index.html (``html``); ``title`` and ``metric`` (the task metric that the report's headline sentence and
    metric-vs-cost plot of this workload come from). ``in_results``: the workload's metric is results.csv's
    accuracy (the report's main table, with its own statistics), so ``metric`` is None."""

    markdown: str
    html: str
    title: str = ""
    metric: TaskMetric | None = None
    in_results: bool = False


def task_metric(frame: pd.DataFrame, name: str, *, table: str, title: str, stage: str, higher_is_better: bool,
                intervals: str) -> TaskMetric:
    """The :class:`TaskMetric` of a workload table with the declared columns ``name``, ``name_low``,
    ``name_high``, ``diff_name`` (with _low, _high) and ``differs_from_fp32`` (hwmodel/synthesis/columns.py)."""
    declared = columns.column(table, name)
    rows = pd.DataFrame({
        "config": frame["config"], "acc": frame["acc"], "value": frame[name], "low": frame[f"{name}_low"],
        "high": frame[f"{name}_high"], "diff": frame[f"diff_{name}"], "diff_low": frame[f"diff_{name}_low"],
        "diff_high": frame[f"diff_{name}_high"],
        "differs": [None if not isinstance(reference, str) or not reference else str(differs).lower() == "true"
                    for reference, differs in zip(frame["reference"], frame["differs_from_fp32"])],
    }).reset_index(drop=True)
    return TaskMetric(title, declared.meaning, declared.shown_unit, stage, higher_is_better, intervals, rows)


class Workload(Protocol):
    #: The registry's name of the workload (also its key in sweep.json's settings).
    name: str
    #: The sweep's ``accuracy.model`` values that make this workload the sweep's model (may be empty).
    models: tuple[str, ...]
    #: Its own settings, or None: a frozen dataclass of declared settings (hwmodel.workloads.settings), which
    #: becomes ``spec.<name>``, the ``[<name>]`` table of a sweep file and the ``--<name>-*`` options.
    settings_table: type | None

    def selected(self, spec) -> bool:
        """Whether the spec runs this workload."""

    def check_settings(self, spec, given: dict[str, str], where: str) -> None:
        """Before any work: raise ConfigError (one line) when settings that were given would have no effect
        (``given`` maps ``<table>.<field>`` to the key or option the user wrote; ``where`` names the file or
        "options")."""

    def check(self, spec) -> None:
        """Before any work: raise ConfigError (one line) when the workload cannot run (e.g. a missing extra)."""

    def run(self, spec, configs: list[MacConfig], points: Path, log: Log, run: PointRun, progress: bool) -> None:
        """Every point of ``configs``; saved points under ``points`` that match are reused."""

    def circuit(self, spec, cfg: MacConfig, run: PointRun) -> MacConfig | None:
        """The circuit measured for the requested ``cfg`` (bias resolved) when this workload is the sweep's
        model; None otherwise."""

    def row(self, spec, cfg: MacConfig, run: PointRun) -> RowPart | None:
        """This workload's part of ``cfg``'s row of results.csv, or None (its results are in its own table)."""

    def write_tables(self, out: Path, spec, configs: list[MacConfig], run: PointRun, earlier: dict | None,
                     settings: dict[str, Any]) -> None:
        """The workload's own tables in the report folder (``earlier``: the previous run's sweep.json)."""

    def settings(self, spec) -> dict[str, Any] | None:
        """Run-wide settings beyond the spec's accuracy settings (sweep.json ``settings[name]``), or None."""

    def notes(self, spec, table: pd.DataFrame) -> str:
        """The report notes' words on this workload ("" for none)."""

    def report_section(self, out: Path) -> ReportSection | None:
        """The section the folder's data give for this workload, or None (absent: older folders too)."""


def executor_of(spec) -> Executor:
    """Where the spec's points and synthesis run: local worker processes or Ray tasks."""
    return Executor(spec.executor, spec.ray_address)


def write_merged_table(path: Path, frame: pd.DataFrame, earlier: dict | None, settings: dict) -> None:
    """A workload's table (e.g. minilm.csv): this run's rows, after the earlier run's rows of configurations this
    run did not ask for (when that run had the same settings; otherwise they are replaced, like the digits rows).
    Rows are matched by their ``requested`` configuration."""
    if earlier is not None and earlier.get("settings") == settings and path.is_file():
        try:
            old = pd.read_csv(path)
        except (OSError, ValueError):
            old = None
        if old is not None and "requested" in old:
            kept = old[~old["requested"].isin(set(frame["requested"]) if len(frame) else set())]
            frame = pd.concat([kept, frame], ignore_index=True) if len(kept) else frame
    atomic_write_text(path, columns.to_csv(path.name, frame))  # minilm.csv, lm.csv: hwmodel/synthesis/columns.py
