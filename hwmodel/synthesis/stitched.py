"""Per-block synthesis, stitched: the flow for designs too large for a flat run (the 32-term FDPA unit).

A flat run (``synth -flatten`` and one ABC call over the whole design, hwmodel.synthesis.synth's ``generic``
and hwmodel.synthesis.flows.liberty's flattened mapping) optimizes across blocks, but ABC's time grows faster
than the design: the flat generic run of the 32-term hopper-fp8 unit did not finish in 61 min. Here every
module of the hierarchical Verilog (one per block instance, rtl.module_blocks) is synthesized and mapped on
its own — ``synth`` without ``-flatten``, one ABC call per module — and the mapped modules are then stitched
(``flatten`` after mapping: no logic optimization across blocks; ``opt_clean`` removes only cells whose
outputs drive nothing once the blocks are connected). The stitched netlist is what the figures describe:
generic cells, GE, transistors and logic depth; per standard-cell library µm², leakage and the OpenSTA
timing of the stitched mapped netlist; the per-block split from the same run, before stitching.

Its area is the sum of separately optimized blocks, as a rule above what the flat run finds (not always: ABC
is a heuristic); the gap is measured where both finish (docs/rtl.md, reports/fdpa/flat_vs_stitched.csv).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rtl.yosys import run_yosys, yosys_version

from ..execution.cache import ResultCache, content_key
from ..execution.jobs import run_cached
from .flows.liberty import LIB_NAME, NETLIST_NAME, RECIPES, area_report, flat_mapping_result, mapping_script
from .flows.libraries import get_library, library_data
from .flows.opensta import TimingJob, timing_report
from .synth import (
    VERILOG_NAME,
    Design,
    block_breakdown,
    blocks_report,
    cell_areas_ge,
    flow_script,
    generic_report,
    parse_blocks,
    parse_generic,
)

STITCHED_FLOW = "stitched"
FLAT_FLOW = "flat"
#: The recipe whose figures head each standard-cell report (as in hwmodel.synthesis.flows.targets).
HEADLINE_RECIPE = "area"
FLAT_STAT = "flat_stat.json"
DESCRIPTION = ("per-block synthesis, stitched: every module synthesized and mapped on its own (one ABC call "
               "per module), then flattened without re-optimization; opt_clean drops cells that drive nothing")


def stitch_lines(top: str) -> list[str]:
    """Yosys commands that connect the mapped modules into one flat netlist without optimizing logic."""
    return ["flatten", f"hierarchy -top {top}", "delete t:$scopeinfo"]


def stitched_generic_script(top: str) -> str:
    """The blocks flow (per-module generic mapping, per-module statistics in stat.json), then the stitch and
    the flat statistics, transistors and logic depth of the stitched netlist."""
    return flow_script("blocks", top) + "\n".join([
        *stitch_lines(top),
        "opt_clean",
        f"tee -q -o {FLAT_STAT} stat -json",
        "tee -q -o cmos.json stat -json -tech cmos",
        "tee -q -o ltp.txt ltp -noff",
    ]) + "\n"


def stitched_mapping_script(library: str, recipe: str, top: str) -> str:
    """The hierarchical standard-cell mapping (hwmodel.synthesis.flows.liberty), then the stitch and the
    flat statistics and netlist (the form OpenSTA and the energy flow read)."""
    return mapping_script(library, recipe, top, True) + "\n".join([
        *stitch_lines(top),
        "opt_clean -purge",
        f"tee -q -o {FLAT_STAT} stat -json -liberty {LIB_NAME}",
        f"write_verilog -noattr -noexpr -simple-lhs {NETLIST_NAME}",  # the 2019 OpenSTA reads no {...} = ...
        "write_json netlist.json",
    ]) + "\n"


@dataclass(frozen=True)
class StitchedGenericJob:
    """The generic gates of one design, per block then stitched: ``{cells, transistors, depth, modules}``."""

    top: str
    verilog: str
    timeout_s: float | None = field(default=None, compare=False)

    @property
    def script(self) -> str:
        return stitched_generic_script(self.top)

    @property
    def key(self) -> str:
        return content_key("stitched.generic", self.verilog, yosys_version(), self.script)

    def run(self) -> dict[str, Any]:
        work_dir = Path(tempfile.mkdtemp(prefix=f"lba-stitch-{self.top}-"))
        run_yosys(self.script, {VERILOG_NAME: self.verilog}, work_dir, self.timeout_s)
        modules = parse_blocks(work_dir, self.top)["modules"]
        (work_dir / FLAT_STAT).replace(work_dir / "stat.json")  # parse_generic reads the stitched top's cells
        raw = parse_generic(work_dir, self.top)
        shutil.rmtree(work_dir, ignore_errors=True)
        return {**raw, "modules": modules}


@dataclass(frozen=True)
class StitchedMappingJob:
    """One design mapped to one library per block, then stitched: the flattened mapping's fields
    (``area_um2``, ``sequential_area_um2``, ``cells_by_type``, ``netlist``, ``connectivity``) and ``modules``."""

    library: str
    recipe: str
    top: str
    verilog: str
    timeout_s: float | None = field(default=None, compare=False)

    @property
    def script(self) -> str:
        return stitched_mapping_script(self.library, self.recipe, self.top)

    @property
    def key(self) -> str:
        return content_key("stitched.liberty", self.verilog, yosys_version(), self.script,
                           get_library(self.library).fingerprint())

    def run(self) -> dict[str, Any]:
        library = get_library(self.library)
        work_dir = Path(tempfile.mkdtemp(prefix=f"lba-stitch-{self.top}-{self.library}-"))
        run_yosys(self.script, {VERILOG_NAME: self.verilog, LIB_NAME: library.text()}, work_dir, self.timeout_s)
        result = {**flat_mapping_result(work_dir, self.top, FLAT_STAT),
                  "modules": parse_blocks(work_dir, self.top)["modules"]}
        shutil.rmtree(work_dir, ignore_errors=True)
        return result


def stitched_generic_report(design: Design, *, cache: ResultCache, progress: bool = True,
                            timeout_s: float | None = None) -> dict[str, Any]:
    """The generic report of a design with hierarchical Verilog (the keys of hwmodel.synthesis.synth's reports:
    gates, flops, ge, transistors, depth, cells, blocks, blocks_ge, blocks_overhead), from the stitched run.
    ``blocks_overhead`` here is blocks_ge / ge - 1 with ge the stitched total: the cells the stitch dropped."""
    if design.hierarchical_verilog is None:
        raise ValueError(f"design {design.top}: the stitched flow needs its hierarchical Verilog")
    job = StitchedGenericJob(design.top, design.hierarchical_verilog, timeout_s)
    raw = run_cached([job], cache, 1, progress, desc="yosys (stitched)")[0]
    areas = cell_areas_ge()
    report = generic_report(raw, areas)
    cells = block_breakdown(raw["modules"], design.top, design.module_blocks)
    report["blocks"] = blocks_report(cells, areas)
    report["blocks_ge"] = round(sum(block["ge"] for block in report["blocks"].values()), 3)
    report["blocks_overhead"] = report["blocks_ge"] / report["ge"] - 1
    report["fpga"] = {}
    report["synthesis_flow"] = STITCHED_FLOW
    report["synthesis_flow_description"] = DESCRIPTION
    return report


def stitched_asic_reports(
    design: Design,
    libraries: Sequence[str],
    *,
    sequential: bool,
    cache: ResultCache,
    recipes: Sequence[str] = RECIPES,
    workers: int = 1,
    progress: bool = True,
    timeout_s: float | None = None,
    connectivity: bool = False,
) -> dict[str, dict[str, Any]]:
    """``{library: report}`` as hwmodel.synthesis.flows.targets.asic_reports gives per top (the headline recipe's
    figures with the per-block split, every recipe under ``recipes``), from stitched mappings; ``sequential``
    times register-to-register (a pipelined unit) instead of input-to-output. ``connectivity`` adds the
    headline mapping's compact netlist (for an activity simulation) under ``connectivity``."""
    if design.hierarchical_verilog is None:
        raise ValueError(f"design {design.top}: the stitched flow needs its hierarchical Verilog")
    jobs = [StitchedMappingJob(library, recipe, design.top, design.hierarchical_verilog, timeout_s)
            for library in libraries for recipe in recipes]
    mapped = run_cached(jobs, cache, workers, progress, desc="liberty (stitched)")
    timing_jobs = [TimingJob(job.library, job.top, result["netlist"], sequential) for job, result in zip(jobs, mapped)]
    timed = run_cached(timing_jobs, cache, workers, progress, desc="opensta")
    reports: dict[str, dict[str, Any]] = {}
    for job, result, sta in zip(jobs, mapped, timed):
        blocks = (block_breakdown(result["modules"], design.top, design.module_blocks)
                  if job.recipe == HEADLINE_RECIPE else None)
        report = area_report(result, job.library, job.recipe, blocks, library_data(job.library, cache))
        report.update(timing_report(sta, job.library, sequential))
        report["synthesis_flow"] = STITCHED_FLOW
        if connectivity and job.recipe == HEADLINE_RECIPE:
            report["connectivity"] = result["connectivity"]
        reports.setdefault(job.library, {})[job.recipe] = report
    headline = HEADLINE_RECIPE if HEADLINE_RECIPE in recipes else recipes[0]
    return {library: {**by_recipe[headline], "recipes": by_recipe} for library, by_recipe in reports.items()}


__all__ = [
    "FLAT_FLOW",
    "STITCHED_FLOW",
    "StitchedGenericJob",
    "StitchedMappingJob",
    "stitched_asic_reports",
    "stitched_generic_report",
]
