"""Energy per MAC of the FDPA unit on random operands: the gate-level activity simulation of the MAC's energy
flow (hwmodel.synthesis.flows.energy: zero delay, the library's pin capacitances, internal-power tables and
leakage) driving the unit's own ports.

Stimulus: ``lanes`` independent chains of ``groups`` FDPA steps, one group per cycle; every a_i and b_i a
uniformly random code of its format (as the MAC's random streams, hwmodel.synthesis.flows.operands), and ``c``
the previous step's result (the chain over K, by lba_core.fused_reference.fdpa; +0 for the first step). The
simulated ``out`` codes are checked against the same reference: a mismatch is an error, so an energy figure
always comes from a netlist that computes the contract. Energy per MAC = energy per cycle / L (the unit does L
products per cycle), at the clock the caller gives (its OpenSTA delay). Real operands (MiniLM activations) are
not driven here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lba_core import MacConfig

from .flows.libraries import library_data
from .flows.netlist_sim import compile_netlist, simulate
from .flows.power import energy_per_cycle, net_energies

#: An expected output the check skips (the reference overflowed to Inf; its code is the unit's business).
UNCHECKED = -1


class FdpaEnergyMismatch(RuntimeError):
    """The simulated netlist's outputs differ from the reference: the energy would describe another circuit."""


@dataclass(frozen=True)
class RandomChains:
    """Operand codes (cycles, lanes, L) and the chained addend and expected output codes (cycles, lanes);
    an expected code UNCHECKED marks a step whose reference result overflowed (the next step restarts at +0)."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    out: np.ndarray


def random_chains(cfg: MacConfig, groups: int, lanes: int, seed: int = 1) -> RandomChains:
    """``lanes`` chains of ``groups`` steps of uniformly random operand codes, c chained by the reference."""
    from lba_core.fused_reference import fdpa
    from rtl.fdpa_plan import plan_fused

    plan = plan_fused(cfg)
    rng = np.random.default_rng(seed)
    shape = (groups, lanes, plan.group)
    a = rng.integers(0, 1 << plan.a_format.width, shape)
    b = rng.integers(0, 1 << plan.b_format.width, shape)
    c = np.zeros((groups, lanes), np.int64)
    out = np.zeros((groups, lanes), np.int64)
    for lane in range(lanes):
        previous = 0
        for step in range(groups):
            c[step, lane] = previous
            values_a = [plan.a_format.decode(int(code)) for code in a[step, lane]]
            values_b = [plan.b_format.decode(int(code)) for code in b[step, lane]]
            result = fdpa(values_a, values_b, plan.output.decode(previous), cfg)
            if not math.isfinite(result):  # overflow to Inf (tiny output formats): not checked, chain restarts
                out[step, lane], previous = UNCHECKED, 0
                continue
            previous = plan.output.encode(result) if result != 0 else 0  # the unit's zero is +0
            out[step, lane] = previous
    return RandomChains(a, b, c, out)


def fdpa_energy(cfg: MacConfig, connectivity: dict[str, Any], library: str, period_ns: float, *,
                groups: int = 8, lanes: int = 16, seed: int = 1, cache=None) -> dict[str, Any]:
    """pJ per MAC of the mapped combinational unit ``connectivity`` (hwmodel.synthesis.flows.liberty's compact
    netlist) on :func:`random_chains`, clocked at ``period_ns``; raises FdpaEnergyMismatch if any simulated
    output differs from the reference."""
    from rtl.fdpa_plan import plan_fused

    plan = plan_fused(cfg)
    chains = random_chains(cfg, groups, lanes, seed)
    stimulus = {f"a_{i}": chains.a[:, :, i] for i in range(plan.group)}
    stimulus.update({f"b_{i}": chains.b[:, :, i] for i in range(plan.group)})
    stimulus["c"] = chains.c
    data = library_data(library, cache)
    netlist = compile_netlist(connectivity, data["cells"])
    activity = simulate(netlist, stimulus, False)
    checked = chains.out != UNCHECKED
    mismatches = int((activity.outputs["out"] != chains.out)[checked].sum())
    if mismatches:
        raise FdpaEnergyMismatch(f"{cfg.name} on {library}: {mismatches} of {int(checked.sum())} simulated outputs "
                                 "differ from lba_core.fused_reference.fdpa")
    figures = energy_per_cycle(net_energies(connectivity, netlist, data, library), activity, period_ns)
    return {
        "energy_pj_per_mac_random": round(figures["total_pj"] / plan.group, 6),
        "energy_pj_per_cycle_random": round(figures["total_pj"], 6),
        "energy_breakdown_pj_per_cycle": {name: round(value, 6) for name, value in figures.items()},
        "energy_clock_mhz": round(1000.0 / period_ns, 2),
        "energy_simulated_groups": int(chains.out.size),
        "energy_checked_outputs": int(checked.sum()),
        "energy_operands": f"uniformly random {plan.a_format.name} x {plan.b_format.name} codes, c chained "
                           f"({lanes} chains of {groups} groups, seed {seed})",
    }
