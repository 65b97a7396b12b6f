"""Verilog export of the FDPA unit through the MAC's export path (rtl.export.write_top: RTLIL -> Yosys -> Verilog).

``export_fdpa_verilog(cfg, out_dir)`` writes ``fdpa.v`` (top module ``fdpa``) and ``fdpa.json`` (the
configuration, the ports with their widths, the plan's widths, the pipeline depth and latency, and with
``hierarchical`` the block of every module, for the per-block area report).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from lba_core import FloatFormat, MacConfig
from lba_core.fileio import atomic_write_text

from .blocks import Rounder, block_name
from .export import write_top
from .fdpa import FusedDotProductAdd, check_fdpa_pipeline
from .fdpa_blocks import AddendTerm, CompressorTree, ExponentMax, FdpaOutput, ProductTerm, SumNormalizer, TermAligner
from .fdpa_plan import FdpaPlan, plan_fused
from .hierarchy import module_blocks
from .mac import Register

FDPA_TOP = "fdpa"
#: The FDPA unit's blocks in datapath order (the per-block area report's rows).
FDPA_BLOCKS = (ProductTerm, AddendTerm, ExponentMax, TermAligner, CompressorTree, SumNormalizer, Rounder, FdpaOutput, Register)
FDPA_BLOCK_NAMES = tuple(block_name(block) for block in FDPA_BLOCKS)


def fdpa_block_of(origin: type, name: str) -> str | None:
    """The block of a sub-module of the FDPA unit, by class (rtl.module_blocks' ``block_of``)."""
    return block_name(origin) if origin in FDPA_BLOCKS else None


def fdpa_port_widths(unit: FusedDotProductAdd) -> dict[str, int]:
    """Every port of the exported top with its width (``clk`` and ``rst`` when pipelined)."""
    widths = {"clk": 1, "rst": 1} if unit.pipeline else {}
    widths.update({name: len(getattr(unit, name)) for name in unit.signature.members})
    return widths


def plan_description(plan: FdpaPlan) -> dict:
    """The plan as plain JSON values (formats by name)."""
    return {
        field.name: getattr(plan, field.name).name if isinstance(getattr(plan, field.name), FloatFormat) else getattr(plan, field.name)
        for field in fields(plan)
    }


def export_fdpa_verilog(cfg: MacConfig, out_dir, *, pipeline: int = 0, hierarchical: bool = False) -> dict[str, Path]:
    """Write ``fdpa.v`` and ``fdpa.json`` into out_dir for the fused accumulator of ``cfg``; returns
    {"fdpa": path, "config": path}. Raises ConfigError before writing anything for a configuration or pipeline
    depth that cannot be built."""
    plan = plan_fused(cfg)
    check_fdpa_pipeline(pipeline)
    unit = FusedDotProductAdd(plan, pipeline)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {FDPA_TOP: write_top(unit, FDPA_TOP, out, hierarchical)}
    description = {
        **cfg.to_dict(),
        "name": cfg.name,
        "top": FDPA_TOP,
        "hierarchical": hierarchical,
        "ports": fdpa_port_widths(unit),
        "datapath": plan_description(plan),
        "pipeline": pipeline,
        "latency_cycles": unit.latency,
    }
    if hierarchical:
        description["blocks"] = module_blocks(unit, FDPA_TOP, fdpa_block_of)
    paths["config"] = out / "fdpa.json"
    atomic_write_text(paths["config"], json.dumps(description, indent=2) + "\n")
    return paths
