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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .libraries import get_library
from .netlist_sim import compile_netlist, simulate
from .opensta import UNIFORM_ACTIVITY, UNIFORM_POWER_PERIOD_NS
from .power import energy_per_cycle, net_energies


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
