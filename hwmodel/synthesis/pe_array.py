"""Area and timing of a PE array (rtl.PEArray), with the accumulator's share of it (docs/pe_array.md).

Every gate of the array lies in one of its three tiles (the feeder, a processing element, an output
column), and the tiles meet only through registers or port-to-port wires. So each distinct tile is
synthesized once, flattened for its totals and depth and hierarchically for its per-block breakdown, and the
array is the tiles times their counts: a replicated PE layout, as an accelerator places it, without
constant propagation across tile boundaries. That keeps a 16 x 16 array as cheap to cost as a 2 x 2.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lba_core import MacConfig
from rtl import module_blocks
from rtl.export import write_top
from rtl.pe_array import (
    ACCUMULATOR_BLOCKS,
    ARRAY_BLOCKS,
    TILE_NAMES,
    array_block_of,
    array_latency,
    array_tile,
    buffer_depth,
    check_array,
    tile_counts,
)

from ..execution.cache import ResultCache, content_key
from ..execution.jobs import Executor, run_cached
from .mac_synth import generator_fingerprint
from .synth import GLUE_BLOCK, Design, synthesize_designs


@dataclass(frozen=True)
class TileExportJob:
    """The Verilog of one tile of an array (flattened or hierarchical)."""

    config_json: str
    rows: int
    cols: int
    depth: int
    tile: str
    hierarchical: bool
    fingerprint: str

    @property
    def key(self) -> str:
        return content_key(
            "rtl.pe_array tile", self.config_json, str((self.rows, self.cols, self.depth)), self.tile,
            str(self.hierarchical), self.fingerprint,
        )

    def run(self) -> str:
        cfg = MacConfig.from_dict(json.loads(self.config_json))
        component = array_tile(self.tile, self.rows, self.cols, cfg, self.depth)
        with tempfile.TemporaryDirectory(prefix="lba-array-") as folder:
            return write_top(component, self.tile, Path(folder), self.hierarchical).read_text()


def asic_array(
    flat: dict[str, str],
    counts: dict[str, int],
    libraries: list[str],
    *,
    cache: ResultCache,
    workers: int,
    progress: bool,
    timeout_s: float | None,
    executor: Executor | None = None,
) -> dict[str, dict[str, Any]]:
    """Per standard-cell library (hwmodel.synthesis.flows, area recipe): the array's µm² and leakage, the tiles'
    mapped figures times their counts. No OpenSTA timing here: its Verilog reader rejects the mapped tiles'
    netlists (a concatenation on the left of an assign), so timing stays the generic logic depth."""
    from .flows.liberty import MappingJob, area_report
    from .flows.libraries import library_data
    from .flows.targets import HEADLINE_RECIPE

    jobs = [MappingJob(library, HEADLINE_RECIPE, tile, flat[tile], False, timeout_s)
            for library in libraries for tile in TILE_NAMES]
    mapped = run_cached(jobs, cache, workers, progress, desc="liberty", executor=executor)
    reports: dict[str, dict[str, Any]] = {}
    for job, result in zip(jobs, mapped):
        area = area_report(result, job.library, HEADLINE_RECIPE, None, library_data(job.library, cache))
        report = reports.setdefault(job.library, {"library": job.library, "recipe": HEADLINE_RECIPE,
                                                  "corner": area["corner"], "tiles": {}})
        report["tiles"][job.top] = {
            "count": counts[job.top],
            **{key: area[key] for key in ("area_um2", "sequential_area_um2", "cells", "flops", "leakage_nw")},
        }
    for report in reports.values():
        tiles = report["tiles"].values()
        report["area_um2"] = round(sum(tile["area_um2"] * tile["count"] for tile in tiles), 4)
        report["leakage_nw"] = round(sum(tile["leakage_nw"] * tile["count"] for tile in tiles), 4)
    return reports


def synthesize_array(
    rows: int,
    cols: int,
    cfg: MacConfig,
    *,
    depth: int | None = None,
    libraries: tuple[str, ...] = (),
    cache: ResultCache | None = None,
    workers: int = 1,
    progress: bool = False,
    timeout_s: float | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """The ``hwmodel synth --array RxC --json`` object: area (GE), timing (logic depth), per-tile and
    per-block figures across the array, and the accumulator's share of the array's area; with ``libraries``
    (hwmodel.synthesis.flows ASIC targets) also µm² and leakage in each library under ``silicon``."""
    depth = buffer_depth(rows, depth)
    check_array(rows, cols, cfg, "weight-stationary", depth)
    cache = cache if cache is not None else ResultCache(None)
    config_json = json.dumps(cfg.to_dict(), sort_keys=True)
    fingerprint = generator_fingerprint()
    exports = [
        TileExportJob(config_json, rows, cols, depth, tile, hierarchical, fingerprint)
        for tile in TILE_NAMES
        for hierarchical in (False, True)
    ]
    texts = iter(run_cached(exports, cache, workers, progress, desc="verilog", executor=executor))
    flat, hierarchical = {}, {}
    for tile in TILE_NAMES:
        flat[tile], hierarchical[tile] = next(texts), next(texts)
    designs = [
        Design(tile, flat[tile], hierarchical[tile],
               module_blocks(array_tile(tile, rows, cols, cfg, depth), tile, array_block_of))
        for tile in TILE_NAMES
    ]
    reports = synthesize_designs(designs, blocks=True, cache=cache, workers=workers, progress=progress,
                                 timeout_s=timeout_s, executor=executor)
    counts = tile_counts(rows, cols)
    tiles: dict[str, Any] = {}
    blocks: dict[str, dict[str, float]] = {}
    for tile, report in zip(TILE_NAMES, reports):
        tiles[tile] = {
            "count": counts[tile],
            **{key: report[key] for key in ("gates", "flops", "ge", "transistors", "depth", "blocks")},
        }
        for block, figures in report["blocks"].items():
            total = blocks.setdefault(block, {"gates": 0, "ge": 0.0})
            total["gates"] += figures["gates"] * counts[tile]
            total["ge"] = round(total["ge"] + figures["ge"] * counts[tile], 3)
    order = (*ARRAY_BLOCKS, GLUE_BLOCK)
    blocks = {block: blocks[block] for block in sorted(blocks, key=order.index)}
    hierarchical_ge = round(sum(figures["ge"] for figures in blocks.values()), 3)
    for figures in blocks.values():
        figures["share"] = figures["ge"] / hierarchical_ge
    accumulator_ge = round(sum(blocks[block]["ge"] for block in ACCUMULATOR_BLOCKS if block in blocks), 3)

    def total(key: str):
        return sum(tiles[tile][key] * counts[tile] for tile in TILE_NAMES)

    ge = round(total("ge"), 3)
    critical = max(TILE_NAMES, key=lambda tile: tiles[tile]["depth"])
    silicon = asic_array(flat, counts, list(libraries), cache=cache, workers=workers, progress=progress,
                         timeout_s=timeout_s, executor=executor) if libraries else {}
    timing = {"depth": tiles[critical]["depth"], "critical_tile": critical, "unit": "gates"}
    return {
        "config": {**cfg.to_dict(), "name": cfg.name},
        "array": {
            "rows": rows,
            "cols": cols,
            "depth": depth,
            "dataflow": "weight-stationary",
            "chunk_size": rows,
            "pes": rows * cols,
            "latency": array_latency(rows, cols),
        },
        "area": {"ge": ge, "ge_per_pe": round(ge / (rows * cols), 3), "hierarchical_ge": hierarchical_ge,
                 **{f"{library}_um2": report["area_um2"] for library, report in silicon.items()}},
        "ge": ge,
        "gates": total("gates"),
        "flops": total("flops"),
        "transistors": total("transistors"),
        "timing": timing,
        "accumulator_blocks": [block for block in ACCUMULATOR_BLOCKS if block in blocks],
        "accumulator_ge": accumulator_ge,
        "accumulator_share": accumulator_ge / hierarchical_ge,
        "blocks": blocks,
        "tiles": tiles,
        "silicon": silicon,
    }


def add_array_columns(df, configs, rows: int, cols: int, *, workers: int, cache: ResultCache | None,
                      executor: Executor | None = None):
    """The sweep table with each configuration's ``rows x cols`` array beside it: ``array``, ``array_ge``,
    ``array_ge_per_pe``, ``array_accumulator_share``, ``array_depth`` (configurations have chunk_size = rows)."""
    figures = []
    for cfg in configs:
        result = synthesize_array(rows, cols, cfg, cache=cache, workers=workers, progress=True, executor=executor)
        figures.append({
            "array": f"{rows}x{cols}",
            "array_ge": result["area"]["ge"],
            "array_ge_per_pe": result["area"]["ge_per_pe"],
            "array_accumulator_share": result["accumulator_share"],
            "array_depth": result["timing"]["depth"],
        })
    df = df.copy()
    for column in figures[0]:
        df[column] = [row[column] for row in figures]
    return df


def format_array_report(result: dict[str, Any]) -> str:
    array, area = result["array"], result["area"]
    lines = [
        f"{array['rows']}x{array['cols']} {array['dataflow']} PE array, configuration {result['config']['name']}, "
        f"chunk {array['chunk_size']}, output buffer {array['depth']} rows per column",
        f"area {area['ge']:.1f} GE ({area['ge_per_pe']:.1f} GE per PE), {result['gates']} generic cells "
        f"({result['flops']} flip-flops), {result['transistors']} transistors",
        f"timing: depth {result['timing']['depth']} gates (critical tile: {result['timing']['critical_tile']})",
        f"accumulator share {100 * result['accumulator_share']:.1f}% ({result['accumulator_ge']:.1f} GE of "
        f"{area['hierarchical_ge']:.1f} GE, hierarchical): {', '.join(result['accumulator_blocks'])}",
    ]
    for library, report in result["silicon"].items():
        lines.append(f"{library} ({report['corner']}): {report['area_um2']:,.1f} µm², leakage "
                     f"{report['leakage_nw']:,.1f} nW")
    for block, figures in result["blocks"].items():
        lines.append(f"  block {block:<20} {figures['gates']:>8} cells {figures['ge']:>11.1f} GE "
                     f"{100 * figures['share']:>6.1f}%")
    for tile, figures in result["tiles"].items():
        lines.append(f"  tile {tile:<7} x{figures['count']:<4} {figures['ge']:>10.1f} GE each, depth {figures['depth']}")
    return "\n".join(lines)
