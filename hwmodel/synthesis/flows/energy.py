"""Energy per MAC from switching activity: a gate-level simulation of the mapped netlist, toggles per net, and
the library's pin capacitances, internal-power tables and leakage.

Simulation. The mapped netlist (hwmodel.synthesis.flows.liberty's compact connectivity) is evaluated cycle by cycle
from the Boolean ``function`` and ``ff`` groups of the same .lib the mapper used, zero delay, many
independent MAC units (lanes) at once as NumPy Boolean vectors. This is chosen over Icarus/Verilator with
vendor cell models because it needs no cell models (NanGate ships none here), reads no VCD, and is checked
against the arithmetic contract directly: the simulated ``acc`` outputs must equal the exact reference of
lba_core for every dot product (tests/test_energy.py). Zero delay sees no glitches, so the dynamic energy is a
lower bound.

Energy model, per cycle (library units converted: pF·V² = pJ):
- switching: every transition of a net charges or discharges its load, ½·C·V², where C is the sum of the
  input-pin capacitances it drives plus the library's default wire-load capacitance for its fanout (plus the
  stated output load on ports);
- internal: every output-pin transition costs the cell's internal-power table (rising or falling), averaged
  over its timing arcs, at the stated input slew and the net's load; every input-pin transition costs that
  pin's own internal-power table at the stated slew;
- the clock: it toggles twice every cycle, with its pin internal power and the clock net's switching energy,
  whether or not the register loads (no clock gating);
- leakage: the cells' ``cell_leakage_power`` over the clock period.

The uniform mode gives every net the same activity (transitions per cycle) instead of simulated toggles: it is
what OpenSTA's ``set_power_activity -global`` computes, and the estimator is validated against its
``report_power`` in that mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .libraries import energy_unit_pj, get_library, leakage_unit_nw, wire_capacitance_pf
from .opensta import UNIFORM_ACTIVITY, UNIFORM_POWER_PERIOD_NS

CLOCK_PORT = "clk"
RESET_PORT = "rst"


class NetlistError(ValueError):
    """The netlist uses a cell this simulator cannot evaluate (latch, unknown function)."""


# --------------------------------------------------------------------------------------------- functions
_FUNCTION_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_\[\]]*|[01]|[!'()&|^*+])")


def function_to_python(text: str, variables: dict[str, str]) -> str:
    """A Liberty Boolean ``function`` as a Python expression over NumPy Boolean arrays, pins renamed by
    ``variables``. Precedence: ``!`` and postfix ``'``, then AND (``&``, ``*`` or juxtaposition), then
    ``^``, then OR (``|``, ``+``)."""
    tokens = _FUNCTION_TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise NetlistError(f"cannot read Liberty function {text!r}")
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def primary() -> str:
        token = take()
        if token == "!":
            return f"(~{primary()})"
        if token == "(":
            inner = disjunction()
            if take() != ")":
                raise NetlistError(f"unbalanced parentheses in {text!r}")
            result = f"({inner})"
        elif token in ("0", "1"):
            result = "ZERO" if token == "0" else "ONE"
        elif token in variables:
            result = variables[token]
        else:
            raise NetlistError(f"unknown pin {token!r} in function {text!r}")
        while peek() == "'":
            take()
            result = f"(~{result})"
        return result

    def conjunction() -> str:
        terms = [primary()]
        while peek() in ("&", "*") or (peek() not in (None, "|", "+", "^", ")")):
            if peek() in ("&", "*"):
                take()
            terms.append(primary())
        return " & ".join(terms) if len(terms) > 1 else terms[0]

    def exclusive() -> str:
        terms = [conjunction()]
        while peek() == "^":
            take()
            terms.append(conjunction())
        return " ^ ".join(f"({term})" for term in terms) if len(terms) > 1 else terms[0]

    def disjunction() -> str:
        terms = [exclusive()]
        while peek() in ("|", "+"):
            take()
            terms.append(exclusive())
        return " | ".join(f"({term})" for term in terms) if len(terms) > 1 else terms[0]

    result = disjunction()
    if position != len(tokens):
        raise NetlistError(f"trailing tokens in function {text!r}")
    return result


# --------------------------------------------------------------------------------------------- netlist
@dataclass
class CompiledNetlist:
    """A mapped netlist ready to simulate: nets numbered 0..n-1, one Python function per cycle phase."""

    net_count: int
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]
    comb_source: str
    flop_source: str
    driven_nets: list[int]
    flop_count: int
    bit_index: dict[Any, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.comb = _compile(self.comb_source, "comb")
        self.flop = _compile(self.flop_source, "flop")


def _compile(source: str, name: str):
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<netlist {name}>", "exec"), namespace)  # generated from the netlist, not user input
    return namespace[name]


def compile_netlist(connectivity: dict[str, Any], cells_data: dict[str, Any]) -> CompiledNetlist:
    """Order the cells, translate their functions and return the two phases of a cycle: ``comb(v)``
    evaluates every combinational output from inputs and flop states; ``flop(v)`` computes the next states."""
    bit_index: dict[Any, int] = {}

    def net(bit: Any) -> str:
        if bit in ("0", "1", "x", "z"):
            return "ONE" if bit == "1" else "ZERO"
        if bit not in bit_index:
            bit_index[bit] = len(bit_index)
        return f"v[{bit_index[bit]}]"

    inputs, outputs = {}, {}
    for name, port in connectivity["ports"].items():
        for bit in port["bits"]:
            net(bit)
        target = inputs if port["direction"] == "input" else outputs
        target[name] = [bit_index.get(bit, -1) for bit in port["bits"]]
    combinational: list[tuple[list[str], list[str], str]] = []  # (input nets, output nets, statements)
    flop_lines, state_lines = [], []
    driven: set[int] = set()
    for cell_type, pins in connectivity["cells"]:
        cell = cells_data.get(cell_type)
        if cell is None:
            raise NetlistError(f"cell {cell_type} is not in the library")
        if cell["latch"]:
            raise NetlistError(f"cell {cell_type} is a latch; the activity simulator handles flip-flops only")
        variables = {pin: net(bit) for pin, bit in pins.items()}
        out_pins = [pin for pin, info in cell["pins"].items() if info["direction"] == "output" and pin in pins]
        if cell["ff"]:
            ff = cell["ff"]
            state, state_n = ff["state"][0], ff["state"][1] if len(ff["state"]) > 1 else None
            key = len(flop_lines)
            next_state = function_to_python(ff["next_state"], variables)
            if "clear" in ff:
                next_state = f"({next_state}) & ~({function_to_python(ff['clear'], variables)})"
            if "preset" in ff:
                next_state = f"({next_state}) | ({function_to_python(ff['preset'], variables)})"
            flop_lines.append(f"    s[{key}] = {next_state}")
            state_vars = {state: f"s[{key}]", **({state_n: f"(~s[{key}])"} if state_n else {})}
            for pin in out_pins:
                function = cell["pins"][pin]["function"]
                state_lines.append(f"    {variables[pin]} = {function_to_python(function, state_vars)}")
                driven.add(bit_index[pins[pin]])
            continue
        statements = []
        for pin in out_pins:
            function = cell["pins"][pin].get("function")
            if function is None:
                raise NetlistError(f"output {pin} of cell {cell_type} has no function")
            statements.append(f"    {variables[pin]} = {function_to_python(function, variables)}")
            driven.add(bit_index[pins[pin]])
        in_nets = [variables[pin] for pin, info in cell["pins"].items()
                   if info["direction"] == "input" and pin in pins]
        combinational.append((in_nets, [variables[pin] for pin in out_pins], "\n".join(statements)))
    ordered = _topological(combinational)
    comb_source = "def comb(v, s, ZERO, ONE):\n" + "\n".join(state_lines + ordered + ["    return v"]) + "\n"
    flop_source = "def flop(v, s, ZERO, ONE):\n" + "\n".join(flop_lines + ["    return s"]) + "\n"
    return CompiledNetlist(len(bit_index), inputs, outputs, comb_source, flop_source, sorted(driven),
                           len(flop_lines), bit_index)


def _topological(cells: list[tuple[list[str], list[str], str]]) -> list[str]:
    producer = {}
    for index, (_, outs, _) in enumerate(cells):
        for out in outs:
            producer[out] = index
    order, state = [], [0] * len(cells)  # 0 new, 1 visiting, 2 done

    def visit(index: int) -> None:
        stack = [(index, iter(cells[index][0]))]
        state[index] = 1
        while stack:
            current, pending = stack[-1]
            for name in pending:
                child = producer.get(name)
                if child is not None and state[child] == 0:
                    state[child] = 1
                    stack.append((child, iter(cells[child][0])))
                    break
                if child is not None and state[child] == 1:
                    raise NetlistError("combinational loop in the mapped netlist")
            else:
                stack.pop()
                state[current] = 2
                order.append(cells[current][2])

    for index in range(len(cells)):
        if state[index] == 0:
            visit(index)
    return order


# --------------------------------------------------------------------------------------------- simulation
@dataclass
class Activity:
    """Simulated transitions: ``rises``/``falls`` per net over ``cycles`` cycles of ``lanes`` units, and the
    output port values of every cycle (after the clock edge for sequential outputs)."""

    rises: np.ndarray
    falls: np.ndarray
    cycles: int
    lanes: int
    outputs: dict[str, np.ndarray]

    @property
    def macs(self) -> int:
        return self.cycles * self.lanes


def _bits(values: np.ndarray, width: int) -> list[np.ndarray]:
    return [((values >> bit) & 1).astype(bool) for bit in range(width)]


def simulate(netlist: CompiledNetlist, stimulus: dict[str, np.ndarray], sequential: bool) -> Activity:
    """Run ``stimulus`` (port -> int array of shape (cycles, lanes)) through the netlist and count every
    net's transitions between consecutive cycles (the first cycle's settling is not counted). Output values
    are sampled after the cycle's clock edge (sequential) or after evaluation (combinational)."""
    cycles, lanes = next(iter(stimulus.values())).shape
    zero, one = np.zeros(lanes, bool), np.ones(lanes, bool)
    v = [zero] * netlist.net_count
    s: list[np.ndarray] = [zero] * max(netlist.flop_count, 1)
    rises = np.zeros(netlist.net_count, np.int64)
    falls = np.zeros(netlist.net_count, np.int64)
    driven = netlist.driven_nets + [net for bits in netlist.inputs.values() for net in bits if net >= 0]
    outputs = {name: np.zeros((cycles, lanes), np.int64) for name in netlist.outputs}
    previous = None
    for cycle in range(cycles):
        for name, nets in netlist.inputs.items():
            values = stimulus.get(name)
            bits = _bits(values[cycle], len(nets)) if values is not None else [zero] * len(nets)
            for net, bit in zip(nets, bits):
                if net >= 0:
                    v[net] = bit
        v = netlist.comb(v, s, zero, one)
        current = np.array([v[net] for net in driven])
        if previous is not None:
            rises_now = (current & ~previous).sum(axis=1)
            falls_now = (~current & previous).sum(axis=1)
            rises[driven] += rises_now
            falls[driven] += falls_now
        previous = current
        if sequential:
            s = netlist.flop(v, s, zero, one)
            v = netlist.comb(v, s, zero, one)
        for name, nets in netlist.outputs.items():
            word = np.zeros(lanes, np.int64)
            for bit, net in enumerate(nets):
                if net >= 0:
                    word |= v[net].astype(np.int64) << bit
            outputs[name][cycle] = word
    return Activity(rises, falls, cycles - 1, lanes, outputs)


