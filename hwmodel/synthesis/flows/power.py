"""The NLDM power model: per net, switching energy (½·C·V² with pin and wire-load capacitances) and the cells'
internal-power tables at the stated slew and load; per cycle, dynamic, clock and leakage energy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .liberty_functions import function_to_python
from .libraries import energy_unit_pj, get_library, leakage_unit_nw, wire_capacitance_pf
from .netlist_sim import Activity, CLOCK_PORT, CompiledNetlist


def _interpolate(table: dict[str, Any], slew_ns: float, load: float) -> float:
    """Bilinear interpolation (linear extrapolation at the edges, as STA tools do) in an NLDM table."""
    values = np.array(table["values"], float)
    index_1, index_2 = table["index_1"], table["index_2"]
    variables = table.get("variables") or ["input_transition_time", "total_output_net_capacitance"]
    coordinates = {"input_transition_time": slew_ns, "total_output_net_capacitance": load,
                   "output_net_total_cap": load, "related_pin_transition": slew_ns}
    if not index_2:
        return _interp1(index_1, values, coordinates.get(variables[0], slew_ns))
    grid = values.reshape(len(index_1), len(index_2))
    x = coordinates.get(variables[0], slew_ns)
    y = coordinates.get(variables[1], load)
    row = [_interp1(index_2, grid[i], y) for i in range(len(index_1))]
    return _interp1(index_1, np.array(row), x)


def _interp1(index: list[float], values: np.ndarray, x: float) -> float:
    if len(index) <= 1:  # a scalar table
        return float(values[0])
    position = int(np.clip(np.searchsorted(index, x) - 1, 0, len(index) - 2))
    x0, x1 = index[position], index[position + 1]
    return float(values[position] + (values[position + 1] - values[position]) * (x - x0) / (x1 - x0))


def when_probability(when: str, pins: list[str]) -> float:
    """Probability that a ``when`` condition holds with every pin independently 1 half the time (the duty
    0.5 of OpenSTA's global activity)."""
    if not when:
        return 1.0
    names = [pin for pin in pins if re.search(rf"\b{re.escape(pin)}\b", when)]
    count = 1 << len(names)
    assignment = np.arange(count)
    variables = {name: f"x[{index}]" for index, name in enumerate(names)}
    x = [((assignment >> index) & 1).astype(bool) for index in range(len(names))]
    value = eval(function_to_python(when, variables), {"x": x, "ZERO": np.zeros(count, bool),  # noqa: S307
                                                      "ONE": np.ones(count, bool)})
    return float(np.broadcast_to(value, (count,)).mean())


@dataclass(frozen=True)
class NetEnergy:
    """Energy (pJ) per transition of each net, the clock's energy per cycle and the leakage power (nW).

    ``rise_pj``/``fall_pj``: this estimator's accounting (one output transition costs the mean of its arcs'
    internal energies; an input pin's groups are weighted by the probability of their ``when``).
    ``sta_pj``: the accounting of the 2019 OpenSTA's report_power, per transition of the net, used only in
    the uniform validation mode: it sums, over every internal-power group of a pin, duty x (rise + fall)
    energy, with duty 1 for clock-related groups, the ``when`` probability where given, else 0.5 (modern
    OpenSTA weights the arcs to sum to one instead, as this estimator does)."""

    rise_pj: np.ndarray
    fall_pj: np.ndarray
    clock_pj_per_cycle: float
    sta_pj: np.ndarray
    sta_clock_pj_per_cycle: float
    leakage_nw: float


def _group_energy(arc: dict[str, Any], slew: float, load: float) -> tuple[float, float]:
    rise = _interpolate(arc["rise_power"], slew, load) if "rise_power" in arc else 0.0
    fall = _interpolate(arc["fall_power"], slew, load) if "fall_power" in arc else 0.0
    return rise, fall


def net_energies(connectivity: dict[str, Any], netlist: CompiledNetlist, data: dict[str, Any],
                 library_name: str) -> NetEnergy:
    """Energy per transition of every net of a compiled netlist, from the library's tables at the stated
    input slew and each net's load (fanout pin capacitances, plus the stated load on output ports)."""
    library = get_library(library_name)
    cells_data = data["cells"]
    unit = energy_unit_pj(data)
    cap_scale = data["capacitance_scale_pf"]
    voltage = data["voltage"]
    slew = library.input_slew_ns
    order = netlist.bit_index
    nets = netlist.net_count
    load_pf = np.zeros(nets)
    fanout = np.zeros(nets, int)
    for port in netlist.outputs.values():
        for net in port:
            if net >= 0:
                load_pf[net] += library.output_load_pf
                fanout[net] += 1
    clock_bits = connectivity["ports"].get(CLOCK_PORT, {}).get("bits", [])
    clock_net = order.get(clock_bits[0]) if clock_bits else None
    rise_pj, fall_pj, sta_pj = np.zeros(nets), np.zeros(nets), np.zeros(nets)
    clock_pj = sta_clock_pj = leakage = 0.0
    outputs_of: list[tuple[int, dict[str, Any], list[str], dict[str, Any]]] = []
    for cell_type, pins in connectivity["cells"]:
        cell = cells_data[cell_type]
        leakage += cell["leakage"]
        pin_names = list(cell["pins"])
        for pin, bit in pins.items():
            info = cell["pins"].get(pin, {})
            if bit in ("0", "1", "x", "z"):
                continue
            net = order[bit]
            if info.get("direction") == "output":
                outputs_of.append((net, info, pin_names, pins))
                continue
            load_pf[net] += info.get("capacitance", 0.0) * cap_scale
            fanout[net] += 1
            groups = [arc for arc in info.get("internal_power", []) if not arc["related_pin"]]
            unconditional = sum(1 for arc in groups if not arc["when"]) or 1
            is_clock = net == clock_net
            for arc in groups:
                rise, fall = (value * unit for value in _group_energy(arc, slew, 0.0))
                probability = when_probability(arc["when"], pin_names)
                weight = probability if arc["when"] else 1.0 / unconditional
                sta_duty = probability if arc["when"] else (1.0 if is_clock else 0.5)
                if is_clock:
                    clock_pj += weight * (rise + fall)
                    sta_clock_pj += 2 * sta_duty * (rise + fall)  # density 2 per cycle
                else:
                    rise_pj[net] += weight * rise
                    fall_pj[net] += weight * fall
                    sta_pj[net] += sta_duty * (rise + fall)
    load_pf += [wire_capacitance_pf(data, count) for count in fanout]
    for net, info, pin_names, pins in outputs_of:
        arcs = info.get("internal_power", [])
        load = load_pf[net] / cap_scale
        energies = [tuple(value * unit for value in _group_energy(arc, slew, load)) for arc in arcs]
        if energies:
            rise_pj[net] += float(np.mean([rise for rise, _ in energies]))
            fall_pj[net] += float(np.mean([fall for _, fall in energies]))
        for arc, (rise, fall) in zip(arcs, energies):
            related = pins.get(arc["related_pin"])
            clock_related = related is not None and order.get(related) == clock_net
            duty = when_probability(arc["when"], pin_names) if arc["when"] else (1.0 if clock_related else 0.5)
            sta_pj[net] += duty * (rise + fall)
    switching = 0.5 * load_pf * voltage**2  # pF·V² = pJ per transition
    for port in netlist.inputs.values():  # charged by the operand drivers outside the unit (as in OpenSTA)
        for net in port:
            if net >= 0:
                switching[net] = 0.0
    if clock_net is not None:
        clock_pj += 2 * switching[clock_net]
        sta_clock_pj += 2 * switching[clock_net]
        for array in (rise_pj, fall_pj, sta_pj, switching):
            array[clock_net] = 0.0
    return NetEnergy(rise_pj + switching, fall_pj + switching, clock_pj, sta_pj + switching, sta_clock_pj,
                     leakage * leakage_unit_nw(data))


def energy_per_cycle(energies: NetEnergy, activity: Activity | None, period_ns: float, *,
                     uniform_activity: float | None = None, sta_accounting: bool = False) -> dict[str, float]:
    """pJ per cycle and per lane (one MAC): dynamic from simulated toggles (or ``uniform_activity``
    transitions per cycle on every net, half rising; ``sta_accounting`` for the 2019 OpenSTA's sums), the
    clock, and leakage over ``period_ns``."""
    clock_pj = energies.clock_pj_per_cycle
    if uniform_activity is not None and sta_accounting:
        data_pj = float(energies.sta_pj.sum() * uniform_activity)
        clock_pj = energies.sta_clock_pj_per_cycle
    elif uniform_activity is not None:
        data_pj = float(((energies.rise_pj + energies.fall_pj) / 2).sum() * uniform_activity)
    else:
        total = float(energies.rise_pj @ activity.rises + energies.fall_pj @ activity.falls)
        data_pj = total / activity.macs
    leakage_pj = energies.leakage_nw * period_ns * 1e-6  # nW·ns = 1e-18 J = 1e-6 pJ
    return {
        "dynamic_pj": data_pj,
        "clock_pj": float(clock_pj),
        "leakage_pj": leakage_pj,
        "total_pj": float(data_pj + clock_pj + leakage_pj),
    }
