"""Synthesis of the fused dot-product-add unit (rtl.fdpa): ``hwmodel synth --in e4m3 --acc hopper-fp8``.

A configuration whose accumulator is fused (``MacConfig.fused_acc``) has one top, ``fdpa`` (rtl.fdpa_export):
its flat and hierarchical Verilog (with the block map) go through the same flows as the MAC's tops — generic
gates, GE, transistors, depth and the per-block breakdown (hwmodel.synthesis.synth), standard-cell area and
OpenSTA timing (hwmodel.synthesis.flows.targets.asic_reports), nextpnr — cached by content. Not measured here:
energy per MAC (the operand-stream simulation drives the MAC's ports; the FDPA's differ).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

from lba_core import ConfigError, MacConfig

from ..execution.cache import ResultCache
from .synth import Design, check_targets, synthesize_designs
from .synth import TARGETS as YOSYS_TARGETS

FDPA_TOP = "fdpa"


def fdpa_design(cfg: MacConfig, *, pipeline: int = 0, blocks: bool = True) -> Design:
    """The ``fdpa`` top of cfg: flat Verilog, and with ``blocks`` the hierarchical one and its block map."""
    from rtl.fdpa_export import export_fdpa_verilog

    with tempfile.TemporaryDirectory(prefix="lba-fdpa-") as folder:
        flat = export_fdpa_verilog(cfg, Path(folder) / "flat", pipeline=pipeline)["fdpa"].read_text()
        if not blocks:
            return Design(FDPA_TOP, flat)
        paths = export_fdpa_verilog(cfg, Path(folder) / "hier", pipeline=pipeline, hierarchical=True)
        block_map = json.loads(paths["config"].read_text())["blocks"]
        return Design(FDPA_TOP, flat, paths["fdpa"].read_text(), block_map)


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
) -> dict[str, Any]:
    """``{"fdpa": report, "config": {...}}``: the Yosys report of the unit (as for a MAC top) with, per
    standard-cell target among ``targets``, area and timing (a combinational unit: its delay; a pipelined one:
    its period)."""
    from rtl.fdpa_plan import plan_fused

    from .flows.nextpnr import PNR_TARGETS
    from .flows.targets import ASIC_TARGETS, SEQUENTIAL_TOPS, asic_reports, pnr_reports

    plan = plan_fused(cfg)  # a ConfigError before any work
    libraries = [target for target in targets if target in ASIC_TARGETS]
    if pipeline and libraries and FDPA_TOP not in SEQUENTIAL_TOPS:
        raise ConfigError(f"--pipeline {pipeline} with {', '.join(libraries)}: the standard-cell timing flow times "
                          "only the MAC tops as sequential; synthesize the FDPA unit combinational (--pipeline 0)")
    cache = cache if cache is not None else ResultCache(None)
    design = fdpa_design(cfg, pipeline=pipeline, blocks=blocks)
    yosys_targets = check_targets([target for target in targets if target in YOSYS_TARGETS])
    report = synthesize_designs([design], yosys_targets, blocks=blocks, cache=cache, workers=workers,
                                progress=progress, timeout_s=timeout_s)[0]
    if libraries:
        report.update(asic_reports([{FDPA_TOP: design}], libraries, blocks=blocks, cache=cache, workers=workers,
                                   progress=progress, timeout_s=timeout_s)[0][FDPA_TOP])
    devices = [target for target in targets if target in PNR_TARGETS]
    if devices:
        report.update(pnr_reports([{FDPA_TOP: design}], devices, cache=cache, workers=workers, progress=progress,
                                  timeout_s=timeout_s)[0][FDPA_TOP])
    return {
        FDPA_TOP: report,
        "config": {**cfg.to_dict(), "name": cfg.name, "pipeline": pipeline, "group": plan.group,
                   "fraction_bits": plan.fraction_bits, "energy": "not measured for the FDPA unit"},
    }
