"""Per-layer accumulator events of a sweep: ``layer_events.csv`` and the report's heat map (layers x
accumulators) with the layers of the largest K marked.

``layer_events.csv`` has one row per configuration and LBA layer that ran: config, acc, layer, type, ``k``
(products per dot product), ``macs_per_example`` (k x dot products of one example's forward), seeds, and
``steps``, ``overflow``, ``underflow``, ``swamp``: counts of the fine-tuned model's final evaluation summed
over the seeds, with their rates (events per accumulation step, as in lba_train.events). Summed counts over
the layers give the whole-model rates of results.csv (every seed evaluates the same examples, so the
steps per seed are equal and the rate of the sums is the mean of the seeds' rates).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lba_core.fileio import atomic_write_text

from ..synthesis import columns
from ..workloads.comparison import acc_label
from .figures import save_figure, subplots

LAYER_EVENTS_FILE = "layer_events.csv"
HEATMAP = "layer_events"
EVENTS = columns.EVENTS
COUNTS = ("steps", *EVENTS)
#: layer_events.csv's columns, as declared in hwmodel/synthesis/columns.py.
COLUMNS = tuple(columns.SCHEMA[columns.LAYER_EVENTS])
#: Marks a layer of the largest K in the heat map's row labels.
LARGEST_K_MARK = "\u2605"


class LayerEventsError(Exception):
    """layer_events.csv cannot be read; the message names the file and what is wrong."""


def layer_event_rows(config: str, acc: str, records: Sequence[dict]) -> list[dict]:
    """The rows of one configuration from its seeds' accuracy-point records (their ``layer_events``), counts
    summed over the seeds, layers in the model's order; layers that ran no accumulation step are left out."""
    rows: dict[str, dict] = {}
    for record in records:
        for layer in record.get("layer_events") or []:
            row = rows.setdefault(layer["layer"], {"config": config, "acc": acc, "layer": layer["layer"],
                                                   "type": layer.get("type"), "k": layer.get("k"),
                                                   "macs_per_example": layer.get("macs_per_example"), "seeds": 0,
                                                   **dict.fromkeys(COUNTS, 0)})
            row["seeds"] += 1
            for count in COUNTS:
                row[count] += int(layer.get(count, 0))
    for row in rows.values():
        for event in EVENTS:
            row[f"{event}_rate"] = row[event] / row["steps"] if row["steps"] else 0.0
    return [row for row in rows.values() if row["steps"]]


