"""The standard-cell libraries the ASIC targets map to, and the facts the flows read from their .lib files.

The .lib files are vendored gzipped under ``hwmodel/synthesis/data/liberty/`` (provenance and licences in the README
there). :func:`library_data` extracts, once per library file and cached on disk, what the area, leakage and
energy figures need: per cell its area, leakage, input-pin capacitances, output functions, flip-flop
behaviour and internal-power tables. The extraction is a small reader of Liberty's group/attribute syntax
written here, because the maintained Python Liberty parser on PyPI (``liberty-parser``) is GPL-3.0, which
this Apache-2.0 project does not take as a dependency.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from ...execution.cache import ResultCache, content_key

LIBERTY_FOLDER = "data/liberty"


@dataclass(frozen=True)
class Library:
    """One ASIC target: its .lib file, corner, the cells the mapper must not use, and the timing environment
    (driving cell of every data input, load on every output) that static timing and energy figures state."""

    name: str
    file: str
    description: str
    corner: str
    dont_use: tuple[str, ...]
    driving_cell: str
    driving_pin: str
    output_load_pf: float
    input_slew_ns: float
    delay_target_ps: int

    def text(self) -> str:
        """The .lib text, decompressed."""
        return gzip.decompress(self.compressed()).decode()

    def compressed(self) -> bytes:
        return resources.files("hwmodel.synthesis").joinpath(f"{LIBERTY_FOLDER}/{self.file}").read_bytes()

    def fingerprint(self) -> str:
        """Hash of the .lib file: part of every cache key of a flow that reads it."""
        return hashlib.sha256(self.compressed()).hexdigest()


LIBRARIES: dict[str, Library] = {
    "sky130": Library(
        name="sky130",
        file="sky130hd_tt.lib.gz",
        description="SkyWater SKY130 high-density standard cells (sky130_fd_sc_hd)",
        corner="tt, 25 °C, 1.80 V",
        # Isolation/level-shifter/keep-alive cells are for power-gated designs; the mapper picks some otherwise.
        # Delay cells and probe cells are not logic a synthesized datapath should contain.
        dont_use=("*lpflow*", "*probe*", "*dlygate*", "*dlymetal*", "*clkdlybuf*"),
        driving_cell="sky130_fd_sc_hd__inv_2",
        driving_pin="Y",
        output_load_pf=0.0175,  # about four inv_2 inputs
        input_slew_ns=0.1,
        delay_target_ps=2000,
    ),
    "nangate45": Library(
        name="nangate45",
        file="nangate45_typ.lib.gz",
        description="NanGate FreePDK45 Open Cell Library",
        corner="typical, 25 °C, 1.10 V",
        dont_use=("ANTENNA*", "FILLCELL*", "TAPCELL*", "LOGIC*", "CLKGATE*"),
        driving_cell="INV_X2",
        driving_pin="ZN",
        output_load_pf=0.0065,  # about four INV_X2 inputs (pF; the library's unit is fF)
        input_slew_ns=0.02,
        delay_target_ps=500,
    ),
}


def get_library(name: str) -> Library:
    try:
        return LIBRARIES[name]
    except KeyError:
        raise ValueError(f"unknown ASIC library {name!r}; known: {', '.join(LIBRARIES)}") from None


# --------------------------------------------------------------------------------------------- Liberty reader
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[(){}:;,]|[^\s(){}:;,"\\]+')
_COMMENT = re.compile(r"/\*.*?\*/", re.S)


@dataclass
class Group:
    """A Liberty group ``kind (args) { ... }``: simple attributes, complex attributes (the last of each name,
    and every occurrence in ``repeated``) and sub-groups."""

    kind: str
    args: list[str]
    attrs: dict[str, str]
    complex: dict[str, list[str]]
    groups: list["Group"]
    repeated: dict[str, list[list[str]]] = field(default_factory=dict)

    def sub(self, kind: str) -> list["Group"]:
        return [group for group in self.groups if group.kind == kind]


def _unquote(token: str) -> str:
    return token[1:-1] if token.startswith('"') else token


def parse_liberty(text: str) -> Group:
    """The top ``library`` group of a .lib text."""
    tokens = _TOKEN.findall(_COMMENT.sub(" ", text.replace("\\\n", " ")))
    position = 0
    root = Group("root", [], {}, {}, [])
    stack = [root]
    count = len(tokens)
    while position < count:
        token = tokens[position]
        if token == "}":
            stack.pop()
            position += 1
            continue
        if token == ";":
            position += 1
            continue
        following = tokens[position + 1] if position + 1 < count else ""
        if following == ":":
            value = tokens[position + 2]
            stack[-1].attrs[token] = _unquote(value)
            position += 3
            continue
        if following == "(":
            end = tokens.index(")", position + 2)
            args = [_unquote(item) for item in tokens[position + 2:end] if item != ","]
            position = end + 1
            if position < count and tokens[position] == "{":
                group = Group(token, args, {}, {}, [])
                stack[-1].groups.append(group)
                stack.append(group)
                position += 1
            else:
                stack[-1].complex[token] = args
                stack[-1].repeated.setdefault(token, []).append(args)
            continue
        position += 1  # a stray token (e.g. a bare keyword): skip it
    libraries = root.sub("library")
    if not libraries:
        raise ValueError("no library group in the Liberty text")
    return libraries[0]


def _floats(values: list[str]) -> list[float]:
    return [float(number) for item in values for number in item.split(",") if number.strip()]


def _table(group: Group, templates: dict[str, Group]) -> dict[str, Any]:
    """A lookup table as {variables, index_1, index_2, values} (values row-major over index_1 x index_2)."""
    template = templates.get(group.args[0]) if group.args else None
    variables = [template.attrs.get(f"variable_{axis}") for axis in (1, 2)] if template else [None, None]
    indices = []
    for axis in (1, 2):
        key = f"index_{axis}"
        source = group.complex.get(key) or (template.complex.get(key) if template else None)
        indices.append(_floats(source) if source else [])
    values = _floats(group.complex.get("values", []))
    return {"variables": [v for v in variables if v], "index_1": indices[0], "index_2": indices[1], "values": values}


def _internal_power(pin: Group, templates: dict[str, Group]) -> list[dict[str, Any]]:
    arcs = []
    for power in pin.sub("internal_power"):
        arc: dict[str, Any] = {"related_pin": power.attrs.get("related_pin", ""), "when": power.attrs.get("when", "")}
        for edge in ("rise_power", "fall_power"):
            tables = power.sub(edge)
            if tables:
                arc[edge] = _table(tables[0], templates)
        arcs.append(arc)
    return arcs


def extract_library(text: str) -> dict[str, Any]:
    """The facts the flows use, JSON-ready: units, nominal voltage and per cell area, leakage, pins, ff."""
    library = parse_liberty(text)
    templates = {group.args[0]: group for group in library.sub("power_lut_template")}
    capacitance_unit = library.complex.get("capacitive_load_unit", ["1", "pf"])
    cap_scale_pf = float(capacitance_unit[0]) * {"pf": 1.0, "ff": 1e-3}[capacitance_unit[1].lower()]
    voltage = float(library.attrs.get("nom_voltage") or library.sub("operating_conditions")[0].attrs["voltage"])
    cells: dict[str, Any] = {}
    for cell in library.sub("cell"):
        pins: dict[str, Any] = {}
        for pin in cell.sub("pin"):
            entry: dict[str, Any] = {"direction": pin.attrs.get("direction", "")}
            if "capacitance" in pin.attrs:
                entry["capacitance"] = float(pin.attrs["capacitance"])
            if "function" in pin.attrs:
                entry["function"] = pin.attrs["function"]
            if pin.attrs.get("clock") == "true":
                entry["clock"] = True
            arcs = _internal_power(pin, templates)
            if arcs:
                entry["internal_power"] = arcs
            pins[pin.args[0]] = entry
        flops = cell.sub("ff")
        ff = None
        if flops:
            ff = {"state": flops[0].args, **{key: flops[0].attrs[key] for key in
                                             ("clocked_on", "next_state", "clear", "preset") if key in flops[0].attrs}}
        cells[cell.args[0]] = {
            "area": float(cell.attrs.get("area", 0.0)),
            "leakage": float(cell.attrs.get("cell_leakage_power", 0.0)),
            "pins": pins,
            "ff": ff,
            "latch": bool(cell.sub("latch")),
        }
    wire_loads = {
        group.args[0]: {
            "capacitance": float(group.attrs.get("capacitance", 0.0)),
            "slope": float(group.attrs.get("slope", 0.0)),
            "fanout_length": sorted((int(float(a)), float(b)) for a, b in group.repeated.get("fanout_length", [])),
        }
        for group in library.sub("wire_load")
    }
    return {
        "name": library.args[0],
        "wire_loads": wire_loads,
        "default_wire_load": library.attrs.get("default_wire_load", ""),
        "voltage": voltage,
        "time_unit": library.attrs.get("time_unit", "1ns"),
        "leakage_power_unit": library.attrs.get("leakage_power_unit", "1nW"),
        "capacitance_scale_pf": cap_scale_pf,
        "cells": cells,
    }


EXTRACT_VERSION = "3"


@lru_cache(maxsize=None)
def _library_data(name: str, cache_root: str | None) -> dict[str, Any]:
    library = get_library(name)
    cache = ResultCache(cache_root)
    key = content_key("liberty.extract", EXTRACT_VERSION, library.fingerprint())
    data = cache.get(key)
    if data is None:
        data = extract_library(library.text())
        cache.put(key, data)
    return data


def library_data(name: str, cache: ResultCache | None = None) -> dict[str, Any]:
    """:func:`extract_library` of a known library, read once per process and kept in ``cache``."""
    root = None if cache is None or cache.root is None else str(cache.root)
    return _library_data(name, root)


def energy_unit_pj(data: dict[str, Any]) -> float:
    """Internal-power tables are energies in capacitance-unit x voltage-unit^2: pF·V² = pJ, fF·V² = fJ."""
    return data["capacitance_scale_pf"]


def leakage_unit_nw(data: dict[str, Any]) -> float:
    unit = data["leakage_power_unit"].strip().lower()
    scales = {"1nw": 1.0, "1pw": 1e-3, "1uw": 1e3, "1mw": 1e6}
    if unit not in scales:
        raise ValueError(f"unsupported leakage power unit {unit!r}")
    return scales[unit]


def wire_capacitance_pf(data: dict[str, Any], fanout: int) -> float:
    """The library's default wire-load model: the estimated wire capacitance (pF) of a net with ``fanout``
    loads (beyond the table, the last length plus ``slope`` per extra fanout), as OpenSTA applies it."""
    model = data["wire_loads"].get(data["default_wire_load"])
    if model is None or fanout <= 0:
        return 0.0
    table = dict(model["fanout_length"])
    if fanout in table:
        length = table[fanout]
    else:
        last_fanout, last_length = model["fanout_length"][-1]
        length = last_length + model["slope"] * (fanout - last_fanout)
    return model["capacitance"] * length * data["capacitance_scale_pf"]
