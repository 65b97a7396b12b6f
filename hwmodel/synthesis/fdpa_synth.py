"""Synthesis of the fused dot-product-add unit (rtl.fdpa): ``hwmodel synth --in e4m3 --acc hopper-fp8``.

A configuration whose accumulator is fused (``MacConfig.fused_acc``) has one top, ``fdpa`` (rtl.fdpa_export),
synthesized by one of two flows (``flow``):

- ``flat``: the flat Verilog through the MAC's flows — generic gates, GE, transistors, depth (and the
  per-block split from a second, hierarchical run; hwmodel.synthesis.synth), standard-cell area and OpenSTA
  timing (hwmodel.synthesis.flows.targets.asic_reports). Optimizes across blocks; finishes up to L = 8 or so
  (the 32-term hopper-fp8 unit's flat ABC run did not finish in 61 min).
- ``stitched``: every block synthesized and mapped on its own, the mapped blocks stitched without
  re-optimization (hwmodel.synthesis.stitched): 25 s of Yosys for the generic run at L = 32. Its area is
  above the flat run's as a rule (+8.2% / +7.0% GE, +10.9% / +9.3% sky130 µm² at L = 4 / 8, nangate45 −1.7% /
  +3.1%; reports/fdpa/flat_vs_stitched.csv). It
  also times a pipelined unit (register to register) with the standard-cell libraries, and measures the
  energy per MAC of a combinational unit on random operands (hwmodel.synthesis.fdpa_energy).
- ``auto`` (default): flat for L <= ``FLAT_MAX_GROUP`` and a combinational unit, stitched otherwise.

Exports and tool runs are cached by content. Not measured here: energy per MAC on real operands.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lba_core import ConfigError, MacConfig

from ..execution.cache import ResultCache, content_key
from ..execution.jobs import run_cached
from .fdpa_energy import fdpa_energy
from .stitched import FLAT_FLOW, STITCHED_FLOW, stitched_asic_reports, stitched_generic_report
from .synth import Design, check_targets, synthesize_designs
from .synth import TARGETS as YOSYS_TARGETS

FDPA_TOP = "fdpa"
AUTO_FLOW = "auto"
FLOWS = (AUTO_FLOW, FLAT_FLOW, STITCHED_FLOW)
ENERGY_NOTE = ("random operands only (uniform codes, c chained; hwmodel.synthesis.fdpa_energy), at the unit's "
               "OpenSTA delay; real operands (MiniLM activations) not driven")
#: The largest L that ``auto`` synthesizes flat.
FLAT_MAX_GROUP = 8


@dataclass(frozen=True)
class FdpaExportJob:
    """The Verilog of one FDPA unit (flat, or hierarchical with its block map), cached by the generator's
    sources (hwmodel.synthesis.mac_synth.generator_fingerprint)."""

    config_json: str
    hierarchical: bool
    pipeline: int
    fingerprint: str

    @property
    def key(self) -> str:
        return content_key("rtl.export_fdpa_verilog", self.config_json, str(self.hierarchical),
                           f"pipeline {self.pipeline}", self.fingerprint)

    def run(self) -> dict[str, Any]:
        from rtl.fdpa_export import export_fdpa_verilog

        cfg = MacConfig.from_dict(json.loads(self.config_json))
        with tempfile.TemporaryDirectory(prefix="lba-fdpa-") as folder:
            paths = export_fdpa_verilog(cfg, folder, pipeline=self.pipeline, hierarchical=self.hierarchical)
            blocks = json.loads(paths["config"].read_text()).get("blocks") if self.hierarchical else None
            return {"verilog": paths[FDPA_TOP].read_text(), "blocks": blocks}


def fdpa_design(cfg: MacConfig, *, pipeline: int = 0, blocks: bool = True, flat: bool = True,
                cache: ResultCache | None = None, progress: bool = False) -> Design:
    """The ``fdpa`` top of cfg: flat Verilog (unless ``flat`` is False: the stitched flow needs none), and
    with ``blocks`` the hierarchical one and its block map."""
    from rtl.fdpa_plan import plan_fused
    from rtl.fdpa import check_fdpa_pipeline

    from .mac_synth import generator_fingerprint

    plan_fused(cfg)
    check_fdpa_pipeline(pipeline)
    config_json = json.dumps(cfg.to_dict(), sort_keys=True)
    fingerprint = generator_fingerprint()
    jobs = ([FdpaExportJob(config_json, False, pipeline, fingerprint)] if flat else []) + (
        [FdpaExportJob(config_json, True, pipeline, fingerprint)] if blocks else [])
    if not jobs:
        raise ValueError("fdpa_design needs the flat or the hierarchical Verilog (flat or blocks)")
    exports = run_cached(jobs, cache if cache is not None else ResultCache(None), 1, progress, desc="verilog")
    flat_text = exports[0]["verilog"] if flat else ""
    if not blocks:
        return Design(FDPA_TOP, flat_text)
    return Design(FDPA_TOP, flat_text, exports[-1]["verilog"], exports[-1]["blocks"])


def choose_flow(flow: str, group: int, pipeline: int, libraries: Sequence[str]) -> str:
    """The flow ``flow`` names (``auto``: flat for a small combinational unit); a ConfigError for an unknown
    flow or a pipelined unit with standard-cell targets in the flat flow (it times the MAC tops only)."""
    if flow not in FLOWS:
        raise ConfigError(f"--fdpa-flow must be one of {', '.join(FLOWS)}, got {flow!r}")
    if flow == AUTO_FLOW:
        return FLAT_FLOW if group <= FLAT_MAX_GROUP and not (pipeline and libraries) else STITCHED_FLOW
    if flow == FLAT_FLOW and pipeline and libraries:
        raise ConfigError(f"--pipeline {pipeline} with {', '.join(libraries)}: the flat flow times only the MAC "
                          "tops as sequential; use --fdpa-flow stitched (or auto) for a pipelined FDPA unit")
    return flow


def synthesize_fdpa(
    cfg: MacConfig,
    targets: Sequence[str] = ("generic",),
    *,
    blocks: bool = True,
    cache: ResultCache | None = None,
    workers: int = 1,
    progress: bool = True,
    timeout_s: float | None = None,
    pipeline: int = 0,
    flow: str = AUTO_FLOW,
    recipes: Sequence[str] | None = None,
    energy: bool = True,
) -> dict[str, Any]:
    """``{"fdpa": report, "config": {...}}``: the Yosys report of the unit (as for a MAC top) with, per
    standard-cell target among ``targets``, area and timing (a combinational unit: its delay; a pipelined one:
    its period). ``flow``: ``auto``, ``flat`` or ``stitched`` (module docstring); the stitched flow always
    reports the per-block split and, with ``energy`` and a combinational unit, the energy per MAC on random
    operands at the unit's delay (hwmodel.synthesis.fdpa_energy). ``recipes`` limits the standard-cell recipes
    (default: all)."""
    from rtl.fdpa_export import FDPA_BLOCK_NAMES
    from rtl.fdpa_plan import plan_fused

    from .flows.liberty import RECIPES
    from .flows.nextpnr import PNR_TARGETS
    from .flows.targets import ASIC_TARGETS, asic_reports, pnr_reports

    plan = plan_fused(cfg)  # a ConfigError before any work
    libraries = [target for target in targets if target in ASIC_TARGETS]
    chosen = choose_flow(flow, plan.group, pipeline, libraries)
    recipes = tuple(recipes or RECIPES)
    unknown = [recipe for recipe in recipes if recipe not in RECIPES]
    if unknown:
        raise ConfigError(f"unknown standard-cell recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    cache = cache if cache is not None else ResultCache(None)
    yosys_targets = check_targets([target for target in targets if target in YOSYS_TARGETS])
    devices = [target for target in targets if target in PNR_TARGETS]
    stitched = chosen == STITCHED_FLOW
    fpga = [target for target in yosys_targets if target != "generic"] + devices
    design = fdpa_design(cfg, pipeline=pipeline, blocks=blocks or stitched, flat=not stitched or bool(fpga),
                         cache=cache, progress=progress)
    if stitched:
        report = stitched_generic_report(design, cache=cache, progress=progress, timeout_s=timeout_s)
        fpga_reports = [target for target in yosys_targets if target != "generic"]
        if fpga_reports:  # the vendor flows on the flat Verilog, as for the flat flow
            flat_design = Design(FDPA_TOP, design.verilog)
            report["fpga"] = synthesize_designs([flat_design], fpga_reports, blocks=False, cache=cache,
                                                workers=workers, progress=progress, timeout_s=timeout_s)[0]["fpga"]
        if libraries:
            measure = energy and not pipeline
            report.update(stitched_asic_reports(design, libraries, sequential=bool(pipeline), cache=cache,
                                                recipes=recipes, workers=workers, progress=progress,
                                                timeout_s=timeout_s, connectivity=measure))
            for library in libraries if measure else ():
                figures = report[library]
                figures.update(fdpa_energy(cfg, figures.pop("connectivity"), library, figures["delay_ns"],
                                           cache=cache))
    else:
        report = synthesize_designs([design], yosys_targets, blocks=blocks, cache=cache, workers=workers,
                                    progress=progress, timeout_s=timeout_s)[0]
        report["synthesis_flow"] = FLAT_FLOW
        if libraries:
            report.update(asic_reports([{FDPA_TOP: design}], libraries, recipes=recipes, blocks=blocks, cache=cache,
                                       workers=workers, progress=progress, timeout_s=timeout_s)[0][FDPA_TOP])
    order = {name: index for index, name in enumerate(FDPA_BLOCK_NAMES)}  # datapath order, glue last
    report["blocks"] = dict(sorted(report["blocks"].items(), key=lambda item: order.get(item[0], len(order))))
    if devices:
        report.update(pnr_reports([{FDPA_TOP: Design(FDPA_TOP, design.verilog)}], devices, cache=cache,
                                  workers=workers, progress=progress, timeout_s=timeout_s)[0][FDPA_TOP])
    return {
        FDPA_TOP: report,
        "config": {**cfg.to_dict(), "name": cfg.name, "pipeline": pipeline, "group": plan.group,
                   "fraction_bits": plan.fraction_bits, "synthesis_flow": chosen,
                   "energy": ENERGY_NOTE if stitched and energy and not pipeline and libraries else
                   "not measured (measured by the stitched flow of a combinational unit with a standard-cell target)"},
    }
