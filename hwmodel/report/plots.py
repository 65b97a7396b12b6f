"""The report's plots (accuracy vs cost with the Pareto front, difference vs fp32, area per block) and captions."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd


from ..synthesis import columns
from ..workloads.comparison import acc_label
from .cost_plots import CostAxis, GE_AXIS, SILICON_PLOTS, silicon_axes, silicon_caption
from .data import PHASES, REFERENCE_ACC, has_values, is_reference
from .figures import save_figure, subplots
from .heatmap import HEATMAP
from .prose import accumulator_names


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
    if not has_values(df, cost, "top1_stage2"):
        return None
    df = df[df[cost].notna() & df["top1_stage2"].notna()]
    fig, ax = subplots(figsize=(9, 4.8))
    stat = table.set_index("config")
    reference = df[[is_reference(acc) for acc in df["acc"]]]
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
        text = acc_label(row["acc"]) + (f" ({', '.join(off_scale)})" if off_scale else "")
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
    return save_figure(fig, out / axis.stem)


def plot_difference(df: pd.DataFrame, table: pd.DataFrame, out: Path) -> str | None:
    """Forest plot: each row's accuracy minus the fp32-accumulator row's, with its 95% interval."""
    if "stage2_diff" not in table or table["stage2_diff"].isna().all():
        return None
    compared = table[table["stage2_diff"].notna()]
    fig, ax = subplots(figsize=(6.4, 0.45 * len(compared) + 1.4))
    names = {row["config"]: acc_label(row["acc"]) for _, row in df.iterrows()}
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
    return save_figure(fig, out / "difference_vs_fp32")


def block_excess(df: pd.DataFrame) -> pd.Series:
    """Per row, how much the per-block GE sum exceeds the flat synthesis's GE (a fraction; NaN without data)."""
    blocks = columns.names(columns.RESULTS, family="block", present=df.columns)
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
    blocks = [c for c in columns.names(columns.RESULTS, family="block", present=df.columns) if df[c].notna().any()]
    if not blocks:
        return None
    fig, ax = subplots(figsize=(7.2, 0.42 * len(df) + 1.6))
    names = accumulator_names(df)
    left = np.zeros(len(df))
    colours = matplotlib.colormaps["tab10"].colors
    for number, column in enumerate(blocks):
        values = df[column].fillna(0.0).to_numpy()
        ax.barh(names, values, left=left, color=colours[number % 10], label=columns.column(columns.RESULTS, column).label)
        left += values
    if has_values(df, "ge"):
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
    return save_figure(fig, out / "area_blocks")


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