def layer_event_table(rows: Sequence[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def write_layer_events(out: Path, current: pd.DataFrame, configs: Sequence[str]) -> pd.DataFrame:
    """Write ``out``/layer_events.csv: this run's rows, plus the earlier file's rows of the configurations the
    folder's table still holds (``configs``) that this run did not measure (a partial run keeps them)."""
    path = out / LAYER_EVENTS_FILE
    table = current
    try:
        earlier = read_layer_events(out)
    except LayerEventsError:
        earlier = None
    if earlier is not None:
        kept = earlier[earlier["config"].isin(configs) & ~earlier["config"].isin(current["config"])]
        table = pd.concat([kept, current], ignore_index=True) if len(kept) else current
    order = {config: index for index, config in enumerate(configs)}
    table = table[table["config"].isin(order)]
    table = table.iloc[np.argsort([order[config] for config in table["config"]], kind="stable")]
    atomic_write_text(path, columns.to_csv(columns.LAYER_EVENTS, table, float_format="%.6g"))
    return table


def read_layer_events(out: Path) -> pd.DataFrame | None:
    """The folder's layer_events.csv, or None when it has none (a sweep of an earlier version)."""
    path = out / LAYER_EVENTS_FILE
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise LayerEventsError(f"{path}: cannot be read ({error})") from None
    missing = [column for column in COLUMNS if column not in table]
    if missing:
        raise LayerEventsError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def largest_k_layers(table: pd.DataFrame) -> list[str]:
    """The layers whose K is the largest of the model (several when they tie), in the model's order."""
    ks = table.dropna(subset=["k"]).groupby("layer", sort=False)["k"].max()
    return [] if ks.empty else [layer for layer, k in ks.items() if k == ks.max()]


def _informative_second_event(table: pd.DataFrame) -> str | None:
    """Underflow or overflow, whichever happens more often somewhere (None when neither ever happens)."""
    peaks = {event: table[f"{event}_rate"].max() for event in ("underflow", "overflow")}
    event = max(peaks, key=peaks.get)
    return event if peaks[event] > 0 else None


def _column_labels(table: pd.DataFrame, configs: Sequence[str]) -> list[str]:
    acc_of = dict(zip(table["config"], table["acc"]))
    accs = [acc_of[config] for config in configs]
    return accs if len(set(accs)) == len(accs) else list(configs)


def _cell_text(rate: float) -> str:
    if rate == 0:
        return "0"
    percent = 100 * rate
    return "<0.01" if percent < 0.01 else f"{percent:.2g}"


def plot_layer_heatmap(table: pd.DataFrame, configs: Sequence[str], out: Path) -> str | None:
    """``out``/layer_events.png and .svg: swamp rate (and the more frequent of underflow and overflow) per
    layer (rows, the model's order) and accumulator (columns, the table's order), in percent of the layer's
    accumulation steps; row labels give K, and mark the largest-K layers. None when there is nothing to draw."""
    configs = [config for config in configs if config in set(table["config"])]
    if not configs:
        return None
    layers = list(dict.fromkeys(table["layer"]))
    ks = table.groupby("layer", sort=False)["k"].max()
    largest = set(largest_k_layers(table))
    row_labels = [f"{LARGEST_K_MARK + ' ' if layer in largest else ''}{layer}  K={int(ks[layer])}"
                  if ks[layer] == ks[layer] else layer for layer in layers]
    events = ["swamp", *filter(None, [_informative_second_event(table)])]
    columns = [acc_label(label) for label in _column_labels(table, configs)]
    indexed = table.set_index(["layer", "config"])
    figure, axes = subplots(1, len(events), figsize=(1.8 + (0.48 * len(configs) + 1.0) * len(events),
                                                         1.3 + 0.4 * len(layers)), squeeze=False)
    for ax, event in zip(axes[0], events):
        grid = np.full((len(layers), len(configs)), np.nan)
        for i, layer in enumerate(layers):
            for j, config in enumerate(configs):
                if (layer, config) in indexed.index:
                    grid[i, j] = indexed.loc[(layer, config), f"{event}_rate"]
        image = ax.imshow(100 * grid, cmap="viridis_r" if event != "swamp" else "magma_r", aspect="auto",
                          vmin=0, vmax=max(100 * np.nanmax(grid), 1e-9))
        for (i, j), rate in np.ndenumerate(grid):
            if rate == rate:
                dark = rate > 0.55 * np.nanmax(grid) > 0
                ax.text(j, i, _cell_text(rate), ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_xticks(range(len(configs)), columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), row_labels if ax is axes[0][0] else [""] * len(layers), fontsize=8)
        for label, layer in zip(ax.get_yticklabels(), layers):
            if layer in largest:
                label.set_fontweight("bold")
        ax.set_title(f"{event} [% of accumulation steps]", fontsize=9)
        figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    figure.tight_layout()
    return save_figure(figure, out / HEATMAP)


def heatmap_caption(table: pd.DataFrame) -> str:
    """What the heat map shows, with the largest-K layers and the highest swamp rate, from the data."""
    largest = largest_k_layers(table)
    ks = table.groupby("layer", sort=False)["k"].max()
    macs = table.groupby("layer", sort=False)["macs_per_example"].max()
    parts = [f"Accumulator events per layer (rows, in the model's order) and accumulator (columns) in the fine-tuned "
             f"model's final evaluation, in percent of the layer's accumulation steps (summed over "
             f"{int(table['seeds'].max())} seed(s)); each label gives K, the products one dot product sums."]
    if largest:
        names = ", ".join(f"{layer} ({int(macs[layer]):,} MACs per example)" for layer in largest)
        parts.append(f"{LARGEST_K_MARK} (bold): the largest K = {int(ks[largest[0]]):,}: {names}.")
    worst = table.loc[table["swamp_rate"].idxmax()]
    if worst["swamp_rate"] > 0:
        parts.append(f"Highest swamp rate: {100 * worst['swamp_rate']:.3g}% ({acc_label(worst['acc'])}, {worst['layer']}"
                     + (f", K = {int(worst['k'])}" if worst["k"] == worst["k"] else "") + ").")
    second = _informative_second_event(table)
    if second:
        parts.append(f"Right: {second}, the more frequent of underflow and overflow.")
    return " ".join(parts)


def heatmap_markdown(table: pd.DataFrame | None) -> str:
    """results.md's section on per-layer events ("" for a folder without any)."""
    if table is None:
        return ("## Per-layer accumulator events\n\nThis folder has no per-layer event data "
                f"({LAYER_EVENTS_FILE}): it was written by an earlier version of `hwmodel sweep`; rerun the sweep "
                "to get the heat map.\n")
    return (f"## Per-layer accumulator events\n\n![per-layer accumulator events]({HEATMAP}.png)\n\n"
            f"{heatmap_caption(table)} Data: {LAYER_EVENTS_FILE}.\n")
