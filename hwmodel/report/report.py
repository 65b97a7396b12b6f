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

import csv
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "lba-report"  # stable SVG ids: the same data gives the same file
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lba_core import ConfigError, FormatError, parse_format, standard_name  # noqa: E402
from lba_core.fileio import atomic_write_bytes, atomic_write_text, markdown_table, replace_marked_block  # noqa: E402

from ..workloads import minilm as minilm_workload  # noqa: E402
from . import stats
from .cost_plots import GE_AXIS, SILICON_PLOTS, CostAxis, silicon_axes, silicon_caption, silicon_markdown  # noqa: E402
from .heatmap import (  # noqa: E402
    HEATMAP, LAYER_EVENTS_FILE, LayerEventsError, heatmap_caption, heatmap_markdown, plot_layer_heatmap, read_layer_events,
)
from ..synthesis.flows.libraries import LIBRARIES  # noqa: E402

RESULTS_FILE = "results.csv"
PREDICTIONS_FILE = "predictions.json"
STATS_FILE = "stats.csv"
NOTES_FILE = "notes.txt"
TITLE_FILE = "title.txt"
SCREENSHOT_FILE = "screenshot.png"
#: Accuracy phases that get intervals and paired comparisons: (column suffix, words).
PHASES = (("zero_shot", "zero-shot"), ("stage2", "fine-tuned"))
REFERENCE_ACC = "fp32"
#: Columns that tell configurations apart besides the accumulator; a comparison pairs rows equal in these.
GROUP_COLUMNS = ("input", "weight", "product", "rounding", "chunk")
NUMERIC_COLUMNS = ("acc_bits", "gates", "ge", "transistors", "depth", "luts", "ge_reduction", "seeds",
                   "array_ge", "array_ge_per_pe", "array_accumulator_share", "array_depth",
                   "top1_baseline", "top1_zero_shot", "top1_stage1", "top1_stage2",
                   "overflow_rate", "underflow_rate", "swamp_rate")
REQUIRED_COLUMNS = ("config", "acc")


class ReportError(Exception):
    """The report folder's data cannot make a report; the message says which file and what is wrong."""


# ------------------------------------------------------------------------------------------- reading
def read_results(out: Path) -> pd.DataFrame:
    """``out/results.csv``, checked: every line has the header's fields, the required and numeric columns
    are there and numeric. Raises ReportError (or FileNotFoundError when there is no results.csv)."""
    path = out / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULTS_FILE} in {out}: run `hwmodel sweep` first")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ReportError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    lines = list(csv.reader(io.StringIO(text)))
    if not lines or not lines[0]:
        raise ReportError(f"{path}: empty file, no header line")
    if not text.endswith("\n"):
        raise ReportError(f"{path}: line {len(lines)} does not end with a line break (truncated file?)")
    header = lines[0]
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise ReportError(f"{path}: no column {', '.join(missing)} (header: {','.join(header[:6])}...); "
                          "is this a sweep's results.csv?")
    for number, fields in enumerate(lines[1:], start=2):
        if len(fields) != len(header):
            raise ReportError(f"{path}: line {number} has {len(fields)} fields, the header {len(header)} "
                              "(truncated or edited file?)")
    if len(lines) < 2:
        raise ReportError(f"{path}: a header but no rows")
    df = pd.read_csv(io.StringIO(text))
    for column in NUMERIC_COLUMNS:
        if column in df and not pd.api.types.is_numeric_dtype(df[column]):
            bad = df[column][pd.to_numeric(df[column], errors="coerce").isna() & df[column].notna()].iloc[0]
            raise ReportError(f"{path}: column {column} must be numeric, found {bad!r}")
    if df["config"].duplicated().any():
        raise ReportError(f"{path}: configuration {df['config'][df['config'].duplicated()].iloc[0]} appears twice")
    for acc in df["acc"]:
        try:
            parse_format(acc)
        except (FormatError, ConfigError) as error:
            raise ReportError(f"{path}: column acc: {error}") from None
    return df


@dataclass(frozen=True)
class Predictions:
    """Per-example predictions of a sweep: validation labels, and per configuration the seeds and, per
    phase, an array (seeds, examples) of predicted classes."""

    labels: np.ndarray
    rows: dict[str, dict]

    def correct(self, config: str, phase: str) -> np.ndarray:
        return np.asarray(self.rows[config][phase]) == self.labels[None, :]


def predictions_from_points(points: dict[str, Sequence[dict]]) -> dict:
    """The content of predictions.json from accuracy point records (run_accuracy_point's dicts, each with
    "seed", "labels" and "predictions"), given per configuration name as one record per seed."""
    labels = None
    rows = {}
    for config, records in points.items():
        records = sorted(records, key=lambda record: record["seed"])
        for record in records:
            if labels is None:
                labels = record["labels"]
            elif record["labels"] != labels:
                raise ValueError(f"accuracy point {config} (seed {record['seed']}) was measured on other examples")
        rows[config] = {"seeds": [record["seed"] for record in records],
                        **{phase: [record["predictions"][phase] for record in records] for phase, _ in PHASES}}
    return {"labels": labels or [], "rows": rows}


def _dump_predictions(predictions: dict) -> str:
    """Compact JSON, one configuration per line, keys sorted: the same data gives the same file."""
    rows = ",\n".join(f"  {json.dumps(config)}: {json.dumps(row, sort_keys=True, separators=(',', ':'))}"
                      for config, row in sorted(predictions["rows"].items()))
    return f'{{"labels": {json.dumps(predictions["labels"], separators=(",", ":"))},\n"rows": {{\n{rows}\n}}}}\n'


