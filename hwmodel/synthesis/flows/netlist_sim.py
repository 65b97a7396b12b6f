"""Zero-delay, cycle-by-cycle simulation of a mapped netlist (Liberty ``function`` and ``ff`` groups), many
independent lanes at once as NumPy Boolean vectors; toggles per net for the power model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .liberty_functions import NetlistError, function_to_python


CLOCK_PORT = "clk"


RESET_PORT = "rst"


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
