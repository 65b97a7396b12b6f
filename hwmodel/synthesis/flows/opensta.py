"""Static timing and reference power of a mapped netlist with OpenSTA (Debian package ``opensta``, binary ``sta``).

Timing environment (stated in every result): an ideal clock (no clock tree, no skew), every data input driven
by the library's ``driving_cell`` with zero external input delay, every output loaded with
``output_load_pf``, and the library's default wire-load model (sky130 "Small", nangate45 "5K_hvratio_1_1",
which OpenSTA applies by default). The netlist is unplaced, so the figures are post-synthesis and
optimistic against a placed-and-routed design.

- Combinational tops (``fmaq``): a virtual clock; the critical path is the longest input-to-output path.
- Sequential tops (``mac``): the minimum clock period is the worst register-to-register path plus setup;
  the input-to-register path (data inputs arriving at the clock edge) is reported separately, and Fmax
  takes the worse of the two.
- ``report_power`` with ``set_power_activity -global`` (the same activity and duty on every net) is the
  reference the energy estimator of hwmodel.synthesis.flows.energy is validated against.

The 2019 OpenSTA exits 0 even after ``Error:`` lines; any such line fails the run here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from rtl.yosys import ToolError, run_tool, tool_executable

from ...execution.cache import content_key
from . import ToolMissing
from .libraries import get_library

STA_PACKAGE = "opensta"
LOG_NAME = "sta.log"
#: The nominal clock of a timing run; the figures (arrival, setup) do not depend on it.
NOMINAL_PERIOD_NS = 100.0
#: set_power_activity -global for the energy estimator's validation: transitions per cycle, duty, clock period.
UNIFORM_ACTIVITY = 0.2
UNIFORM_POWER_PERIOD_NS = 10.0
UNIFORM_DUTY = 0.5


class StaError(ToolError):
    """OpenSTA failed or printed an ``Error:`` line (its log is kept)."""

    def __init__(self, message: str, log_path: Path | None = None):
        super().__init__(message, log_path)


def sta_executable() -> str:
    if shutil.which("sta") is None:  # Debian installs it on PATH only
        raise ToolMissing(f"OpenSTA (sta) is not installed: install the Debian package {STA_PACKAGE} "
                          "(sh scripts/install-system-deps.sh)")
    return tool_executable("sta", f"Debian package {STA_PACKAGE}", ToolMissing)


@lru_cache(maxsize=1)
def sta_version() -> str:
    completed = subprocess.run([sta_executable(), "-version"], capture_output=True, text=True, check=False)
    return completed.stdout.strip() or completed.stderr.strip()


_INSTANCE = re.compile(r"^\s*(\S+) (\S+) \((.*?)\);", re.M | re.S)


def accumulator_cells(netlist: str, port: str = "acc") -> list[str]:
    """Instances of a mapped netlist whose Q output drives a bit of ``port``: the accumulator register."""
    return [match.group(2) for match in _INSTANCE.finditer(netlist)
            if re.search(rf"\.Q\({re.escape(port)}(\[|\))", match.group(3))]


def timing_script(library_name: str, top: str, sequential: bool, power_period_ns: float | None,
                  loop_cells: list[str] | None = None) -> str:
    library = get_library(library_name)
    lines = [
        "read_liberty cells.lib",
        "read_verilog netlist.v",
        f"link_design {top}",
    ]
    if sequential:
        lines += [f"create_clock -name clk -period {NOMINAL_PERIOD_NS} [get_ports clk]",
                  "set data_inputs [delete_from_list [all_inputs] [get_ports clk]]"]
    else:
        lines += [f"create_clock -name clk -period {NOMINAL_PERIOD_NS}", "set data_inputs [all_inputs]"]
    lines += [
        "set_input_delay 0 -clock clk $data_inputs",
        "set_output_delay 0 -clock clk [all_outputs]",
        f"set_driving_cell -lib_cell {library.driving_cell} -pin {library.driving_pin} $data_inputs",
        f"set_load {_in_library_units(library_name, library.output_load_pf)} [all_outputs]",
    ]
    if sequential:
        lines += [
            'puts "=== path reg_to_reg"',
            "report_checks -path_delay max -from [all_registers -clock_pins] -to [all_registers -data_pins] -digits 4",
            'puts "=== path input_to_reg"',
            "report_checks -path_delay max -from $data_inputs -to [all_registers -data_pins] -digits 4",
        ]
        if loop_cells:
            cells = "[get_cells {" + " ".join(loop_cells) + "}]"
            lines += ['puts "=== path accumulation_loop"',
                      f"report_checks -path_delay max -from {cells} -to {cells} -digits 4"]
    else:
        lines += ['puts "=== path input_to_output"',
                  "report_checks -path_delay max -from $data_inputs -to [all_outputs] -digits 4"]
    if power_period_ns is not None:
        if sequential:
            lines.append(f"create_clock -name clk -period {power_period_ns} [get_ports clk]")
        lines += [
            f"set_power_activity -global -activity {UNIFORM_ACTIVITY} -duty {UNIFORM_DUTY}",
            'puts "=== power"',
            "report_power -digits 8",
        ]
    return "\n".join(lines) + "\n"


def _in_library_units(library_name: str, capacitance_pf: float) -> float:
    """set_load takes the library's capacitance unit (pF for sky130, fF for nangate45)."""
    return capacitance_pf * (1000.0 if library_name == "nangate45" else 1.0)


