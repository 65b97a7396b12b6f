"""Synthesis of a design with Yosys into cost figures: generic gates, GE, transistors, depth, FPGA resources.

Flows (one Yosys run each, cached by content, run in parallel over processes):

- ``generic``: ``synth -flatten``, flip-flops legalized to plain D flip-flops (their enable and reset become
  gates), ``abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX``; cell counts, GE from the cell-area table
  (hwmodel/synthesis/data/cell_area.csv), transistors from ``stat -tech cmos`` and logic depth from ``ltp -noff``.
- ``blocks``: the same mapping without flattening, on the hierarchical Verilog; cells per block, each module
  filed under the block the design's map names (rtl.module_blocks), the flat ``generic`` run stays canonical.
- ``ice40``, ``xilinx``, ``xilinx_nodsp``, ``ecp5``: the vendor ``synth_*`` scripts; LUT, carry, FF, DSP counts.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rtl import BLOCK_NAMES
from rtl.yosys import YosysError, run_yosys, yosys_version

from ..execution.cache import ResultCache, content_key
from ..execution.jobs import Executor, run_cached

#: Targets a user can ask for; ``generic`` always runs, it provides the gate-level figures.
TARGETS = ("generic", "ice40", "xilinx", "ecp5")
#: Yosys flows behind each FPGA target (Xilinx is mapped with and without DSP blocks).
FPGA_FLOWS = {"ice40": ("ice40",), "xilinx": ("xilinx", "xilinx_nodsp"), "ecp5": ("ecp5",)}

GENERIC_GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"
# Plain D flip-flops (async reset/set variants allowed): enables and sync resets become generic gates.
LEGAL_FLOPS = "-cell $_DFF_P_ 01 -cell $_DFF_PN0_ 01 -cell $_DFF_PN1_ 01"
VERILOG_NAME = "design.v"

#: Cells of the top module or of modules outside every named block.
GLUE_BLOCK = "glue"

#: FPGA resource classes by cell-name prefix, per flow.
FPGA_RESOURCES = {
    "ice40": {"lut": ("SB_LUT4",), "carry": ("SB_CARRY",), "ff": ("SB_DFF",), "dsp": ("SB_MAC16",)},
    "xilinx": {"lut": ("LUT",), "carry": ("CARRY4", "CARRY8"), "ff": ("FD",), "dsp": ("DSP48",)},
    "ecp5": {"lut": ("LUT4",), "carry": ("CCU2",), "ff": ("TRELLIS_FF",), "dsp": ("MULT18X18", "ALU54")},
}
FPGA_RESOURCES["xilinx_nodsp"] = FPGA_RESOURCES["xilinx"]

_LTP_LINE = re.compile(r"Longest topological path in (\S+) \(length=(\d+)\)")


class SynthesisError(RuntimeError):
    """Yosys produced something this module cannot interpret (an unknown cell, a missing report)."""


@dataclass(frozen=True)
class Design:
    """A top module to synthesize: its flattened-or-not Verilog, and optionally a hierarchical version
    (sub-blocks kept as separate modules) with ``module_blocks``, the block of every module in it
    (None for the top and for composites that are no block, see rtl.module_blocks), for the per-block
    breakdown."""

    top: str
    verilog: str
    hierarchical_verilog: str | None = None
    module_blocks: Mapping[str, str | None] | None = None

    def __post_init__(self) -> None:
        if self.hierarchical_verilog is not None and self.module_blocks is None:
            raise ValueError(f"design {self.top}: a hierarchical version needs its module_blocks map")


@dataclass(frozen=True)
class SynthJob:
    """One Yosys run: a flow applied to one top module of one Verilog text."""

    flow: str
    top: str
    verilog: str
    timeout_s: float | None = field(default=None, compare=False)

    @property
    def script(self) -> str:
        return flow_script(self.flow, self.top)

    @property
    def key(self) -> str:
        # The blocks flow's result changed shape (per-module cells, grouped by the caller): its tag keeps
        # results of the old shape out, without touching the other flows' cached results.
        tag = ("per-module cells",) if self.flow == "blocks" else ()
        return content_key(self.verilog, yosys_version(), self.script, *tag)

    def run(self) -> dict[str, Any]:
        """Run Yosys in a fresh folder and parse its reports; the folder is kept (with its log) on failure."""
        work_dir = Path(tempfile.mkdtemp(prefix=f"lba-synth-{self.top}-{self.flow}-"))
        run_yosys(self.script, {VERILOG_NAME: self.verilog}, work_dir, self.timeout_s)
        try:
            if self.flow == "generic":
                result = parse_generic(work_dir, self.top)
            elif self.flow == "blocks":
                result = parse_blocks(work_dir, self.top)
            else:
                result = parse_fpga(work_dir, self.top, self.flow)
        except SynthesisError as error:
            raise SynthesisError(f"{error} (Yosys outputs kept in {work_dir})") from None
        shutil.rmtree(work_dir, ignore_errors=True)
        return result


# --------------------------------------------------------------------------------------------- cell areas
def cell_areas_ge() -> dict[str, float]:
    """Area in NAND2 gate equivalents of every Yosys generic cell the generic flow can produce."""
    text = resources.files("hwmodel.synthesis").joinpath("data/cell_area.csv").read_text()
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    areas = {row["yosys_cell"]: float(row["area_um2"]) for row in rows}
    nand2 = areas["$_NAND_"]
    return {cell: area / nand2 for cell, area in areas.items()}


def short_cell_name(yosys_cell: str) -> str:
    """``$_AND_`` -> ``AND``, ``$_DFF_P_`` -> ``DFF_P``: the names used in reports."""
    return yosys_cell.removeprefix("$_").removesuffix("_")


def gate_equivalents(cells: dict[str, int], areas: dict[str, float]) -> float:
    unknown = sorted(set(cells) - set(areas))
    if unknown:
        raise SynthesisError(f"no area for generic cells {unknown} in hwmodel/synthesis/data/cell_area.csv")
    return round(sum(count * areas[cell] for cell, count in cells.items()), 3)


# --------------------------------------------------------------------------------------------- scripts
def flow_script(flow: str, top: str) -> str:
    """The Yosys script of a flow; part of the cache key, so any change here invalidates old results."""
    generic_mapping = [f"dfflegalize {LEGAL_FLOPS}", f"abc -g {GENERIC_GATES}", "opt_clean", "delete t:$scopeinfo"]
    if flow == "generic":
        body = [f"synth -flatten -top {top}", *generic_mapping, "tee -q -o stat.json stat -json",
                "tee -q -o cmos.json stat -json -tech cmos", "tee -q -o ltp.txt ltp -noff"]
    elif flow == "blocks":
        body = [f"synth -top {top}", *generic_mapping, "tee -q -o stat.json stat -json"]
    elif flow in FPGA_RESOURCES:
        vendor = flow.removesuffix("_nodsp")
        # ice40 and ecp5 flatten by default; Xilinx must be told, and its I/O and clock buffers are no logic.
        options = " -flatten -noiopad -noclkbuf" if vendor == "xilinx" else ""
        options += " -nodsp" if flow.endswith("_nodsp") else ""
        body = [f"synth_{vendor} -top {top}{options}", "delete t:$scopeinfo", "tee -q -o stat.json stat -json"]
    else:
        raise ValueError(f"unknown synthesis flow {flow!r}")
    return "\n".join([f"read_verilog {VERILOG_NAME}", *body]) + "\n"


# --------------------------------------------------------------------------------------------- parsing
def _module_cells(stat: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {name.removeprefix("\\"): dict(module["num_cells_by_type"]) for name, module in stat["modules"].items()}


def _top_cells(stat: dict[str, Any], top: str) -> dict[str, int]:
    modules = _module_cells(stat)
    if top not in modules:
        raise SynthesisError(f"Yosys statistics have no module {top!r} (modules: {sorted(modules)})")
    return modules[top]


def parse_generic(work_dir: Path, top: str) -> dict[str, Any]:
    """Raw facts of a generic run (cells by Yosys type, transistors, depth); :func:`generic_report`
    derives the rest, so a changed cell-area table applies to cached results too."""
    cells = _top_cells(json.loads((work_dir / "stat.json").read_text()), top)
    cmos = json.loads((work_dir / "cmos.json").read_text())["modules"]["\\" + top]
    transistors = str(cmos.get("estimated_num_transistors", ""))
    if not transistors.isdigit():
        raise SynthesisError(f"Yosys could not count the transistors of {top} ({transistors!r}): unknown cells")
    depths = {name: int(length) for name, length in _LTP_LINE.findall((work_dir / "ltp.txt").read_text())}
    if top not in depths:
        raise SynthesisError(f"Yosys ltp reported no longest path for {top}")
    return {"cells": cells, "transistors": int(transistors), "depth": depths[top]}


def generic_report(raw: dict[str, Any], areas: dict[str, float]) -> dict[str, Any]:
    cells = raw["cells"]
    return {
        "gates": sum(cells.values()),
        "flops": sum(count for cell, count in cells.items() if cell.startswith("$_DFF")),
        "ge": gate_equivalents(cells, areas),
        "transistors": raw["transistors"],
        "depth": raw["depth"],
        "cells": {short_cell_name(cell): count for cell, count in sorted(cells.items())},
    }


def parse_blocks(work_dir: Path, top: str) -> dict[str, dict[str, dict[str, int]]]:
    """``{"modules": {module: {cell type: count}}}`` of a hierarchical run: each module's own generic cells
    and its instances of other modules (by module name); :func:`block_breakdown` groups them by block."""
    modules = _module_cells(json.loads((work_dir / "stat.json").read_text()))
    if top not in modules:
        raise SynthesisError(f"Yosys statistics have no module {top!r} (modules: {sorted(modules)})")
    return {"modules": modules}


def block_breakdown(
    modules: Mapping[str, Mapping[str, int]], top: str, module_blocks: Mapping[str, str | None]
) -> dict[str, dict[str, int]]:
    """Generic cells (by Yosys type) per block, each instance counted, in datapath order.

    Every module of the hierarchy must be in ``module_blocks``: a module the design's map does not name
    raises SynthesisError instead of disappearing into another block. A block of the map appears even when
    it synthesized to no cells; cells of the top and of composites (no block) go to ``glue``.
    """
    unknown = sorted(set(modules) - set(module_blocks))
    if unknown:
        raise SynthesisError(f"modules {unknown} of {top} are not in the design's block map")
    totals: dict[str, dict[str, int]] = {block: {} for block in module_blocks.values() if block is not None}
    totals[GLUE_BLOCK] = {}

    def visit(module: str, multiplicity: int) -> None:
        own = totals[module_blocks[module] or GLUE_BLOCK]
        for cell_type, count in modules[module].items():
            if cell_type in modules:
                visit(cell_type, multiplicity * count)
            else:
                own[cell_type] = own.get(cell_type, 0) + multiplicity * count

    visit(top, 1)
    if not totals[GLUE_BLOCK]:
        del totals[GLUE_BLOCK]
    order = {name: index for index, name in enumerate((*BLOCK_NAMES, GLUE_BLOCK))}
    return {block: totals[block] for block in sorted(totals, key=lambda block: order.get(block, len(order)))}


def blocks_report(raw: dict[str, dict[str, int]], areas: dict[str, float]) -> dict[str, dict[str, float]]:
    return {block: {"gates": sum(cells.values()), "ge": gate_equivalents(cells, areas)} for block, cells in raw.items()}


def parse_fpga(work_dir: Path, top: str, flow: str) -> dict[str, Any]:
    cells = _top_cells(json.loads((work_dir / "stat.json").read_text()), top)
    summary: dict[str, Any] = {resource: 0 for resource in FPGA_RESOURCES[flow]}
    for cell, count in cells.items():
        for resource, prefixes in FPGA_RESOURCES[flow].items():
            if cell.startswith(prefixes):
                summary[resource] += count
                break
    summary["cells"] = dict(sorted(cells.items()))
    return summary


# --------------------------------------------------------------------------------------------- running
def design_jobs(design: Design, targets: Iterable[str], blocks: bool, timeout_s: float | None) -> list[SynthJob]:
    """Jobs for one design: generic always, the block breakdown if asked (and possible), then FPGA flows."""
    jobs = [SynthJob("generic", design.top, design.verilog, timeout_s)]
    if blocks and design.hierarchical_verilog is not None:
        jobs.append(SynthJob("blocks", design.top, design.hierarchical_verilog, timeout_s))
    for target in targets:
        jobs.extend(SynthJob(flow, design.top, design.verilog, timeout_s) for flow in FPGA_FLOWS.get(target, ()))
    return jobs


def check_targets(targets: Iterable[str]) -> tuple[str, ...]:
    targets = tuple(targets)
    unknown = [target for target in targets if target not in TARGETS]
    if unknown:
        raise ValueError(f"unknown synthesis target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    return targets


def synthesize_designs(
    designs: Sequence[Design],
    targets: Iterable[str] = ("generic",),
    *,
    blocks: bool = True,
    cache: ResultCache | None = None,
    workers: int = 1,
    progress: bool = True,
    timeout_s: float | None = None,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """One report per design: generic figures of the flat synthesis (``gates``, ``flops``, ``ge`` — the
    canonical area —, ``transistors``, ``depth``, ``cells``), ``blocks`` (per block gates and GE, from the
    hierarchical synthesis), ``blocks_ge`` (their sum) and ``blocks_overhead`` (blocks_ge / ge - 1: what
    keeping the hierarchy costs), and ``fpga`` (per flow LUT/carry/FF/DSP counts)."""
    targets = check_targets(targets)
    cache = cache if cache is not None else ResultCache(None)
    per_design = [design_jobs(design, targets, blocks, timeout_s) for design in designs]
    flat = [job for jobs in per_design for job in jobs]
    results = iter(run_cached(flat, cache, workers, progress, desc="yosys", executor=executor))
    areas = cell_areas_ge()
    reports = []
    for design, jobs in zip(designs, per_design):
        report: dict[str, Any] = {}
        for job in jobs:  # generic comes first: its figures lead the report
            result = next(results)
            if job.flow == "generic":
                report.update(generic_report(result, areas))
            elif job.flow == "blocks":
                cells = block_breakdown(result["modules"], design.top, design.module_blocks)
                report["blocks"] = blocks_report(cells, areas)
                # The flat run is canonical (it optimizes across blocks); the hierarchical run that splits
                # the area by block costs this much more.
                report["blocks_ge"] = round(sum(block["ge"] for block in report["blocks"].values()), 3)
                report["blocks_overhead"] = report["blocks_ge"] / report["ge"] - 1
            else:
                report.setdefault("fpga", {})[job.flow] = result
        report.setdefault("blocks", {})
        report.setdefault("fpga", {})
        reports.append(report)
    return reports


__all__ = [
    "BLOCK_NAMES",
    "TARGETS",
    "Design",
    "SynthJob",
    "SynthesisError",
    "YosysError",
    "block_breakdown",
    "cell_areas_ge",
    "flow_script",
    "synthesize_designs",
]
