"""Each workload's headline sentence and its task metric against silicon cost, from the folder's tables.

The workloads' sections (:func:`hwmodel.workloads.registry.report_sections`) carry their task metric
(:class:`hwmodel.workloads.base.TaskMetric`); the workload whose metric is results.csv's accuracy (the main
table) gets its metric and sentence from the report's statistics. Headlines are ordered by how many
accumulators differ from the fp32 accumulator beyond noise, so the report leads with the workload that tells
accumulators apart. The report never branches on a workload's name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib
import pandas as pd

from lba_core import FloatFormat, FusedAccumulator, parse_acc

from ..synthesis import columns
from ..synthesis.flows.libraries import LIBRARIES
from ..workloads.base import ReportSection, TaskMetric
from ..workloads.comparison import REFERENCE_ACC, acc_label, is_reference
from .data import has_values
from .figures import save_figure, subplots
from .plots import COLOURS, place_labels
from .prose import headline


def acc_bits(acc: str) -> int:
    """The accumulator register's width (a fused unit: its output register)."""
    parsed = parse_acc(acc)
    return parsed.output.width if isinstance(parsed, FusedAccumulator) else parsed.width


def _shape(config: str, acc: str) -> str:
    """A configuration's name with its accumulator's bias left out: rows of two workloads that fitted the bias
    differently share it (their MACs differ only in the bias constant)."""
    parsed = parse_acc(acc)
    plain = dataclasses.replace(parsed, bias=None).name if isinstance(parsed, FloatFormat) else acc
    return config.replace(f"-{acc}-", f"-{plain}-")


def cost_of(rows: pd.DataFrame, df: pd.DataFrame, column: str) -> pd.Series:
    """Per metric row, results.csv's ``column`` of the MAC with the same formats (NaN where none)."""
    if column not in df:
        return pd.Series(float("nan"), index=rows.index)
    costs = {_shape(config, acc): value for config, acc, value in zip(df["config"], df["acc"], df[column])}
    return pd.Series([costs.get(_shape(config, acc), float("nan")) for config, acc in zip(rows["config"], rows["acc"])],
                     index=rows.index, dtype=float)


def results_metric(df: pd.DataFrame, table: pd.DataFrame, title: str) -> TaskMetric | None:
    """The main table's task metric: fine-tuned top-1 with its 95% interval and the paired comparison."""
    if not has_values(df, "top1_stage2"):
        return None
    stat = table.set_index("config")
    get = lambda key: [stat.at[c, key] if key in stat else float("nan") for c in df["config"]]  # noqa: E731
    differs = [None if is_reference(acc) or pd.isna(v) else bool(v)
               for acc, v in zip(df["acc"], get("stage2_beyond_noise"))]
    rows = pd.DataFrame({"config": df["config"], "acc": df["acc"], "value": df["top1_stage2"], "low": get("stage2_low"),
                         "high": get("stage2_high"), "diff": get("stage2_diff"), "diff_low": get("stage2_diff_low"),
                         "diff_high": get("stage2_diff_high"), "differs": differs}).reset_index(drop=True)
    declared = columns.column(columns.RESULTS, "top1_stage2")
    return TaskMetric(title, "top-1 accuracy", declared.unit, "fine-tuned", True,
                      "95% Wilson intervals over the test examples", rows)


def _number(value: float, unit: str) -> str:
    return f"{100 * value:+.1f} points" if unit == columns.FRACTION else f"{value:+.3f}" + (f" {unit}" if unit else "")


