"""index.html: headline, table, captions and figures of a sweep folder in one page."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from lba_core.fileio import atomic_write_text

from ..workloads.base import ReportSection
from .cost_plots import silicon_axes
from .data import PREDICTIONS_FILE, RESULTS_FILE, SCREENSHOT_FILE, STATS_FILE, has_values
from .heatmap import HEATMAP, LAYER_EVENTS_FILE, heatmap_caption, heatmap_markdown
from .per_workload import HEADLINES_INTRO, headlines, metric_caption, plot_stem
from .plots import pareto_front, plot_caption
from .prose import capitalized, differences_sentence, statistics_words
from .tables import compact_table


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


def _headline_list(items) -> str:
    if len(items) < 2:
        return ""
    return (f"<p>{html.escape(HEADLINES_INTRO)}</p>\n<ul class=workloads>"
            + "".join(f"<li>{html.escape(item.sentence)}</li>" for item in items) + "</ul>")


def _section_html(section: ReportSection, df: pd.DataFrame, out: Path) -> str:
    """A workload's section, then its metric-vs-cost plot (when drawn) with the caption."""
    if section.metric is None or not (out / f"{plot_stem(section.metric)}.svg").is_file():
        return section.html
    stem = plot_stem(section.metric)
    return (section.html + f'<figure class=main><img src="{stem}.svg" alt="{stem.replace("_", " ")}"><figcaption>'
            f"{html.escape(metric_caption(section.metric, df))}</figcaption></figure>\n")


def write_index_html(df: pd.DataFrame, table: pd.DataFrame, out: Path, title: str, notes: str, plots: list[str],
                     layer_events: pd.DataFrame | None = None, sections: list[ReportSection] = ()) -> Path:
    header, rows, constants = compact_table(df, table)
    items = headlines(df, table, list(sections))
    shaded = pareto_front(df).tolist() if has_values(df, "ge", "top1_stage2") else [False] * len(df)
    findings = [s for s in (differences_sentence(df, table, "zero_shot") if "zero_shot_p" in table else "",) if s]
    caption = (capitalized("; ".join(constants)) + ". " if constants else "") + (
        "Shaded rows are on the Pareto front (no other row has less area and higher fine-tuned accuracy). "
        if any(shaded) else "")
    figures = "\n".join(
        f'<figure{" class=main" if name == "accuracy_vs_ge" else " class=wide id=layer-events" if name == HEATMAP else ""}>'
        f'<img src="{name}.svg" alt="{name.replace("_", " ")}"><figcaption>'
        f'{html.escape(heatmap_caption(layer_events) if name == HEATMAP else plot_caption(name, df, table))}'
        '</figcaption></figure>'
        for name in plots)
    if HEATMAP not in plots and has_values(df, "top1_stage2"):
        figures += f"\n<p class=method>{html.escape(heatmap_markdown(None).splitlines()[-1])}</p>"
    if has_values(df, "top1_stage2"):  # why a silicon plot is missing
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
td:nth-child(2) {{ white-space: normal; max-width: 22em; }}  /* long '/'-separated lists (the LM's per-layer margins) wrap at their <wbr> */
tr.pareto td {{ background: #eef7ee; }}
p.caption, p.method {{ font-size: 0.85em; color: #444; max-width: 75em; }}
figure {{ display: inline-block; vertical-align: top; margin: 1em 1em 0 0; max-width: 640px; }}
figure.main {{ display: block; max-width: 1000px; }}
figure.wide {{ display: block; max-width: 1340px; }}
img {{ width: 100%; height: auto; }} figcaption {{ font-size: 0.8em; color: #444; }}
footer {{ margin-top: 2em; font-size: 0.8em; color: #666; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="headline" id="headline">{html.escape(items[0].sentence)}</p>
{_headline_list(items)}
{"".join(f"<p>{html.escape(sentence)}</p>" for sentence in findings)}
{_html_table(header, rows, shaded)}
<p class="caption">{html.escape(caption)}</p>
<p class="method">{html.escape(statistics_words(table))}</p>
{"".join(_section_html(section, df, out) for section in sections)}{figures}
{_footer(out, notes)}
</body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, page)
    return path