# --------------------------------------------------------------------------------------------- energy
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


__all__ = ["Activity", "CompiledNetlist", "NetEnergy", "compile_netlist", "energy_per_cycle", "function_to_python",
           "net_energies", "simulate"]


# --------------------------------------------------------------------------------------------- jobs
#: Dot products of one layer run back to back on one simulated MAC unit (so a lane sees the clears between
#: dot products); the layer's sampled dot products are spread over lanes of this many each.
DOTS_PER_LANE = 3


def reference_accumulators(cfg, a_codes: np.ndarray, b_codes: np.ndarray) -> np.ndarray:
    """acc_in codes of each step of each dot product (rows), by the exact reference: +0, then each step's
    result. The FMAq alone is driven with these, as it sees them inside the MAC."""
    from lba_core import fmaq

    acc_in = np.zeros(a_codes.shape, np.int64)
    for row in range(a_codes.shape[0]):
        acc = cfg.acc.decode(0)
        for step in range(a_codes.shape[1]):
            acc_in[row, step] = cfg.acc.encode(acc)
            acc = fmaq(cfg.a_format.decode(int(a_codes[row, step])), cfg.b_format.decode(int(b_codes[row, step])),
                       acc, cfg).value
    return acc_in


def layer_stimulus(cfg, stream: dict[str, Any], sequential: bool) -> dict[str, np.ndarray]:
    """Stimulus (cycles, lanes) for one layer: DOTS_PER_LANE dot products back to back on each lane, with
    ``clear`` at the first product of each (MAC), or the reference accumulator as ``acc_in`` (FMAq)."""
    a = np.array(stream["a"], np.int64)
    b = np.array(stream["b"], np.int64)
    dots, length = a.shape
    lanes = max(1, dots // DOTS_PER_LANE)
    used = lanes * min(DOTS_PER_LANE, dots)
    per_lane = used // lanes

    def arrange(codes: np.ndarray) -> np.ndarray:  # (dots, length) -> (per_lane * length, lanes)
        return codes[:used].reshape(lanes, per_lane * length).T.copy()

    stimulus = {"a": arrange(a), "b": arrange(b)}
    if sequential:
        clear = np.zeros((per_lane, length), np.int64)
        clear[:, 0] = 1
        stimulus["clear"] = np.tile(clear.reshape(-1, 1), (1, lanes))
        stimulus["valid"] = np.ones_like(stimulus["a"])
        stimulus["rst"] = np.zeros_like(stimulus["a"])
    else:
        stimulus["acc_in"] = arrange(reference_accumulators(cfg, a[:used], b[:used]))
    return stimulus


@dataclass(frozen=True)
class EnergyJob:
    """Energy per MAC of one mapped design on real and on uniformly random operand streams."""

    library: str
    top: str
    config_json: str
    connectivity_json: str
    streams_json: str
    period_ns: float
    cache_root: str | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        from ...execution.cache import content_key
        from .libraries import get_library as library_of

        return content_key("energy", ENERGY_MODEL_VERSION, self.library, self.top, self.config_json,
                           self.connectivity_json, self.streams_json, repr(self.period_ns),
                           library_of(self.library).fingerprint())

    def run(self) -> dict[str, Any]:
        import json

        from lba_core import MacConfig

        from ...execution.cache import ResultCache
        from .libraries import library_data

        cfg = MacConfig.from_dict(json.loads(self.config_json))
        connectivity = json.loads(self.connectivity_json)
        streams = json.loads(self.streams_json)
        data = library_data(self.library, ResultCache(self.cache_root))
        netlist = compile_netlist(connectivity, data["cells"])
        energies = net_energies(connectivity, netlist, data, self.library)
        sequential = self.top == "mac"
        result: dict[str, Any] = {}
        for kind in ("real", "random"):
            layers = []
            for stream in streams[kind]:
                activity = simulate(netlist, layer_stimulus(cfg, stream, sequential), sequential)
                figures = energy_per_cycle(energies, activity, self.period_ns)
                layers.append({"layer": stream["layer"], "length": stream["length"],
                               "macs_per_image": stream["macs_per_image"], "simulated_macs": activity.macs,
                               **{name: round(value, 6) for name, value in figures.items()}})
            weights = np.array([layer["macs_per_image"] for layer in layers], float)
            per_mac = {name: float(np.dot(weights, [layer[name] for layer in layers]) / weights.sum())
                       for name in ("dynamic_pj", "clock_pj", "leakage_pj", "total_pj")}
            result[kind] = {"pj_per_mac": round(per_mac["total_pj"], 6),
                            "breakdown_pj": {name: round(value, 6) for name, value in per_mac.items()},
                            "pj_per_image": round(float(np.dot(weights, [layer["total_pj"] for layer in layers])), 3),
                            "layers": layers}
        uniform = energy_per_cycle(energies, None, UNIFORM_POWER_PERIOD_NS, uniform_activity=UNIFORM_ACTIVITY,
                                   sta_accounting=True)
        return {
            "energy_pj_per_mac": result["real"]["pj_per_mac"],
            "energy_pj_per_mac_random": result["random"]["pj_per_mac"],
            "energy_pj_per_inference": result["real"]["pj_per_image"],
            "energy_clock_mhz": round(1000.0 / self.period_ns, 2),
            "energy_real": result["real"],
            "energy_random": result["random"],
            "uniform_sta_accounting_pj_per_cycle": round(uniform["total_pj"], 6),
            "uniform_activity": UNIFORM_ACTIVITY,
            "uniform_period_ns": UNIFORM_POWER_PERIOD_NS,
        }


ENERGY_MODEL_VERSION = "1"


def energy_assumptions(library_name: str) -> str:
    library = get_library(library_name)
    return (f"{library.corner}; zero-delay gate-level simulation of the mapped netlist (no glitches: a lower "
            f"bound on dynamic energy); input slew {library.input_slew_ns} ns on every pin; loads = fanout pin "
            f"capacitances + the library's default wire-load model, {library.output_load_pf} pF on outputs; "
            "the clock toggles every cycle (no clock gating) and its pins' internal power and net switching "
            "are counted every cycle; operand drivers' switching of the input nets is not counted (as in "
            "OpenSTA); leakage = the cells' cell_leakage_power over the clock period (the MAC's own minimum "
            "period); per-layer figures weighted by each layer's MACs per image")
