"""The report's sentences, computed from the data: the headline, the rows beyond noise, the statistics method."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


from ..workloads.comparison import acc_label
from . import stats
from .data import PHASES, REFERENCE_ACC, has_values, is_reference


def _percent_range(values: Sequence[float]) -> str:
    low, high = round(100 * min(values)), round(100 * max(values))
    return f"{low}%" if low == high else f"{low}–{high}%"


def accumulator_names(df: pd.DataFrame) -> list[str]:
    return [acc_label(acc) for acc in df["acc"]]


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
    non_reference = df[[not is_reference(acc) for acc in df["acc"]]]
    has_area = has_values(df, "ge_reduction")
    reference_name = acc_label(df["baseline_acc"].dropna().iloc[0]) if has_values(df, "baseline_acc") else REFERENCE_ACC
    widths = sorted(non_reference["acc_bits"].dropna().unique()) if "acc_bits" in df else []

    def area_words(rows: pd.DataFrame) -> str:
        if not has_area or rows["ge_reduction"].isna().all():
            return ""
        return f"{_percent_range(rows['ge_reduction'].dropna())} less MAC area than {reference_name}"

    if not has_values(df, "top1_stage2"):
        if not has_area:
            return f"{len(df)} configurations; neither area nor accuracy was measured."
        parts = [f"{int(w)}-bit: {_percent_range(non_reference[non_reference['acc_bits'] == w]['ge_reduction'].dropna())}"
                 for w in sorted(widths, reverse=True) if non_reference[non_reference["acc_bits"] == w]["ge_reduction"].notna().any()]
        return f"MAC area relative to {reference_name} accumulators: {', '.join(parts)} less (area only; no accuracy measured)."
    if "stage2_beyond_noise" not in table or table["stage2_beyond_noise"].isna().all():
        narrowest = non_reference[non_reference["acc_bits"] == widths[0]] if widths else non_reference
        accuracy = _percent_range(narrowest["top1_stage2"].dropna()) if narrowest["top1_stage2"].notna().any() else "–"
        reference = df[[is_reference(acc) for acc in df["acc"]]]["top1_stage2"].dropna()
        versus = f" vs {100 * reference.iloc[0]:.1f}% with {REFERENCE_ACC}" if len(reference) else ""
        area = area_words(narrowest)
        return (f"{int(widths[0]) if widths else '?'}-bit accumulators ({', '.join(accumulator_names(narrowest))}): "
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
        sentences.append(f"{int(chosen)}-bit accumulators ({', '.join(accumulator_names(rows))}): {area + '; ' if area else ''}"
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
    items = [f"{acc_label(accs[row['config']])} ({100 * row[f'{phase}_diff']:+.1f} points, "
             f"{_p_clause(row[f'{phase}_p_holm'])})" for _, row in beyond.iterrows()]
    return f"{capitalized(words)} accuracy beyond noise of {REFERENCE_ACC}: {', '.join(items)}."


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _p_clause(p: float) -> str:
    text = p_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def capitalized(text: str) -> str:
    """First letter upper case, the rest as written (str.capitalize would lower-case 'LBA' and 'Holm')."""
    return text[:1].upper() + text[1:]


def rate_text(rate: float) -> str:
    percent = 100 * rate
    if 0 < percent < 0.01:
        return "< 0.01"
    return f"{percent:.0f}" if percent >= 10 else f"{percent:.1f}" if percent >= 1 else f"{percent:.2g}"


def statistics_words(table: pd.DataFrame) -> str:
    if "stage2_low" not in table or table["stage2_low"].isna().all():
        return ("No per-example predictions in this folder (predictions.json): accuracies are shown without "
                "intervals or comparisons; rerun the sweep to get them.")
    if "stage2_test" not in table or table["stage2_test"].isna().all():
        return (f"Intervals: 95% Wilson intervals over the test examples. No row is compared with an "
                f"{REFERENCE_ACC}-accumulator row: this sweep has none with the same inputs, so there are no "
                "paired differences or p-values.")
    test = table["stage2_test"].dropna().iloc[0]
    method = ("the exact McNemar test on the examples only one of the two models gets right" if test == "exact McNemar"
              else "a t-test whose variance combines example-to-example and seed-to-seed variation (two-way "
              "random effects over examples and seeds)")
    return (f"Intervals: 95% Wilson intervals over the test examples. Each row is compared with the "
            f"{REFERENCE_ACC}-accumulator row on the same examples and seeds by {method}; p-values are "
            f"Holm-adjusted over the rows compared, and a row is beyond noise when the adjusted p is below "
            f"{stats.ALPHA}. {capitalized(_noise_words(table))}.")
