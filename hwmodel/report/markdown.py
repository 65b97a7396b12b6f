"""results.md and the README's generated section of a sweep folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lba_core.fileio import atomic_write_text, markdown_table, replace_marked_block

from ..workloads import registry
from ..workloads.base import ReportSection
from .cost_plots import CostAxis, silicon_markdown
from .data import NOTES_FILE, has_values, read_optional_text, read_predictions, read_results, statistics
from .heatmap import heatmap_markdown
from .per_workload import HEADLINES_INTRO, headlines, metric_caption, plot_stem
from .plots import PLOTS, block_note
from .prose import capitalized, differences_sentence, statistics_words
from .tables import compact_table


#: The README's generated section for the main job (``hwmodel report reports/default --readme README.md``).
README_MARKERS = ("<!-- sweep_results: generated from reports/default by `hwmodel report reports/default --readme "
                  "README.md` -->", "<!-- /sweep_results -->")


def headline_markdown(df: pd.DataFrame, table: pd.DataFrame, sections: list[ReportSection]) -> list[str]:
    """The lead headline in bold, then (with several workloads) every workload's headline as a list."""
    items = headlines(df, table, list(sections))
    parts = [f"**{items[0].sentence}**", ""]
    if len(items) > 1:
        parts += [HEADLINES_INTRO, "", *(f"- {item.sentence}" for item in items), ""]
    return parts


def section_markdown(section: ReportSection, df: pd.DataFrame, out: Path | None, prefix: str = "") -> str:
    """A workload's section, then its metric-vs-cost plot (when drawn in ``out``) with the caption."""
    if section.metric is None or out is None or not (out / f"{plot_stem(section.metric)}.png").is_file():
        return section.markdown
    stem = plot_stem(section.metric)
    return (section.markdown + f"\n![{stem.replace('_', ' ')}]({prefix}{stem}.png)\n\n"
            + metric_caption(section.metric, df) + "\n")


def summary_markdown(df: pd.DataFrame, table: pd.DataFrame, notes: str, sections: list[ReportSection] = (),
                     out: Path | None = None, prefix: str = "") -> str:
    """Headlines, comparison sentences, the compact table and the words on statistics: results.md without its
    title, and the README's section for the main job; then the workloads' ``sections`` (with their plots in
    ``out``, linked as ``prefix`` + file name)."""
    header, rows, constants = compact_table(df, table)
    parts = headline_markdown(df, table, sections)
    main = [section.title for section in sections if section.in_results]
    if main and any(section.metric is not None for section in sections):  # several workloads: name the main table's
        parts += [f"### {main[0]} (results.csv)", ""]
    zero_shot_differences = differences_sentence(df, table, "zero_shot") if "zero_shot_p" in table else ""
    if zero_shot_differences:
        parts += [zero_shot_differences, ""]
    parts += [markdown_table(header, rows, "l" + "r" * (len(header) - 1)), ""]
    if constants:
        parts += [capitalized("; ".join(constants)) + ".", ""]
    parts += [statistics_words(table), ""]
    parts += [section_markdown(section, df, out, prefix) for section in sections]
    note = block_note(df)
    if note:
        parts += [note, ""]
    if notes:
        parts += [notes, ""]
    return "\n".join(parts)


def write_markdown(df: pd.DataFrame, table: pd.DataFrame, out: Path, title: str, notes: str,
                   layer_events: pd.DataFrame | None = None, silicon: dict[str, CostAxis] | None = None,
                   sections: list[ReportSection] = ()) -> Path:
    """results.md: the summary (with the workloads' sections, e.g. the MiniLM table), then (for a sweep with accuracy) the per-layer events' heat map and the
    accuracy-vs-silicon plots drawn (``silicon``), or why they are missing."""
    events = "\n" + heatmap_markdown(layer_events) if layer_events is not None or has_values(df, "top1_stage2") else ""
    if has_values(df, "top1_stage2"):
        events += "\n" + silicon_markdown(df, silicon or {}, "stage2_low" in table)
    return atomic_write_text(out / "results.md", f"# {title}\n\n{summary_markdown(df, table, notes, sections, out)}{events}")


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
    sections = registry.report_sections(out)
    summary = summary_markdown(df, table, read_optional_text(out / NOTES_FILE), sections, out, f"{out.as_posix()}/")
    return "\n\n".join([summary.strip(), _run_sentence(out),
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