def read_predictions(out: Path, df: pd.DataFrame) -> Predictions | None:
    """``out/predictions.json`` checked against results.csv, or None when the folder has none."""
    path = out / PREDICTIONS_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        labels = np.asarray(raw["labels"], dtype=int)
        rows = raw["rows"]
        for config, row in rows.items():
            for phase, _ in PHASES:
                shape = np.asarray(row[phase]).shape
                if shape != (len(row["seeds"]), len(labels)):
                    raise ValueError(f"{config} {phase}: shape {shape}, expected ({len(row['seeds'])}, {len(labels)})")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise ReportError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
    predictions = Predictions(labels, rows)
    for _, row in df.iterrows():
        for phase, _ in PHASES:
            column = f"top1_{phase}"
            if row["config"] in rows and column in df and pd.notna(row[column]):
                measured = predictions.correct(row["config"], phase).mean()
                if abs(measured - row[column]) > 1e-9:
                    raise ReportError(f"{path} does not belong to {RESULTS_FILE}: {row['config']} {phase} accuracy "
                                      f"{100 * measured:.2f}% vs {100 * row[column]:.2f}%")
    return predictions


# ------------------------------------------------------------------------------------------- statistics
def _has(df: pd.DataFrame, *columns: str) -> bool:
    return all(column in df and df[column].notna().any() for column in columns)


def _is_reference(acc: str) -> bool:
    return standard_name(acc) == REFERENCE_ACC


def reference_rows(df: pd.DataFrame) -> pd.Series:
    """Per row, the config of the fp32-accumulator row with the same inputs, rounding and chunking (or None)."""
    groups = [column for column in GROUP_COLUMNS if column in df]
    references = {}
    for _, row in df.iterrows():
        if _is_reference(row["acc"]):
            references.setdefault(tuple(row[c] for c in groups), row["config"])
    return pd.Series([references.get(tuple(row[c] for c in groups)) for _, row in df.iterrows()], index=df.index)


def statistics(df: pd.DataFrame, predictions: Predictions | None) -> pd.DataFrame:
    """Per row and phase: accuracy, 95% interval over the test examples, seed spread, and the paired
    comparison with the fp32-accumulator row (difference, agreement, p-value, Holm-adjusted p-value,
    verdict). Columns are named ``<phase>_<quantity>``; rows without data have NaN."""
    table = pd.DataFrame({"config": df["config"], "reference": reference_rows(df)}, index=df.index)
    if predictions is None:
        return table
    for phase, _ in PHASES:
        values: dict[str, list] = {key: [] for key in ("mean", "low", "high", "seed_sd", "seeds", "examples", "diff",
                                                       "diff_low", "diff_high", "agreement", "p", "test")}
        for index, row in df.iterrows():
            config, reference = row["config"], table.at[index, "reference"]
            if config not in predictions.rows:
                for key in values:
                    values[key].append(None)
                continue
            correct = predictions.correct(config, phase)
            summary = stats.summarize_accuracy(correct)
            for key in ("mean", "low", "high", "seed_sd", "seeds", "examples"):
                values[key].append(getattr(summary, key))
            comparison = _compare(predictions, config, reference, phase)
            interval = comparison.interval() if comparison else (None, None)
            values["diff"].append(comparison and comparison.difference)
            values["diff_low"].append(interval[0])
            values["diff_high"].append(interval[1])
            values["agreement"].append(comparison and comparison.agreement)
            values["p"].append(comparison and comparison.p_value)
            values["test"].append(comparison and comparison.test)
        for key, column in values.items():
            table[f"{phase}_{key}"] = column
        compared = table[f"{phase}_p"].notna()
        table[f"{phase}_p_holm"] = np.nan
        table.loc[compared, f"{phase}_p_holm"] = stats.holm(table.loc[compared, f"{phase}_p"].astype(float).tolist())
        table[f"{phase}_beyond_noise"] = [bool(p < stats.ALPHA) if pd.notna(p) else None for p in table[f"{phase}_p_holm"]]
    return table


def _compare(predictions: Predictions, config: str, reference: str | None, phase: str) -> stats.Comparison | None:
    if reference is None or reference == config or reference not in predictions.rows:
        return None
    row, ref = predictions.rows[config], predictions.rows[reference]
    shared = [seed for seed in row["seeds"] if seed in ref["seeds"]]
    if not shared:
        return None
    pick = lambda entry: np.asarray(entry[phase])[[entry["seeds"].index(seed) for seed in shared]]  # noqa: E731
    model, base = pick(row), pick(ref)
    labels = predictions.labels[None, :]
    return stats.paired_comparison(model == labels, base == labels, same_prediction=model == base)


# ------------------------------------------------------------------------------------------- words
def _percent_range(values: Sequence[float]) -> str:
    low, high = round(100 * min(values)), round(100 * max(values))
    return f"{low}%" if low == high else f"{low}–{high}%"


def _names(df: pd.DataFrame) -> list[str]:
    return [standard_name(acc) for acc in df["acc"]]


def _noise_words(table: pd.DataFrame) -> str:
    compared = table["stage2_p"].notna() if "stage2_p" in table else pd.Series(False, index=table.index)
    if not compared.any():
        return ""
    seeds = int(table.loc[compared, "stage2_seeds"].min())
    examples = int(table.loc[compared, "stage2_examples"].min())
    seed_words = f"{seeds} fine-tuning seeds" if seeds > 1 else "1 fine-tuning seed (seed-to-seed variation not measured)"
    return (f"noise: {examples} test examples and {seed_words}; 95% level, Holm-corrected for "
            f"{int(compared.sum())} comparisons")