def metric_sentence(metric: TaskMetric, df: pd.DataFrame) -> str:
    """One sentence: the narrowest accumulator within the paired interval of fp32 (with its area saving) and
    those beyond it, computed from the metric's rows."""
    rows = metric.rows[metric.rows["differs"].notna()]
    what = f"{metric.words}, {metric.stage}"
    if rows.empty:
        return f"{metric.title} ({what}): no row is compared with an {REFERENCE_ACC}-accumulator row."
    within = rows[~rows["differs"].astype(bool)]
    within = within.assign(bits=[acc_bits(acc) for acc in within["acc"]]).sort_values("bits", kind="stable")
    beyond = rows[rows["differs"].astype(bool)]
    library = next((name for name in LIBRARIES if has_values(df, columns.target_column(name, "um2"))), None)
    parts = []
    if len(within):
        best = within.iloc[0]
        saving = ""
        if library is not None:
            area = cost_of(metric.rows, df, columns.target_column(library, "um2"))
            reference = area[[is_reference(acc) for acc in metric.rows["acc"]]].dropna()
            mine = area[metric.rows["config"] == best["config"]].dropna()
            if len(reference) and len(mine):
                saving = f", {100 * (1 - mine.iloc[0] / reference.iloc[0]):.0f}% less {library} MAC area"
        parts.append(f"narrowest accumulator within the 95% paired interval of {REFERENCE_ACC}: {acc_label(best['acc'])} "
                     f"({int(best['bits'])} bits, Δ {_number(best['diff'], metric.unit)}{saving})")
    else:
        parts.append(f"every accumulator differs from {REFERENCE_ACC} beyond its 95% paired interval")
    if len(beyond) and len(within):
        parts.append("beyond it: " + ", ".join(f"{acc_label(row['acc'])} ({_number(row['diff'], metric.unit)})"
                                               for _, row in beyond.iterrows()))
    elif len(beyond):
        parts[-1] += ": " + ", ".join(f"{acc_label(row['acc'])} ({_number(row['diff'], metric.unit)})"
                                      for _, row in beyond.iterrows())
    return f"{metric.title} ({what}): {'; '.join(parts)}."


@dataclasses.dataclass(frozen=True)
class Headline:
    """A workload's headline sentence, its metric (None without one) and how many pairs of accumulators it tells
    apart (one within noise of fp32, the other beyond)."""

    title: str
    sentence: str
    metric: TaskMetric | None
    pairs: int


def headlines(df: pd.DataFrame, table: pd.DataFrame, sections: list[ReportSection]) -> list[Headline]:
    """One headline per workload section with a metric (the main table's: the report's headline sentence), the
    workload that tells most pairs of accumulators apart (one within noise of fp32, the other beyond) first,
    registry order among equals; the main table's headline alone when no section names a workload."""
    found = []
    others = sum(section.metric is not None for section in sections)
    for section in sections:
        if section.in_results:  # named only beside other workloads: alone, it is the report's headline as ever
            metric = results_metric(df, table, section.title)
            found.append(Headline(section.title, (f"{section.title}: " if others else "") + headline(df, table), metric,
                                  _pairs(metric)))
        elif section.metric is not None:
            found.append(Headline(section.title, metric_sentence(section.metric, df), section.metric,
                                  _pairs(section.metric)))
    if not any(section.in_results for section in sections):
        found.append(Headline("", headline(df, table), None, -1))
    return sorted(found, key=lambda item: -item.pairs)


def _pairs(metric: TaskMetric | None) -> int:
    if metric is None:
        return 0
    verdicts = [bool(v) for v in metric.rows["differs"] if v is not None and pd.notna(v)]
    return sum(verdicts) * (len(verdicts) - sum(verdicts))


#: Says what the order of the workloads' headlines means.
HEADLINES_INTRO = ("Each workload's headline, the one that tells most pairs of accumulators apart (one within noise of "
                   "fp32, the other beyond) first:")

#: The end of a workload's metric-vs-cost plot's file stem.
COST_PLOT_SUFFIX = "_vs_cost"


def plot_stem(metric: TaskMetric) -> str:
    """The file stem of a workload's metric-vs-cost plot: ``<title>_vs_cost`` in lower case."""
    return "_".join(metric.title.lower().split()) + COST_PLOT_SUFFIX


def cost_axes(df: pd.DataFrame) -> list[tuple[str, str, bool]]:
    """(column, axis label, log) of the silicon costs results.csv has: the first library's µm², then its pJ/MAC."""
    axes = []
    for figure, words, log in (("um2", "MAC area [µm², log scale]", True),
                               ("pj_per_mac", "energy per MAC [pJ, real operands]", False)):
        library = next((name for name in LIBRARIES if has_values(df, columns.target_column(name, figure))), None)
        if library is not None:
            axes.append((columns.target_column(library, figure), f"{library} {words}", log))
    return axes


