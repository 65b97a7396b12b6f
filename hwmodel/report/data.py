"""The data of a sweep report: results.csv and predictions.json read and checked, the fp32 reference row of
each row, and the statistics table (intervals, paired comparisons with the reference, Holm's adjustment)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lba_core import ConfigError, FormatError, parse_acc

from ..synthesis import columns
from ..workloads.comparison import GROUP_COLUMNS, REFERENCE_ACC, is_reference
from . import stats


RESULTS_FILE = "results.csv"


PREDICTIONS_FILE = "predictions.json"


STATS_FILE = "stats.csv"


NOTES_FILE = "notes.txt"


TITLE_FILE = "title.txt"


SCREENSHOT_FILE = "screenshot.png"


#: Accuracy phases that get intervals and paired comparisons: (phase, words); their columns are top1_<phase>.
PHASES = columns.STAT_PHASES


#: results.csv's columns whose values must be numbers (declared in hwmodel/synthesis/columns.py).
NUMERIC_COLUMNS = tuple(name for name, column in columns.SCHEMA[columns.RESULTS].items() if column.numeric)


REQUIRED_COLUMNS = ("config", "acc")


def missing_column(header: Sequence[str]) -> tuple[str, str] | None:
    """(missing, present): the first column that a column of ``header`` comes with (its declared ``needs``,
    hwmodel.synthesis.columns: zero-shot and fine-tuned accuracy come together, a reduction with GE, a seed sd
    with its mean) and that is not there, and that column; None when the header is whole. A results.csv with one
    and not the other was edited (a column renamed or dropped), and a report built from it would drop a column
    and describe the rest wrongly."""
    present = set(header)
    for name in header:
        needed = columns.SCHEMA[columns.RESULTS][name].needs if name in columns.SCHEMA[columns.RESULTS] else ""
        if needed and needed not in present:
            return needed, name
    return None


class ReportError(Exception):
    """The report folder's data cannot make a report; the message says which file and what is wrong."""


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
    unknown = columns.undeclared(columns.RESULTS, header)
    if unknown:
        raise ReportError(f"{path}: column {unknown[0]} is not a column of a sweep's {RESULTS_FILE} (declared in "
                          "hwmodel/synthesis/columns.py); renamed or edited? nothing was rewritten")
    absent = missing_column(header)
    if absent is not None:
        raise ReportError(f"{path}: no column {absent[0]}, which a sweep writes with {absent[1]} (renamed or "
                          "removed?); nothing was rewritten")
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
            parse_acc(acc)
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


def dump_predictions(predictions: dict) -> str:
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


def has_values(df: pd.DataFrame, *columns: str) -> bool:
    return all(column in df and df[column].notna().any() for column in columns)


def reference_rows(df: pd.DataFrame) -> pd.Series:
    """Per row, the config of the fp32-accumulator row with the same inputs, rounding and chunking (or None)."""
    groups = [column for column in GROUP_COLUMNS if column in df]
    references = {}
    for _, row in df.iterrows():
        if is_reference(row["acc"]):
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


def read_optional_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""