def headline(df: pd.DataFrame, table: pd.DataFrame) -> str:
    """One sentence (or two) saying what the sweep found, computed from the data."""
    non_reference = df[[not _is_reference(acc) for acc in df["acc"]]]
    has_area = _has(df, "ge_reduction")
    reference_name = standard_name(df["baseline_acc"].dropna().iloc[0]) if _has(df, "baseline_acc") else REFERENCE_ACC
    widths = sorted(non_reference["acc_bits"].dropna().unique()) if "acc_bits" in df else []

    def area_words(rows: pd.DataFrame) -> str:
        if not has_area or rows["ge_reduction"].isna().all():
            return ""
        return f"{_percent_range(rows['ge_reduction'].dropna())} less MAC area than {reference_name}"

    if not _has(df, "top1_stage2"):
        if not has_area:
            return f"{len(df)} configurations; neither area nor accuracy was measured."
        parts = [f"{int(w)}-bit: {_percent_range(non_reference[non_reference['acc_bits'] == w]['ge_reduction'].dropna())}"
                 for w in sorted(widths, reverse=True) if non_reference[non_reference["acc_bits"] == w]["ge_reduction"].notna().any()]
        return f"MAC area relative to {reference_name} accumulators: {', '.join(parts)} less (area only; no accuracy measured)."
    if "stage2_beyond_noise" not in table or table["stage2_beyond_noise"].isna().all():
        narrowest = non_reference[non_reference["acc_bits"] == widths[0]] if widths else non_reference
        accuracy = _percent_range(narrowest["top1_stage2"].dropna()) if narrowest["top1_stage2"].notna().any() else "–"
        reference = df[[_is_reference(acc) for acc in df["acc"]]]["top1_stage2"].dropna()
        versus = f" vs {100 * reference.iloc[0]:.1f}% with {REFERENCE_ACC}" if len(reference) else ""
        area = area_words(narrowest)
        return (f"{int(widths[0]) if widths else '?'}-bit accumulators ({', '.join(_names(narrowest))}): "
                f"{area + '; ' if area else ''}fine-tuned top-1 {accuracy}{versus} (no per-example predictions in "
                "this folder, so the noise is unknown).")
    verdict = table.set_index("config")["stage2_beyond_noise"]
    compared = non_reference[[verdict.get(config) is not None and pd.notna(verdict.get(config))
                              for config in non_reference["config"]]]
    non_reference = compared  # rows without an fp32 row to compare with (integer inputs, say) make no claim
    widths = sorted(non_reference["acc_bits"].dropna().unique())
    within = lambda rows: len(rows) and all(not verdict.get(config) for config in rows["config"])  # noqa: E731
    sentences = []
    chosen = next((w for w in widths if within(non_reference[non_reference["acc_bits"] == w])), None)
    if chosen is not None:
        rows = non_reference[non_reference["acc_bits"] == chosen]
        area = area_words(rows)
        sentences.append(f"{int(chosen)}-bit accumulators ({', '.join(_names(rows))}): {area + '; ' if area else ''}"
                         f"fine-tuned accuracy within noise of {REFERENCE_ACC}.")
    else:
        sentences.append(f"Every accumulator width below 32 bits has a format whose fine-tuned accuracy differs from "
                         f"{REFERENCE_ACC} beyond noise.")
    sentences.append(differences_sentence(df, table, "stage2"))
    return " ".join(sentences)


def differences_sentence(df: pd.DataFrame, table: pd.DataFrame, phase: str) -> str:
    """Which rows differ from the fp32-accumulator row beyond noise in ``phase``, in words."""
    words = dict(PHASES)[phase]
    beyond = table[table.get(f"{phase}_beyond_noise", pd.Series(dtype=object)) == True]  # noqa: E712
    compared = table[f"{phase}_p"].notna().sum() if f"{phase}_p" in table else 0
    if not compared:
        return ""
    if beyond.empty:
        return f"No row's {words} accuracy differs from {REFERENCE_ACC} beyond noise."
    accs = df.set_index("config")["acc"]
    items = [f"{standard_name(accs[row['config']])} ({100 * row[f'{phase}_diff']:+.1f} points, "
             f"{_p_clause(row[f'{phase}_p_holm'])})" for _, row in beyond.iterrows()]
    return f"{_sentence(words)} accuracy beyond noise of {REFERENCE_ACC}: {', '.join(items)}."


def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _p_clause(p: float) -> str:
    text = _p_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _sentence(text: str) -> str:
    """First letter upper case, the rest as written (str.capitalize would lower-case 'LBA' and 'Holm')."""
    return text[:1].upper() + text[1:]


def _rate_text(rate: float) -> str:
    percent = 100 * rate
    if 0 < percent < 0.01:
        return "< 0.01"
    return f"{percent:.0f}" if percent >= 10 else f"{percent:.1f}" if percent >= 1 else f"{percent:.2g}"


# ------------------------------------------------------------------------------------------- table
def _interval_text(mean, low, high) -> str:
    if pd.isna(mean):
        return "–"
    if pd.isna(low):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ({100 * low:.1f}–{100 * high:.1f})"