_SECTION = re.compile(r"^=== (path|power) ?(\S*)$", re.M)
_ARRIVAL = re.compile(r"^\s*(-?[\d.]+)\s+data arrival time", re.M)
_SETUP = re.compile(r"^\s*(-?[\d.]+)\s+(-?[\d.]+)\s+library setup time", re.M)
_START = re.compile(r"^Startpoint: (\S+)", re.M)
_END = re.compile(r"^Endpoint: (\S+)", re.M)
_POWER_ROW = re.compile(r"^(Sequential|Combinational|Macro|Pad|Total)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", re.M)


def parse_path(text: str) -> dict[str, Any] | None:
    """Start point, end point, arrival and setup of the one path of a report_checks section (None: no path)."""
    arrival = _ARRIVAL.search(text)
    if arrival is None:
        return None
    setup = _SETUP.search(text)
    setup_ns = -float(setup.group(1)) if setup else 0.0
    return {
        "startpoint": _START.search(text).group(1),
        "endpoint": _END.search(text).group(1),
        "arrival_ns": float(arrival.group(1)),
        "setup_ns": setup_ns,
        "delay_ns": round(float(arrival.group(1)) + setup_ns, 4),
    }


def parse_power(text: str) -> dict[str, float]:
    rows = {match.group(1).lower(): [float(value) for value in match.groups()[1:]] for match in
            _POWER_ROW.finditer(text)}
    if "total" not in rows:
        raise StaError("report_power printed no Total row")
    internal, switching, leakage, total = rows["total"]
    return {"internal_w": internal, "switching_w": switching, "leakage_w": leakage, "total_w": total}


def parse_sta_log(log: str) -> dict[str, Any]:
    errors = [line for line in log.splitlines() if line.startswith("Error")]
    if errors:
        raise StaError("OpenSTA reported errors: " + "; ".join(errors[:5]))
    sections = {}
    matches = list(_SECTION.finditer(log))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(log)
        sections[match.group(2) or match.group(1)] = log[match.end():end]
    result: dict[str, Any] = {"paths": {}}
    for name, text in sections.items():
        if name == "power":
            result["power"] = parse_power(text)
        else:
            result["paths"][name] = parse_path(text)
    return result


_SIGNED_DECLARATION = re.compile(r"^(\s*(?:wire|input|output|inout|reg))\s+signed\b", re.M)


def unsigned_netlist(netlist: str) -> str:
    """The mapped netlist without ``signed`` on declarations (named wires of signed Amaranth signals), which
    the 2019 OpenSTA rejects; a structural netlist has no arithmetic, so signedness means nothing in it."""
    return _SIGNED_DECLARATION.sub(r"\1", netlist)


@dataclass(frozen=True)
class TimingJob:
    """OpenSTA on one mapped netlist: critical paths, and report_power under uniform activity when a
    ``power_period_ns`` is given."""

    library: str
    top: str
    netlist: str
    sequential: bool
    power_period_ns: float | None = None
    timeout_s: float | None = field(default=60.0, compare=False)

    @property
    def script(self) -> str:
        loop_cells = accumulator_cells(self.netlist) if self.sequential else None
        return timing_script(self.library, self.top, self.sequential, self.power_period_ns, loop_cells)

    @property
    def key(self) -> str:
        return content_key("opensta", self.netlist, self.script, get_library(self.library).fingerprint(),
                           sta_version())

    def run(self) -> dict[str, Any]:
        work_dir = Path(tempfile.mkdtemp(prefix=f"lba-sta-{self.top}-{self.library}-"))
        sources = {"cells.lib": get_library(self.library).text(), "netlist.v": unsigned_netlist(self.netlist),
                   "run.tcl": self.script}
        run_tool([sta_executable(), "-no_splash", "-exit", "run.tcl"], work_dir, sources=sources,
                 log_name=LOG_NAME, timeout_s=self.timeout_s, error=StaError)
        log_path = work_dir / LOG_NAME
        try:
            result = parse_sta_log(log_path.read_text())
        except StaError as error:
            raise StaError(f"{error}; log kept at {log_path}", log_path) from None
        shutil.rmtree(work_dir, ignore_errors=True)
        return result


def timing_report(sta: dict[str, Any], library_name: str, sequential: bool) -> dict[str, Any]:
    """The timing figures of one top: ``delay_ns`` and its path (combinational), or ``period_ns``,
    ``fmax_mhz`` and the register-to-register and input-to-register paths (sequential)."""
    library = get_library(library_name)
    environment = (f"ideal clock, inputs driven by {library.driving_cell} with 0 ns input delay, outputs "
                   f"loaded with {library.output_load_pf} pF, the library's default wire-load model; unplaced "
                   "(optimistic)")
    paths = sta["paths"]
    if not sequential:
        path = paths["input_to_output"]
        return {"delay_ns": path["delay_ns"], "critical_path": path, "timing_environment": environment}
    reg_to_reg, input_to_reg = paths["reg_to_reg"], paths["input_to_reg"]
    loop = paths.get("accumulation_loop")
    candidates = [path["delay_ns"] for path in (reg_to_reg, input_to_reg) if path is not None]
    period = max(candidates)
    return {
        "period_ns": round(period, 4),
        "fmax_mhz": round(1000.0 / period, 2),
        "reg_to_reg_ns": reg_to_reg["delay_ns"] if reg_to_reg else None,
        "input_to_reg_ns": input_to_reg["delay_ns"] if input_to_reg else None,
        # The one-cycle recurrence acc -> align, add, normalize, round -> acc: it bounds Fmax once the
        # product is registered (--pipeline).
        "loop_ns": loop["delay_ns"] if loop else None,
        "critical_path": reg_to_reg if reg_to_reg and reg_to_reg["delay_ns"] == period else input_to_reg,
        "reg_to_reg_path": reg_to_reg,
        "input_to_reg_path": input_to_reg,
        "loop_path": loop,
        "timing_environment": environment,
    }
