"""Sweep reports: index.html with a headline computed from the data, a compact table, plots (PNG and SVG),
results.md, and the statistics behind them (stats.csv), all rebuildable from the folder's data files.

Data files of a report folder (written by the sweep, read by :func:`build_report`):

- ``results.csv``, one row per MAC configuration: config, input, acc, rounding, chunk, acc_bits — the
  configuration; gates, ge, transistors, depth, luts, ge_reduction — synthesis (ge_reduction is
  1 - GE / GE of the baseline accumulator ``baseline_acc`` with the same inputs); block_<name>_ge — per-block
  GE of the hierarchical synthesis; top1_baseline, top1_zero_shot, top1_stage1, top1_stage2 — accuracies in
  [0, 1] (means over seeds); seeds — fine-tuning seeds per row; overflow_rate, underflow_rate, swamp_rate —
  events per accumulation step in the fine-tuned model's forward pass.
- ``predictions.json`` (optional): the validation labels and, per configuration and seed, the class each
  validation example got from the zero-shot and the fine-tuned model. Without it the report still shows
  the accuracies, but no intervals and no comparison with the fp32 accumulator (and says so).

The statistics (hwmodel.report.stats): a 95% Wilson interval over the test examples for every accuracy; for every
row a paired comparison with the fp32-accumulator row of the same inputs, rounding and chunking on the same
examples and seeds, with Holm's adjustment over the rows compared; a row "differs beyond noise" when the
adjusted p-value is below 0.05.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lba_core.fileio import atomic_write_text

from ..synthesis import columns
from ..workloads import registry
from .cost_plots import CostAxis, silicon_axes
from .data import (
    NOTES_FILE, PREDICTIONS_FILE, RESULTS_FILE, STATS_FILE, TITLE_FILE, ReportError, dump_predictions, has_values,
    read_optional_text, read_predictions, read_results, statistics,
)
from .heatmap import LayerEventsError, plot_layer_heatmap, read_layer_events
from .markdown import write_markdown
from .page import write_index_html
from .per_workload import COST_PLOT_SUFFIX, plot_metric_vs_cost
from .plots import PLOTS, RETIRED_PLOTS, plot_accuracy_vs_cost, plot_area_blocks, plot_difference


def build_report(out_dir: "str | Path", title: str | None = None, notes: str | None = None) -> Path:
    """(Re)build results.md, stats.csv, the plots and index.html from the folder's results.csv (and
    predictions.json, when there); returns the HTML path. Every input is read and checked before anything is
    written: a truncated or foreign results.csv raises ReportError and leaves the folder as it was.

    ``notes`` (what the run was, how long it took) default to those the sweep left in ``notes.txt``.
    """
    out = Path(out_dir)
    df = read_results(out)
    predictions = read_predictions(out, df)
    if notes is None:
        notes = read_optional_text(out / NOTES_FILE)
    title = title or read_optional_text(out / TITLE_FILE) or _title(out, df)
    try:
        layer_events = read_layer_events(out)
    except LayerEventsError as error:
        raise ReportError(str(error)) from None
    if layer_events is not None:
        layer_events = layer_events[layer_events["config"].isin(df["config"])]
        layer_events = layer_events if len(layer_events) else None
    table = statistics(df, predictions)
    sections = registry.report_sections(out)
    if predictions is not None:
        atomic_write_text(out / STATS_FILE, columns.to_csv(columns.STATS, table, float_format="%.6g"))
    silicon = {name: axis for name, axis in silicon_axes(df).items()
               if isinstance(axis, CostAxis) and plot_accuracy_vs_cost(df, table, out, axis)}
    plots = [name for name in (plot_accuracy_vs_cost(df, table, out), plot_difference(df, table, out),
                               plot_area_blocks(df, out),
                               layer_events is not None and plot_layer_heatmap(layer_events, list(df["config"]), out))
             if name] + list(silicon)
    drawn = {plot_metric_vs_cost(section.metric, df, out) for section in sections if section.metric is not None}
    write_markdown(df, table, out, title, notes, layer_events, silicon, sections)
    stale = {path.stem for path in out.glob(f"*{COST_PLOT_SUFFIX}.png")} - drawn  # a workload no longer there
    for name in set(PLOTS) - set(plots) | set(RETIRED_PLOTS) | stale:  # a plot the data no longer supports
        for suffix in (".png", ".svg"):
            (out / name).with_suffix(suffix).unlink(missing_ok=True)
    return write_index_html(df, table, out, title, notes, plots, layer_events, sections)


def _title(out: Path, df: pd.DataFrame) -> str:
    measured = [kind for kind, present in (("area", has_values(df, "ge")), ("accuracy", has_values(df, "top1_stage2"))) if present]
    return f"LBA sweep '{out.name}': {' and '.join(measured) or 'no results'}"


def write_results(df: pd.DataFrame, out_dir: "str | Path", title: str | None = None, notes: str = "",
                  predictions: dict | None = None) -> Path:
    """Write results.csv, notes.txt, title.txt and (given) predictions.json — see
    :func:`predictions_from_points` — then build the report from them."""
    out = Path(out_dir)
    atomic_write_text(out / RESULTS_FILE, columns.to_csv(columns.RESULTS, df))
    atomic_write_text(out / NOTES_FILE, notes)
    if title:
        atomic_write_text(out / TITLE_FILE, title + "\n")
    if predictions is not None:
        atomic_write_text(out / PREDICTIONS_FILE, dump_predictions(_keep_earlier_rows(out, df, predictions)))
    return build_report(out, title, notes)


def _keep_earlier_rows(out: Path, df: pd.DataFrame, predictions: dict) -> dict:
    """``predictions`` plus the earlier predictions.json's rows of configurations that ``df`` still holds
    but this run did not measure (a partial run keeps the other rows, and their predictions)."""
    try:
        earlier = json.loads((out / PREDICTIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return predictions
    if not isinstance(earlier, dict) or earlier.get("labels") != predictions["labels"]:
        return predictions
    kept = {config: row for config, row in earlier.get("rows", {}).items()
            if config in set(df["config"]) and config not in predictions["rows"]}
    return {"labels": predictions["labels"], "rows": {**kept, **predictions["rows"]}}
