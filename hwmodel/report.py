"""Sweep reports: results.csv/md, plots (PNG and SVG) and an index.html, all rebuildable from the CSV.

Column conventions of results.csv (one row per MAC configuration):
config, input, acc, rounding, chunk, acc_bits — the configuration;
gates, ge, transistors, depth, luts, ge_reduction — synthesis (ge_reduction is 1 - GE / GE of the baseline
accumulator with the same inputs); block_<name>_ge — per-block GE;
top1_baseline, top1_zero_shot, top1_stage1, top1_stage2 — accuracies in [0, 1];
overflow_rate, underflow_rate, swamp_rate — events per accumulation step in the fine-tuned model's forward pass.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "lba-report"  # stable SVG ids: the same data gives the same file
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lba_core.fileio import atomic_write, atomic_write_text, markdown_table  # noqa: E402

ACCURACY_COLUMNS = ("top1_baseline", "top1_zero_shot", "top1_stage1", "top1_stage2")
TABLE_COLUMNS = (
    "config",
    "acc",
    "acc_bits",
    "gates",
    "ge",
    "luts",
    "ge_reduction",
    *ACCURACY_COLUMNS,
    "overflow_rate",
    "underflow_rate",
    "swamp_rate",
)
PLOTS = ("accuracy_vs_ge", "area_blocks", "accuracy_vs_bits")
NOTES_FILE = "notes.txt"


def _has(df: pd.DataFrame, *columns: str) -> bool:
    return all(column in df and df[column].notna().any() for column in columns)


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


def _format_cell(column: str, value) -> str:
    if pd.isna(value):
        return "–"
    if column.startswith("top1") or column == "ge_reduction":
        return f"{100 * value:.1f}%"
    if column.endswith("_rate"):
        return f"{value:.2e}"
    if column == "ge":
        return f"{value:,.0f}"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,d}"
    return str(value)


def results_table(df: pd.DataFrame) -> str:
    columns = [c for c in TABLE_COLUMNS if c in df.columns]
    return markdown_table(columns, ([_format_cell(c, row[c]) for c in columns] for _, row in df.iterrows()))


def plot_accuracy_vs_ge(df: pd.DataFrame, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if _has(df, "ge", "top1_stage2"):
        front = pareto_front(df)
        for label, column, marker in (("zero-shot", "top1_zero_shot", "x"), ("fine-tuned", "top1_stage2", "o")):
            ax.scatter(df["ge"], 100 * df[column], marker=marker, label=label)
        ordered = df[front].sort_values("ge")
        ax.plot(ordered["ge"], 100 * ordered["top1_stage2"], "--", color="tab:red", label="Pareto front (fine-tuned)")
        _annotate(ax, df, "ge", "top1_stage2", (4, 4))
        if df["top1_baseline"].notna().any():
            ax.axhline(100 * df["top1_baseline"].dropna().iloc[0], color="grey", lw=0.8, label="float baseline (FP32 accumulation)")
    _finish_accuracy_plot(fig, ax, "MAC area [NAND2 gate equivalents]", "Accuracy vs MAC area", out / "accuracy_vs_ge")


def plot_area_blocks(df: pd.DataFrame, out: Path) -> None:
    block_columns = [c for c in df.columns if c.startswith("block_") and c.endswith("_ge")]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottom = pd.Series(0.0, index=df.index)
    for column in block_columns:
        values = df[column].fillna(0.0)
        ax.bar(df["config"], values, bottom=bottom, label=column[len("block_") : -len("_ge")])
        bottom += values
    ax.set_ylabel("area [NAND2 GE]")
    ax.set_title("MAC area per datapath block")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    if block_columns:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, out / "area_blocks")


def plot_accuracy_vs_bits(df: pd.DataFrame, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ordered = df.sort_values("acc_bits")
    for label, column, marker in (("zero-shot", "top1_zero_shot", "x"), ("fine-tuned (2 stages)", "top1_stage2", "o")):
        if column in ordered and ordered[column].notna().any():
            ax.plot(ordered["acc_bits"], 100 * ordered[column], marker=marker, linestyle="none", label=label)
    if "top1_stage2" in ordered:
        _annotate(ax, ordered, "acc_bits", "top1_stage2", (4, -10))
    _finish_accuracy_plot(fig, ax, "accumulator width [bits]", "Accuracy vs accumulator width", out / "accuracy_vs_bits")


def _annotate(ax, df: pd.DataFrame, x: str, y: str, offset: tuple[int, int]) -> None:
    """Label points by accumulator; points that coincide share one label ("e5m6 / e4m7") instead of overprinting."""
    labelled = df[df[x].notna() & df[y].notna()].sort_values(x)
    for index, ((x_value, y_value), group) in enumerate(labelled.groupby([x, y], sort=True)):
        label = " / ".join(group["acc"])
        stagger = 0 if index % 2 == 0 else -14  # neighbours along x alternate above and below their point
        ax.annotate(label, (x_value, 100 * y_value), textcoords="offset points", xytext=(offset[0], offset[1] + stagger), fontsize=8)


def _finish_accuracy_plot(fig, ax, xlabel: str, title: str, stem: Path) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy [%]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax)
    _save(fig, stem)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no accuracy measured in this sweep", ha="center", va="center", transform=ax.transAxes, color="grey")


def _save(fig, stem: Path) -> None:
    fig.tight_layout()
    for suffix in ("png", "svg"):
        atomic_write(stem.with_suffix(f".{suffix}"), lambda stream: fig.savefig(stream, format=suffix, dpi=120))
    plt.close(fig)


def write_index_html(df: pd.DataFrame, out: Path, title: str, notes: str = "") -> Path:
    columns = [c for c in TABLE_COLUMNS if c in df.columns]
    header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    front = pareto_front(df) if _has(df, "ge", "top1_stage2") else pd.Series(False, index=df.index)
    rows = "\n".join(
        f"<tr{' class=pareto' if front[i] else ''}>" + "".join(f"<td>{html.escape(_format_cell(c, df.at[i, c]))}</td>" for c in columns) + "</tr>"
        for i in df.index
    )
    plots = "\n".join(f'<figure><img src="{name}.svg" alt="{name}"><figcaption>{name}</figcaption></figure>' for name in PLOTS)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }} tr.pareto td {{ background: #eef7ee; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 640px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(notes)}</p>
<p>Rows on the Pareto front (smallest area for their fine-tuned accuracy) are shaded. Data: <a href="results.csv">results.csv</a>.</p>
<table><tr>{header}</tr>
{rows}
</table>
{plots}
</body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, page)
    return path


def build_report(out_dir: "str | Path", title: str | None = None, notes: str | None = None) -> Path:
    """(Re)build results.md, the plots and index.html from ``out_dir/results.csv``; returns the HTML path.

    ``notes`` (what the run was, how long it took) default to those the sweep left in ``notes.txt``.
    """
    out = Path(out_dir)
    csv = out / "results.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"no results.csv in {out}: run `hwmodel sweep` first")
    if notes is None:
        notes = (out / NOTES_FILE).read_text() if (out / NOTES_FILE).is_file() else ""
    df = pd.read_csv(csv)
    title = title or f"LBA sweep '{out.name}': area and accuracy"
    atomic_write_text(out / "results.md", f"# {title}\n\n{notes}\n\n{results_table(df)}\n")
    plot_accuracy_vs_ge(df, out)
    plot_area_blocks(df, out)
    plot_accuracy_vs_bits(df, out)
    return write_index_html(df, out, title, notes)


def write_results(df: pd.DataFrame, out_dir: "str | Path", title: str | None = None, notes: str = "") -> Path:
    out = Path(out_dir)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    atomic_write_text(out / NOTES_FILE, notes)
    return build_report(out, title, notes)
