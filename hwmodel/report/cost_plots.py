"""The cost axes of the sweep report's accuracy plots: NAND2 gate equivalents (Yosys generic gates), and,
from the standard-cell targets, MAC area in µm² and energy per MAC in pJ (hwmodel.synthesis.silicon's
``<library>_um2`` / ``<library>_pj_per_mac`` columns).

A silicon plot needs its column in results.csv: an old sweep folder, or a sweep without a standard-cell
target or without ``--energy``, gets a sentence saying why the plot is not there instead (results.md and
index.html alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..synthesis import columns
from ..synthesis.flows.libraries import LIBRARIES

ENERGY_PLOT = "accuracy_vs_energy"
AREA_PLOT = "accuracy_vs_um2"
SILICON_PLOTS = (ENERGY_PLOT, AREA_PLOT)


@dataclass(frozen=True)
class CostAxis:
    """What an accuracy-vs-cost plot puts on its x axis, and the file stem it is saved under."""

    stem: str
    column: str
    label: str
    title: str
    log: bool = False


GE_AXIS = CostAxis("accuracy_vs_ge", "ge", "MAC area [NAND2 gate equivalents, log scale]",
                   "Accuracy vs MAC area: zero-shot → fine-tuned", log=True)


def _present(df: pd.DataFrame, column: str) -> bool:
    return column in df and pd.to_numeric(df[column], errors="coerce").notna().any()


def _library(df: pd.DataFrame, figure: str) -> str | None:
    """The first standard-cell library (sky130 before nangate45) with data in its ``figure`` column."""
    return next((library for library in LIBRARIES if _present(df, columns.target_column(library, figure))), None)


def silicon_axes(df: pd.DataFrame) -> dict[str, CostAxis | str]:
    """Per silicon plot: its axis, or the sentence saying why the sweep cannot draw it."""
    axes: dict[str, CostAxis | str] = {}
    library = _library(df, "pj_per_mac")
    axes[ENERGY_PLOT] = (
        CostAxis(ENERGY_PLOT, columns.target_column(library, "pj_per_mac"),
                 f"{library} energy per MAC [pJ, real operands]",
                 f"Accuracy vs {library} energy per MAC: zero-shot → fine-tuned")
        if library else
        "No accuracy-vs-energy plot: this sweep measured no energy per MAC (results.csv has no "
        "<library>_pj_per_mac column); rerun it with `hwmodel sweep --energy` and a standard-cell target "
        "(sky130, the default, or nangate45).")
    library = _library(df, "um2")
    axes[AREA_PLOT] = (
        CostAxis(AREA_PLOT, columns.target_column(library, "um2"), f"{library} MAC area [µm², log scale]",
                 f"Accuracy vs {library} MAC area: zero-shot → fine-tuned", log=True)
        if library else
        "No accuracy-vs-µm² plot: this sweep mapped no MAC to standard cells (results.csv has no "
        "<library>_um2 column); rerun it with a standard-cell target, e.g. `--target generic,sky130` (the default).")
    return axes


def energy_check_words(df: pd.DataFrame, library: str) -> str:
    """The energy model's check over the plotted rows, in words ("" when the folder does not hold it)."""
    column = columns.target_column(library, "energy_vs_opensta")
    if not _present(df, column):
        return ""
    ratios = pd.to_numeric(df[column], errors="coerce").dropna()
    return (f" Energy model check: under the same global activity as OpenSTA's report_power, the estimator's "
            f"energy is {ratios.min():.3f}–{ratios.max():.3f} × OpenSTA's over these {len(ratios)} MACs "
            f"(worst case {100 * (ratios - 1).abs().max():.1f}% apart).")


def silicon_caption(axis: CostAxis, df: pd.DataFrame, intervals: bool) -> str:
    library = columns.column(columns.RESULTS, axis.column).target
    if axis.stem == ENERGY_PLOT:
        cost = (f"the {library} energy per MAC (gate-level switching of the mapped MAC on real operands, each MAC "
                "at its own minimum clock period; zero-delay simulation, so a lower bound on dynamic energy)")
    else:
        cost = f"the MAC's area in {library} standard cells (area-oriented mapping)"
    words = (f"Accuracy against {cost}. Hollow: zero-shot; filled: fine-tuned"
             + (", with its 95% interval" if intervals else "")
             + ". The orange staircase is the Pareto front of the fine-tuned points.")
    return words + (energy_check_words(df, library) if axis.stem == ENERGY_PLOT else "")


def silicon_markdown(df: pd.DataFrame, plotted: dict[str, CostAxis], intervals: bool) -> str:
    """results.md's section: each silicon plot with its caption, or why it is missing."""
    parts = ["## Accuracy vs silicon cost", ""]
    for name, axis in silicon_axes(df).items():
        if name in plotted:
            parts += [f"![{name.replace('_', ' ')}]({name}.png)", "", silicon_caption(plotted[name], df, intervals), ""]
        else:
            parts += [axis if isinstance(axis, str) else f"No {name.replace('_', ' ')} plot: no row has both "
                      f"{axis.column} and a fine-tuned accuracy.", ""]
    return "\n".join(parts)