def compact_table(df: pd.DataFrame, table: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, constants): the columns people read, with units; columns that do not vary (inputs,
    rounding, chunking, the float baseline) become sentences in ``constants``; empty columns are left out."""
    reference_name = standard_name(df["baseline_acc"].dropna().iloc[0]) if _has(df, "baseline_acc") else REFERENCE_ACC
    stat = table.set_index("config")
    columns: list[tuple[str, list[str]]] = [("Accumulator", _names(df))]
    constants = []
    for column, title in (("input", "Inputs"), ("rounding", "Rounding"), ("chunk", "Chunk")):
        if column in df:
            values = df[column].fillna("–").astype(str).tolist()
            if len(set(values)) > 1:
                columns.append((title, values))
            else:
                constants.append(f"{title.lower()}: {'one chunk' if column == 'chunk' and values[0] == '0' else values[0]}")
    cell = lambda value, text: "–" if pd.isna(value) else text(value)  # noqa: E731
    if "acc_bits" in df:
        columns.append(("Bits", [cell(v, lambda v: f"{int(v)}") for v in df["acc_bits"]]))
    if "ge" in df:
        columns.append(("MAC area [GE]", [cell(v, lambda v: f"{v:,.0f}") for v in df["ge"]]))
    if "ge_reduction" in df:
        columns.append((f"Area vs {reference_name}", [cell(v, lambda v: f"{-100 * v:+.0f}%" if v else "0%")
                                                     for v in df["ge_reduction"]]))
    for target in LIBRARIES:  # standard-cell figures of the same MAC (docs/hwmodel.md, silicon flows)
        if f"{target}_um2" in df:
            columns.append((f"{target} area [µm²]", [cell(v, lambda v: f"{v:,.0f}") for v in df[f"{target}_um2"]]))
        if f"{target}_fmax_mhz" in df:
            columns.append((f"{target} Fmax [MHz]", [cell(v, lambda v: f"{v:,.0f}") for v in df[f"{target}_fmax_mhz"]]))
        if f"{target}_pj_per_mac" in df:  # hwmodel sweep --energy
            columns.append((f"{target} energy [pJ/MAC]", [cell(v, lambda v: f"{v:.3f}") for v in df[f"{target}_pj_per_mac"]]))
        if f"{target}_pj_per_inference" in df:
            columns.append((f"{target} energy per inference [nJ]",
                            [cell(v, lambda v: f"{v / 1000:,.1f}") for v in df[f"{target}_pj_per_inference"]]))
    if "array_ge" in df:  # hwmodel sweep --array RxC (docs/pe_array.md)
        array = df["array"].dropna().iloc[0] if df["array"].notna().any() else "array"
        columns.append((f"{array} array area [GE]", [cell(v, lambda v: f"{v:,.0f}") for v in df["array_ge"]]))
        columns.append(("Accumulator share of array", [cell(v, lambda v: f"{100 * v:.1f}%")
                                                       for v in df["array_accumulator_share"]]))
    for phase, words in PHASES:
        column = f"top1_{phase}"
        if column not in df:
            continue
        if f"{phase}_mean" in stat:
            texts = [_interval_text(df.at[i, column], stat.at[c, f"{phase}_low"], stat.at[c, f"{phase}_high"])
                     for i, c in zip(df.index, df["config"])]
        else:
            texts = [_interval_text(v, None, None) for v in df[column]]
        columns.append((f"{_sentence(words)} top-1 [%]" + (" (95% interval)" if f"{phase}_mean" in stat else ""), texts))
    if "stage2_seed_sd" in stat and stat["stage2_seed_sd"].notna().any():
        columns.append(("Seed sd [points]", [cell(stat.at[c, "stage2_seed_sd"], lambda v: f"{100 * v:.1f}") for c in df["config"]]))
    if "stage2_diff" in stat:
        def versus(config, key, text):
            if _is_reference(df.set_index("config").at[config, "acc"]):
                return "reference"
            return cell(stat.at[config, key], text)

        columns += [
            (f"Δ fine-tuned vs {REFERENCE_ACC} [points]", [versus(c, "stage2_diff", lambda v: f"{100 * v:+.1f}") for c in df["config"]]),
            (f"Same prediction as {REFERENCE_ACC} [%]", [versus(c, "stage2_agreement", lambda v: f"{100 * v:.1f}") for c in df["config"]]),
            ("Beyond noise? (p, Holm)", [versus(c, "stage2_p_holm", lambda v, c=c: (
                "yes" if stat.at[c, "stage2_beyond_noise"] else "no") + f" ({_p_text(v)})") for c in df["config"]]),
        ]
    if "swamp_rate" in df:
        columns.append(("Swamped adds [%]", [cell(v, _rate_text) for v in df["swamp_rate"]]))
    if _has(df, "top1_baseline"):
        constants.append(f"float model (no LBA): {100 * df['top1_baseline'].dropna().iloc[0]:.1f}% top-1")
    columns = [(title, values) for title, values in columns if any(v not in ("–", "") for v in values)]
    header = [title for title, _ in columns]
    rows = [[values[i] for _, values in columns] for i in range(len(df))]
    return header, rows, constants


# ------------------------------------------------------------------------------------------- plots
COLOURS = {8: "tab:red", 12: "tab:blue", 16: "tab:green", 32: "black"}


def _colour(bits) -> str:
    return COLOURS.get(int(bits), "tab:purple") if pd.notna(bits) else "grey"


def pareto_front(df: pd.DataFrame, cost: str = "ge", score: str = "top1_stage2") -> pd.Series:
    """True for rows that no other row beats: cost no higher and score no lower, one of them strictly."""
    valid = df[cost].notna() & df[score].notna()
    front = pd.Series(False, index=df.index)
    for i in df.index[valid]:
        others = df.loc[valid & (df.index != i)]
        dominated = ((others[cost] <= df.at[i, cost]) & (others[score] >= df.at[i, score])
                     & ((others[cost] < df.at[i, cost]) | (others[score] > df.at[i, score]))).any()
        front[i] = not dominated
    return front


#: How far below the best fine-tuned accuracy the accuracy axis reaches [points]; lower values sit on its floor.
OFF_SCALE_POINTS = 12
#: Where a label may go relative to its point, in typographic points, tried in this order (then farther out).
_LABEL_OFFSETS = ((7, 0, "left", "center"), (-7, 0, "right", "center"), (0, 8, "center", "bottom"),
                  (0, -8, "center", "top"), (6, 6, "left", "bottom"), (6, -6, "left", "top"),
                  (-6, 6, "right", "bottom"), (-6, -6, "right", "top"))


def place_labels(ax, labels: list[tuple[float, float, str, str]], obstacles: list[tuple[float, float]]) -> list:
    """Annotate each (x, y, text, colour) next to its point where it overlaps no label placed before, no
    marker in ``obstacles`` (data coordinates) and stays inside the axes; returns the annotations."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    marker = 5 / 72 * fig.dpi
    blocked = [matplotlib.transforms.Bbox.from_bounds(px - marker, py - marker, 2 * marker, 2 * marker)
               for px, py in ax.transData.transform(obstacles)] if obstacles else []
    placed, placed_boxes = [], []
    for x, y, text, colour in sorted(labels, key=lambda label: (label[0], -label[1])):
        best = None
        for scale in (1, 2, 3.5, 5):
            for dx, dy, ha, va in _LABEL_OFFSETS:
                annotation = ax.annotate(text, (x, y), xytext=(dx * scale, dy * scale), textcoords="offset points",
                                         ha=ha, va=va, fontsize=8, color=colour,
                                         arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.5} if scale > 1 else None)
                annotation.update_positions(renderer)
                box = matplotlib.text.Text.get_window_extent(annotation, renderer).padded(1)  # the text, not the line
                outside = not (inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1))
                # another label is unreadable, a marker under a label only untidy
                score = (1000 * outside + 100 * sum(box.overlaps(other) for other in placed_boxes)
                         + sum(box.overlaps(other) for other in blocked))
                if best is None or score < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (score, annotation, box)
                else:
                    annotation.remove()
                if score == 0:
                    break
            if best[0] == 0:
                break
        placed.append(best[1])
        placed_boxes.append(best[2])
    return placed