def plot_metric_vs_cost(metric: TaskMetric, df: pd.DataFrame, out: Path) -> str | None:
    """The metric of every row against MAC area (and energy per MAC, when measured), with its interval as an
    error bar and the fp32 row's interval as a band; None without any cost column or joined row."""
    axes = [(column, label, log) for column, label, log in cost_axes(df)
            if cost_of(metric.rows, df, column).notna().any()]
    if not axes:
        return None
    fig, panels = subplots(1, len(axes), figsize=(6.2 * len(axes) + 1.2, 4.4), squeeze=False)
    rows = metric.rows
    scale = 100 if metric.unit == columns.FRACTION else 1
    panels_labels = []
    for ax, (column, label, log) in zip(panels[0], axes):
        cost = cost_of(rows, df, column)
        reference = rows[[is_reference(acc) for acc in rows["acc"]]]
        if len(reference) and pd.notna(reference["low"].iloc[0]):
            ax.axhspan(scale * reference["low"].iloc[0], scale * reference["high"].iloc[0], color="0.9", zorder=0,
                       label=f"{REFERENCE_ACC} accumulator: 95% interval")
        labels, markers = [], []
        for index, row in rows.iterrows():
            if pd.isna(cost[index]):
                continue
            colour = colour_of(acc_bits(row["acc"]))
            errors = None if pd.isna(row["low"]) else [[scale * (row["value"] - row["low"])],
                                                         [scale * (row["high"] - row["value"])]]
            ax.errorbar(cost[index], scale * row["value"], yerr=errors, fmt="o", color=colour, ms=5, capsize=2, lw=0.8,
                        mfc="white" if row["differs"] is True else colour, zorder=3)
            labels.append((cost[index], scale * row["value"], acc_label(row["acc"]), colour))
            markers.append((cost[index], scale * row["value"]))
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
            ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{metric.words} [{'%' if scale == 100 else metric.unit}]" if metric.unit else metric.words)
        ax.grid(alpha=0.3, which="both")
        panels_labels.append((ax, labels, markers))
    panels[0][0].plot([], [], "o", color="grey", label="within noise of fp32")
    panels[0][0].plot([], [], "o", color="grey", mfc="white", label="differs beyond noise")
    for bits in sorted({acc_bits(acc) for acc in rows["acc"]}):
        panels[0][0].plot([], [], "s", color=colour_of(bits), label=f"{bits}-bit accumulator")
    panels[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"{metric.title}: {metric.words} ({metric.stage}) vs silicon cost", fontsize=10)
    fig.tight_layout()
    for ax, labels, markers in panels_labels:
        place_labels(ax, labels, markers)
    return save_figure(fig, out / plot_stem(metric))


def colour_of(bits: int) -> str:
    """The colour of an accumulator width, as in the report's other plots."""
    return COLOURS.get(int(bits), "tab:purple")


def metric_caption(metric: TaskMetric, df: pd.DataFrame) -> str:
    """What the metric-vs-cost plot shows, and which cost axis is missing and why."""
    axes = cost_axes(df)
    joined = cost_of(metric.rows, df, axes[0][0]).notna().sum() if axes else 0
    energy = ("" if any(columns.column(columns.RESULTS, column).kind == "energy" for column, _, _ in axes) else
              " No energy axis: this sweep measured no energy per MAC (results.csv has no <library>_pj_per_mac "
              "column); rerun it with `hwmodel sweep --energy`.")
    return (f"{metric.title}: {metric.words} ({metric.stage}) of each accumulator against the silicon cost of the MAC "
            f"synthesized for the same formats ({joined} of {len(metric.rows)} rows; where the workload fitted its own "
            f"accumulator bias, the MAC synthesized with the main table's bias). Error bars: {metric.intervals}; grey "
            f"band: the {REFERENCE_ACC} accumulator's interval; hollow: differs from {REFERENCE_ACC} beyond its "
            f"paired interval." + energy)
