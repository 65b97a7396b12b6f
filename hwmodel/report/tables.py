"""The compact results table people read: the columns with units, constant columns as sentences."""

from __future__ import annotations

import pandas as pd


from ..synthesis import columns as schema
from ..synthesis.flows.libraries import LIBRARIES
from ..workloads.comparison import acc_label
from .data import PHASES, REFERENCE_ACC, has_values, is_reference
from .prose import accumulator_names, p_text, rate_text


def _interval_text(mean, low, high) -> str:
    if pd.isna(mean):
        return "–"
    if pd.isna(low):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ({100 * low:.1f}–{100 * high:.1f})"


def _heading(name: str, label: str | None = None, unit: str | None = None) -> str:
    """A results.csv column's heading with its unit, from hwmodel.synthesis.columns."""
    return schema.heading(schema.RESULTS, name, label, unit)


def compact_table(df: pd.DataFrame, table: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, constants): the columns people read, with units; columns that do not vary (inputs,
    rounding, chunking, the float baseline) become sentences in ``constants``; empty columns are left out."""
    reference_name = acc_label(df["baseline_acc"].dropna().iloc[0]) if has_values(df, "baseline_acc") else REFERENCE_ACC
    stat = table.set_index("config")
    columns: list[tuple[str, list[str]]] = [("Accumulator", accumulator_names(df))]
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
        columns.append((_heading("acc_bits", unit=""), [cell(v, lambda v: f"{int(v)}") for v in df["acc_bits"]]))
    if "ge" in df:  # a fused row's FDPA unit is no MAC: its area.csv area_status says so (synthesis.area.fused_row)
        status = df["area_status"] if "area_status" in df else pd.Series(None, index=df.index, dtype=object)
        columns.append((_heading("ge"), ["not synthesized (FDPA unit)" if pd.isna(v) and isinstance(note, str)
                                          else cell(v, lambda v: f"{v:,.0f}") for v, note in zip(df["ge"], status)]))
    if "ge_reduction" in df:
        columns.append((_heading("ge_reduction", f"Area vs {reference_name}", unit=""), [cell(v, lambda v: f"{-100 * v:+.0f}%" if v else "0%")
                                                     for v in df["ge_reduction"]]))
    for target in LIBRARIES:  # standard-cell figures of the same MAC (docs/hwmodel.md, silicon flows)
        for figure, text, unit in (("um2", lambda v: f"{v:,.0f}", None), ("fmax_mhz", lambda v: f"{v:,.0f}", None),
                                   ("pj_per_mac", lambda v: f"{v:.3f}", None),  # hwmodel sweep --energy
                                   ("pj_per_inference", lambda v: f"{v / 1000:,.1f}", "nJ")):
            name = schema.target_column(target, figure)
            if name in df:
                columns.append((_heading(name, unit=unit), [cell(v, text) for v in df[name]]))
    if "array_ge" in df:  # hwmodel sweep --array RxC (docs/pe_array.md)
        array = df["array"].dropna().iloc[0] if df["array"].notna().any() else "array"
        columns.append((_heading("array_ge", f"{array} array area"), [cell(v, lambda v: f"{v:,.0f}") for v in df["array_ge"]]))
        columns.append((_heading("array_accumulator_share", unit=""), [cell(v, lambda v: f"{100 * v:.1f}%")
                                                       for v in df["array_accumulator_share"]]))
    for phase, _ in PHASES:
        column = f"top1_{phase}"
        if column not in df:
            continue
        if f"{phase}_mean" in stat:
            texts = [_interval_text(df.at[i, column], stat.at[c, f"{phase}_low"], stat.at[c, f"{phase}_high"])
                     for i, c in zip(df.index, df["config"])]
        else:
            texts = [_interval_text(v, None, None) for v in df[column]]
        columns.append((_heading(column) + (" (95% interval)" if f"{phase}_mean" in stat else ""), texts))
    if "stage2_seed_sd" in stat and stat["stage2_seed_sd"].notna().any():
        columns.append(("Seed sd [points]", [cell(stat.at[c, "stage2_seed_sd"], lambda v: f"{100 * v:.1f}") for c in df["config"]]))
    if "stage2_diff" in stat:
        def versus(config, key, text):
            if is_reference(df.set_index("config").at[config, "acc"]):
                return "reference"
            return cell(stat.at[config, key], text)

        columns += [
            (f"Δ fine-tuned vs {REFERENCE_ACC} [points]", [versus(c, "stage2_diff", lambda v: f"{100 * v:+.1f}") for c in df["config"]]),
            (f"Same prediction as {REFERENCE_ACC} [%]", [versus(c, "stage2_agreement", lambda v: f"{100 * v:.1f}") for c in df["config"]]),
            ("Beyond noise? (p, Holm)", [versus(c, "stage2_p_holm", lambda v, c=c: (
                "yes" if stat.at[c, "stage2_beyond_noise"] else "no") + f" ({p_text(v)})") for c in df["config"]]),
        ]
    if "swamp_rate" in df:
        columns.append((_heading("swamp_rate", unit="%"), [cell(v, rate_text) for v in df["swamp_rate"]]))
    if has_values(df, "top1_baseline"):
        constants.append(f"float model (no LBA): {100 * df['top1_baseline'].dropna().iloc[0]:.1f}% top-1")
    columns = [(title, values) for title, values in columns if any(v not in ("–", "") for v in values)]
    header = [title for title, _ in columns]
    rows = [[values[i] for _, values in columns] for i in range(len(df))]
    return header, rows, constants