def plot_accuracy_vs_cost(df: pd.DataFrame, table: pd.DataFrame, out: Path, axis: CostAxis = GE_AXIS) -> str | None:
    """Zero-shot and fine-tuned accuracy of every row that has ``axis.column``, against that cost, with the
    Pareto front; None when no row has both."""
    cost = axis.column
    if not _has(df, cost, "top1_stage2"):
        return None
    df = df[df[cost].notna() & df["top1_stage2"].notna()]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    stat = table.set_index("config")
    reference = df[[_is_reference(acc) for acc in df["acc"]]]
    if len(reference) and "stage2_low" in stat:
        config = reference["config"].iloc[0]
        ax.axhspan(100 * stat.at[config, "stage2_low"], 100 * stat.at[config, "stage2_high"], color="0.9", zorder=0,
                   label=f"{REFERENCE_ACC} accumulator, fine-tuned: 95% interval")
    front = pareto_front(df, cost)
    ordered = df[front].sort_values(cost)
    # a staircase: the best fine-tuned accuracy available for at most a given area
    ax.step(ordered[cost], 100 * ordered["top1_stage2"], where="post", color="tab:orange", lw=2.5, alpha=0.8,
            zorder=1, label="Pareto front (fine-tuned)")
    # One failed configuration would squash every other point against the top: the axis spans at most
    # OFF_SCALE_POINTS below the best fine-tuned accuracy; points below sit on its floor, their value in the label.
    best = 100 * df["top1_stage2"].max()
    values = 100 * pd.concat([df["top1_stage2"], df.get("top1_zero_shot", pd.Series(dtype=float))]).dropna()
    floor = max(values.min(), best - OFF_SCALE_POINTS)
    shown = lambda value: max(value, floor)  # noqa: E731
    labels, markers = [], []
    for index, row in df.iterrows():
        colour = _colour(row.get("acc_bits"))
        zero_shot, tuned = 100 * row.get("top1_zero_shot", np.nan), 100 * row["top1_stage2"]
        off_scale = [f"{words} {value:.1f}%" for words, value in (("fine-tuned", tuned), ("zero-shot", zero_shot))
                     if pd.notna(value) and value < floor]
        if pd.notna(zero_shot):
            ax.annotate("", xy=(row[cost], shown(tuned)), xytext=(row[cost], shown(zero_shot)),
                        arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 0.8, "alpha": 0.5, "shrinkA": 3, "shrinkB": 4})
            ax.plot(row[cost], shown(zero_shot), "v" if zero_shot < floor else "o", mfc="white", mec=colour, ms=5, zorder=3)
        errors = None
        if "stage2_low" in stat and pd.notna(stat.at[row["config"], "stage2_low"]) and tuned >= floor:
            errors = [[tuned - 100 * stat.at[row["config"], "stage2_low"]], [100 * stat.at[row["config"], "stage2_high"] - tuned]]
        ax.errorbar(row[cost], shown(tuned), yerr=errors, fmt="v" if tuned < floor else "o", color=colour, ms=6,
                    capsize=2, lw=0.8, zorder=4, mec="tab:orange" if front[index] else colour,
                    mew=1.5 if front[index] else 1)
        text = standard_name(row["acc"]) + (f" ({', '.join(off_scale)})" if off_scale else "")
        labels.append((row[cost], shown(tuned), text, colour))
        markers += [(row[cost], shown(tuned))] + ([(row[cost], shown(zero_shot))] if pd.notna(zero_shot) else [])
    ax.set_ylim(floor - 0.6, best + 0.8 + (100 * stat["stage2_high"].max() - best if "stage2_high" in stat else 0))
    ax.plot([], [], "o", mfc="white", mec="grey", label="zero-shot")
    ax.plot([], [], "o", color="grey", label="fine-tuned" + (" (bar: 95% interval)" if "stage2_low" in stat else ""))
    for bits in sorted({int(b) for b in df["acc_bits"].dropna()}):
        ax.plot([], [], "s", color=_colour(bits), label=f"{bits}-bit accumulator")
    if axis.log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}" if str(int(value))[0] in "2468" else ""))
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlim(df[cost].min() / 1.08, df[cost].max() * 1.08)
    ax.set_xlabel(axis.label)
    ax.set_ylabel("top-1 accuracy [%]")
    ax.set_title(axis.title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.subplots_adjust(left=0.08, right=0.7, top=0.92, bottom=0.12)
    place_labels(ax, labels, markers)
    return _save(fig, out / axis.stem)


def plot_difference(df: pd.DataFrame, table: pd.DataFrame, out: Path) -> str | None:
    """Forest plot: each row's accuracy minus the fp32-accumulator row's, with its 95% interval."""
    if "stage2_diff" not in table or table["stage2_diff"].isna().all():
        return None
    compared = table[table["stage2_diff"].notna()]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(compared) + 1.4))
    names = {row["config"]: standard_name(row["acc"]) for _, row in df.iterrows()}
    for offset, (phase, words, marker) in zip((0.15, -0.15), ((p, w, m) for (p, w), m in zip(PHASES, ("o", "s")))):
        for position, (_, row) in enumerate(compared.iterrows()):
            diff = 100 * row[f"{phase}_diff"]
            errors = [[diff - 100 * row[f"{phase}_diff_low"]], [100 * row[f"{phase}_diff_high"] - diff]]
            beyond = bool(row[f"{phase}_beyond_noise"])
            colour = "tab:red" if beyond else ("tab:blue" if phase == "stage2" else "tab:grey")
            ax.errorbar(diff, position + offset, xerr=errors, fmt=marker, color=colour, mfc=colour if beyond else "white",
                        capsize=2, lw=1, label=words if position == 0 else None)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(compared)), [names[c] for c in compared["config"]])
    ax.invert_yaxis()
    ax.set_xlabel(f"accuracy minus {REFERENCE_ACC}-accumulator accuracy [points]")
    ax.set_title(f"Difference from {REFERENCE_ACC} (bars: unadjusted 95% intervals; red: beyond noise after Holm)",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return _save(fig, out / "difference_vs_fp32")


def block_excess(df: pd.DataFrame) -> pd.Series:
    """Per row, how much the per-block GE sum exceeds the flat synthesis's GE (a fraction; NaN without data)."""
    blocks = [c for c in df.columns if c.startswith("block_") and c.endswith("_ge")]
    if not blocks or "ge" not in df:
        return pd.Series(np.nan, index=df.index)
    total = df[blocks].sum(axis=1, min_count=1)
    return total / df["ge"] - 1


def block_note(df: pd.DataFrame) -> str:
    excess = block_excess(df).dropna()
    if excess.empty:
        return ""
    low, high = 100 * excess.min(), 100 * excess.max()
    span = f"{low:+.0f}%" if round(low) == round(high) else f"{low:+.0f}% to {high:+.0f}%"
    return (f"The per-block bars come from a hierarchical synthesis (each block a separate module, so Yosys cannot "
            f"share or simplify logic across blocks); their sums differ from the flat synthesis that the table and "
            f"the black marks show by {span}.")


def plot_area_blocks(df: pd.DataFrame, out: Path) -> str | None:
    blocks = [c for c in df.columns if c.startswith("block_") and c.endswith("_ge") and df[c].notna().any()]
    if not blocks:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 0.42 * len(df) + 1.6))
    names = _names(df)
    left = np.zeros(len(df))
    colours = plt.get_cmap("tab10").colors
    for number, column in enumerate(blocks):
        values = df[column].fillna(0.0).to_numpy()
        ax.barh(names, values, left=left, color=colours[number % 10], label=column[len("block_"):-len("_ge")].replace("_", " "))
        left += values
    if _has(df, "ge"):
        ax.plot(df["ge"], names, "|", color="black", ms=16, mew=2, label="flat synthesis (table)")
        for position, (total, excess) in enumerate(zip(left, block_excess(df))):
            if pd.notna(excess):
                ax.annotate(f"{100 * excess:+.0f}% vs flat", (total, position), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=7, color="0.3")
    ax.invert_yaxis()
    ax.set_xlabel("MAC area [NAND2 gate equivalents]")
    ax.set_title("MAC area per datapath block (hierarchical synthesis)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, out / "area_blocks")


def _save(fig, stem: Path) -> str:
    for suffix in (".png", ".svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix[1:], dpi=120, bbox_inches="tight",
                    metadata={"Date": None} if suffix == ".svg" else {})
        atomic_write_bytes(stem.with_suffix(suffix), buffer.getvalue())
    plt.close(fig)
    return stem.name


# ------------------------------------------------------------------------------------------- pages
PLOTS = ("accuracy_vs_ge", "difference_vs_fp32", "area_blocks", HEATMAP, *SILICON_PLOTS)


def plot_caption(name: str, df: pd.DataFrame, table: pd.DataFrame) -> str:
    if name in SILICON_PLOTS:
        return silicon_caption(silicon_axes(df)[name], df, "stage2_low" in table)
    if name == "accuracy_vs_ge":
        intervals = "stage2_low" in table
        return ("Accuracy against MAC area. Hollow: zero-shot (converted, not trained); filled: fine-tuned"
                + (", with its 95% interval over the test examples" if intervals else "")
                + "; each arrow links a configuration's two points. The orange staircase is the Pareto front of the "
                "fine-tuned points (ringed in orange)"
                + ("; the grey band the fp32 accumulator's interval." if intervals else "."))
    if name == "difference_vs_fp32":
        return ("Each row's accuracy minus that of the fp32-accumulator row on the same examples and seeds, with a "
                "95% interval (test examples and, with several seeds, seed-to-seed variation). Red: beyond noise "
                "after Holm's correction for the number of rows compared.")
    return block_note(df)


#: Plots that earlier versions of the report drew; a rebuild removes them.
RETIRED_PLOTS = ("accuracy_vs_bits",)


def _statistics_words(table: pd.DataFrame) -> str:
    if "stage2_test" not in table or table["stage2_test"].isna().all():
        return ("No per-example predictions in this folder (predictions.json): accuracies are shown without "
                "intervals or comparisons; rerun the sweep to get them.")
    test = table["stage2_test"].dropna().iloc[0]
    method = ("the exact McNemar test on the examples only one of the two models gets right" if test == "exact McNemar"
              else "a t-test whose variance combines example-to-example and seed-to-seed variation (two-way "
              "random effects over examples and seeds)")
    return (f"Intervals: 95% Wilson intervals over the test examples. Each row is compared with the "
            f"{REFERENCE_ACC}-accumulator row on the same examples and seeds by {method}; p-values are "
            f"Holm-adjusted over the rows compared, and a row is beyond noise when the adjusted p is below "
            f"{stats.ALPHA}. {_sentence(_noise_words(table))}.")


def _html_table(header: list[str], rows: list[list[str]], shaded: list[bool]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for title in header)
    body = "\n".join(f"<tr{' class=pareto' if shade else ''}>" + "".join(f"<td>{html.escape(value)}</td>" for value in row)
                     + "</tr>" for row, shade in zip(rows, shaded))
    return f"<table id=results><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def _footer(out: Path, notes: str) -> str:
    lines = [html.escape(notes)] if notes else []
    sweep = out / "sweep.json"
    if sweep.is_file():
        try:
            spec = json.loads(sweep.read_text(encoding="utf-8"))
        except ValueError:
            spec = {}
        provenance = spec.get("provenance")
        if isinstance(provenance, dict):
            lines.append(html.escape("Provenance: " + _flat_text(provenance)))
    links = [f'<a href="{name}">{name}</a>' for name in (RESULTS_FILE, STATS_FILE, PREDICTIONS_FILE, LAYER_EVENTS_FILE,
                                                           "results.md", "sweep.json", SCREENSHOT_FILE)
             if (out / name).is_file()]
    lines.append("Data: " + ", ".join(links))
    return "<footer>" + "<br>\n".join(lines) + "</footer>"


def _flat_text(value) -> str:
    """A nested dict as "key value, key: (key value, ...)" on one line."""
    if isinstance(value, dict):
        return ", ".join(f"{key} ({_flat_text(item)})" if isinstance(item, dict) else f"{key} {_flat_text(item)}"
                         for key, item in sorted(value.items()))
    return str(value)


def write_index_html(df: pd.DataFrame, table: pd.DataFrame, out: Path, title: str, notes: str, plots: list[str],
                     layer_events: pd.DataFrame | None = None, minilm: pd.DataFrame | None = None) -> Path:
    header, rows, constants = compact_table(df, table)
    shaded = pareto_front(df).tolist() if _has(df, "ge", "top1_stage2") else [False] * len(df)
    findings = [s for s in (differences_sentence(df, table, "zero_shot") if "zero_shot_p" in table else "",) if s]
    caption = (_sentence("; ".join(constants)) + ". " if constants else "") + (
        "Shaded rows are on the Pareto front (no other row has less area and higher fine-tuned accuracy). "
        if any(shaded) else "")
    figures = "\n".join(
        f'<figure{" class=main" if name == "accuracy_vs_ge" else " class=wide id=layer-events" if name == HEATMAP else ""}>'
        f'<img src="{name}.svg" alt="{name.replace("_", " ")}"><figcaption>'
        f'{html.escape(heatmap_caption(layer_events) if name == HEATMAP else plot_caption(name, df, table))}'
        '</figcaption></figure>'
        for name in plots)
    if HEATMAP not in plots and _has(df, "top1_stage2"):
        figures += f"\n<p class=method>{html.escape(heatmap_markdown(None).splitlines()[-1])}</p>"
    if _has(df, "top1_stage2"):  # why a silicon plot is missing
        figures += "".join(f"\n<p class=method>{html.escape(axis)}</p>" for name, axis in silicon_axes(df).items()
                           if isinstance(axis, str))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1340px; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.4em; margin-bottom: 0.3em; }}
p.headline {{ font-size: 1.25em; font-weight: 600; margin: 0.4em 0 0.8em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }}
th {{ background: #f0f0f0; white-space: normal; max-width: 9em; vertical-align: bottom; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.pareto td {{ background: #eef7ee; }}
p.caption, p.method {{ font-size: 0.85em; color: #444; max-width: 75em; }}
figure {{ display: inline-block; vertical-align: top; margin: 1em 1em 0 0; max-width: 640px; }}
figure.main {{ display: block; max-width: 1000px; }}
figure.wide {{ display: block; max-width: 1340px; }}
img {{ width: 100%; height: auto; }} figcaption {{ font-size: 0.8em; color: #444; }}
footer {{ margin-top: 2em; font-size: 0.8em; color: #666; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="headline" id="headline">{html.escape(headline(df, table))}</p>
{"".join(f"<p>{html.escape(sentence)}</p>" for sentence in findings)}
{_html_table(header, rows, shaded)}
<p class="caption">{html.escape(caption)}</p>
<p class="method">{html.escape(_statistics_words(table))}</p>
{"" if minilm is None else minilm_workload.html_section(minilm)}{figures}
{_footer(out, notes)}
</body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, page)
    return path


#: The README's generated section for the main job (``hwmodel report reports/default --readme README.md``).
README_MARKERS = ("<!-- sweep_results: generated from reports/default by `hwmodel report reports/default --readme "
                  "README.md` -->", "<!-- /sweep_results -->")


def summary_markdown(df: pd.DataFrame, table: pd.DataFrame, notes: str, minilm: pd.DataFrame | None = None) -> str:
    """Headline, comparison sentences, the compact table and the words on statistics: results.md without its
    title, and the README's section for the main job."""
    header, rows, constants = compact_table(df, table)
    parts = [f"**{headline(df, table)}**", ""]
    zero_shot_differences = differences_sentence(df, table, "zero_shot") if "zero_shot_p" in table else ""
    if zero_shot_differences:
        parts += [zero_shot_differences, ""]
    parts += [markdown_table(header, rows, "l" + "r" * (len(header) - 1)), ""]
    if constants:
        parts += [_sentence("; ".join(constants)) + ".", ""]
    parts += [_statistics_words(table), ""]
    if minilm is not None:
        parts += [minilm_workload.markdown_section(minilm)]
    note = block_note(df)
    if note:
        parts += [note, ""]
    if notes:
        parts += [notes, ""]
    return "\n".join(parts)


def write_markdown(df: pd.DataFrame, table: pd.DataFrame, out: Path, title: str, notes: str,
                   layer_events: pd.DataFrame | None = None, silicon: dict[str, CostAxis] | None = None,
                   minilm: pd.DataFrame | None = None) -> Path:
    """results.md: the summary (with the MiniLM table when the sweep had that workload), then (for a sweep with accuracy) the per-layer events' heat map and the
    accuracy-vs-silicon plots drawn (``silicon``), or why they are missing."""
    events = "\n" + heatmap_markdown(layer_events) if layer_events is not None or _has(df, "top1_stage2") else ""
    if _has(df, "top1_stage2"):
        events += "\n" + silicon_markdown(df, silicon or {}, "stage2_low" in table)
    return atomic_write_text(out / "results.md", f"# {title}\n\n{summary_markdown(df, table, notes, minilm)}{events}")


def readme_summary(out_dir: "str | Path") -> str:
    """The README's section for a sweep folder, computed from its committed results.csv (and
    predictions.json), with links to the folder's full table and plots."""
    out = Path(out_dir)
    df = read_results(out)
    table = statistics(df, read_predictions(out, df))
    plots = [f"![{name.replace('_', ' ')}]({out.as_posix()}/{name}.png)" for name in PLOTS
             if (out / f"{name}.png").is_file()]
    links = f"Full report: [{out.as_posix()}/index.html]({out.as_posix()}/index.html), " \
            f"table with every column: [{out.as_posix()}/results.csv]({out.as_posix()}/results.csv)."
    minilm = minilm_workload.read_table(out)
    return "\n\n".join([summary_markdown(df, table, _read_text(out / NOTES_FILE), minilm).strip(), _run_sentence(out),
                        links, *plots]).replace("\n\n\n", "\n\n")


def _run_sentence(out: Path) -> str:
    """When, where and how long the sweep behind a folder ran (from its sweep.json), or "" for older folders."""
    try:
        provenance = json.loads((out / "sweep.json").read_text(encoding="utf-8")).get("provenance") or {}
    except (OSError, ValueError):
        return ""
    if not isinstance(provenance, dict) or "finished_at" not in provenance:
        return ""
    cpus = f", {provenance['cpus']} CPUs" if provenance.get("cpus") else ""
    return (f"Run: `hwmodel sweep` (the `make sweep` default), finished {provenance['finished_at']} after "
            f"{provenance.get('minutes', '?')} min on {provenance.get('platform', 'an unnamed machine')}{cpus}; "
            f"tool versions and source hashes in [{out.as_posix()}/sweep.json]({out.as_posix()}/sweep.json).")


def update_readme(readme: "str | Path", out_dir: "str | Path") -> Path:
    """Replace the README's generated section (README_MARKERS) with :func:`readme_summary` of ``out_dir``."""
    return replace_marked_block(readme, *README_MARKERS, readme_summary(out_dir))


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
        notes = _read_text(out / NOTES_FILE)
    title = title or _read_text(out / TITLE_FILE) or _title(out, df)
    try:
        layer_events = read_layer_events(out)
    except LayerEventsError as error:
        raise ReportError(str(error)) from None
    if layer_events is not None:
        layer_events = layer_events[layer_events["config"].isin(df["config"])]
        layer_events = layer_events if len(layer_events) else None
    table = statistics(df, predictions)
    minilm = minilm_workload.read_table(out)
    if predictions is not None:
        atomic_write_text(out / STATS_FILE, table.to_csv(index=False, float_format="%.6g"))
    silicon = {name: axis for name, axis in silicon_axes(df).items()
               if isinstance(axis, CostAxis) and plot_accuracy_vs_cost(df, table, out, axis)}
    plots = [name for name in (plot_accuracy_vs_cost(df, table, out), plot_difference(df, table, out),
                               plot_area_blocks(df, out),
                               layer_events is not None and plot_layer_heatmap(layer_events, list(df["config"]), out))
             if name] + list(silicon)
    write_markdown(df, table, out, title, notes, layer_events, silicon, minilm)
    for name in set(PLOTS) - set(plots) | set(RETIRED_PLOTS):  # a plot the data no longer supports
        for suffix in (".png", ".svg"):
            (out / name).with_suffix(suffix).unlink(missing_ok=True)
    return write_index_html(df, table, out, title, notes, plots, layer_events, minilm)


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""


def _title(out: Path, df: pd.DataFrame) -> str:
    measured = [kind for kind, present in (("area", _has(df, "ge")), ("accuracy", _has(df, "top1_stage2"))) if present]
    return f"LBA sweep '{out.name}': {' and '.join(measured) or 'no results'}"


def write_results(df: pd.DataFrame, out_dir: "str | Path", title: str | None = None, notes: str = "",
                  predictions: dict | None = None) -> Path:
    """Write results.csv, notes.txt, title.txt and (given) predictions.json — see
    :func:`predictions_from_points` — then build the report from them."""
    out = Path(out_dir)
    atomic_write_text(out / RESULTS_FILE, df.to_csv(index=False))
    atomic_write_text(out / NOTES_FILE, notes)
    if title:
        atomic_write_text(out / TITLE_FILE, title + "\n")
    if predictions is not None:
        atomic_write_text(out / PREDICTIONS_FILE, _dump_predictions(_keep_earlier_rows(out, df, predictions)))
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
