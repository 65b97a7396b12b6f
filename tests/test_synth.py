"""The Yosys flow on small hand-written designs: figures against independent counts, blocks, cache, errors.

The oracles here share nothing with hwmodel.synthesis.synth's parsing: transistor counts use Yosys's published CMOS
cost per cell written out below, logic depth is a longest-path search over the JSON netlist, and block
totals are checked against a flattened count of the same cells.
"""

from __future__ import annotations

import json

import pytest

from hwmodel.execution.cache import ResultCache
from hwmodel.synthesis.synth import (
    Design,
    SynthesisError,
    YosysError,
    block_breakdown,
    cell_areas_ge,
    flow_script,
    synthesize_designs,
)
from rtl.yosys import run_yosys

# Transistors per CMOS cell as Yosys's kernel/cost.h counts them for `stat -tech cmos`.
CMOS_TRANSISTORS = {
    "NOT": 2, "NAND": 4, "NOR": 4, "AND": 6, "OR": 6, "ANDNOT": 6, "ORNOT": 6,
    "XOR": 12, "XNOR": 12, "MUX": 12, "DFF_P": 16,
}


def toy_verilog(width: int) -> str:
    """A miniature MAC: a multiplier and an adder as sub-modules, a registered accumulator with a clear."""
    return f"""
module multiplier(input [{width - 1}:0] a, input [{width - 1}:0] b, output [{2 * width - 1}:0] p);
  assign p = a * b;
endmodule
module adder(input [{2 * width - 1}:0] x, input [{2 * width - 1}:0] y, output [{2 * width - 1}:0] s);
  assign s = x + y;
endmodule
module fmaq(input [{width - 1}:0] a, input [{width - 1}:0] b, input [{2 * width - 1}:0] acc_in,
            output [{2 * width - 1}:0] acc_out);
  wire [{2 * width - 1}:0] p;
  multiplier mul(.a(a), .b(b), .p(p));
  adder add(.x(p), .y(acc_in), .s(acc_out));
endmodule
module mac(input clk, input rst, input valid, input clear, input [{width - 1}:0] a, input [{width - 1}:0] b,
           output reg [{2 * width - 1}:0] acc);
  wire [{2 * width - 1}:0] next;
  fmaq step(.a(a), .b(b), .acc_in(acc), .acc_out(next));
  always @(posedge clk) if (rst | clear) acc <= 0; else if (valid) acc <= next;
endmodule
"""


TOY_BLOCKS = {"mac": None, "fmaq": None, "multiplier": "multiplier", "adder": "adder"}


def toy_designs(width: int) -> list[Design]:
    text = toy_verilog(width)
    return [Design("fmaq", text, text, TOY_BLOCKS), Design("mac", text, text, TOY_BLOCKS)]


def netlist_depth(netlist: dict, top: str) -> int:
    """Longest chain of combinational cells from an input or flop output to an output or flop input."""
    cells = netlist["modules"][top]["cells"].values()
    driver = {}
    for cell in cells:
        for port, bits in cell["connections"].items():
            if cell["port_directions"][port] == "output":
                for bit in bits:
                    driver[bit] = cell
    memo: dict[int, int] = {}

    def depth_of(cell) -> int:
        if cell["type"].startswith("$_DFF"):
            return 0
        key = id(cell)
        if key not in memo:
            inputs = [bit for port, bits in cell["connections"].items()
                      if cell["port_directions"][port] == "input" for bit in bits]
            memo[key] = 1 + max((depth_of(driver[bit]) for bit in inputs if bit in driver), default=0)
        return memo[key]

    return max(depth_of(cell) for cell in cells)


@pytest.fixture
def cache(tmp_path) -> ResultCache:
    return ResultCache(tmp_path / "cache")


def test_generic_figures_match_independent_counts(tmp_path, cache, comparisons):
    designs = toy_designs(4)
    reports = synthesize_designs(designs, cache=cache, workers=2, progress=False)
    areas = cell_areas_ge()
    compared = 0
    for design, report in zip(designs, reports):
        # The same script plus a JSON netlist, for an independent depth and cell count.
        script = flow_script("generic", design.top) + "write_json netlist.json\n"
        work = run_yosys(script, {"design.v": design.verilog}, tmp_path / design.top)
        netlist = json.loads((work / "netlist.json").read_text())
        types = [cell["type"] for cell in netlist["modules"][design.top]["cells"].values()]
        assert report["gates"] == len(types)
        assert report["cells"] == {t.strip("$_"): types.count(t) for t in set(types)}
        assert report["flops"] == types.count("$_DFF_P_")
        assert report["transistors"] == sum(CMOS_TRANSISTORS[t.strip("$_")] for t in types)
        assert report["ge"] == pytest.approx(sum(areas[t] for t in types), abs=1e-3)
        assert report["depth"] == netlist_depth(netlist, design.top)
        compared += 6
    assert reports[1]["flops"] == 8  # the 8-bit accumulator register
    comparisons("toy fmaq/mac figures vs netlist", compared)


def test_blocks_cover_the_hierarchy(cache):
    report = synthesize_designs(toy_designs(4)[1:], cache=cache, progress=False)[0]
    assert set(report["blocks"]) == {"multiplier", "adder", "glue"}
    assert report["blocks"]["glue"]["gates"] >= 8  # the register and its enable/clear logic live in `mac`
    assert all(block["gates"] > 0 and block["ge"] > 0 for block in report["blocks"].values())
    assert report["blocks_ge"] == pytest.approx(sum(block["ge"] for block in report["blocks"].values()))
    assert report["blocks_overhead"] == pytest.approx(report["blocks_ge"] / report["ge"] - 1)


def test_a_module_outside_the_block_map_is_an_error():
    modules = {"mac": {"$_AND_": 1, "fmaq": 1}, "fmaq": {"multiplier": 1, "$_OR_": 2}, "multiplier": {"$_XOR_": 3}}
    with pytest.raises(SynthesisError, match=r"\['multiplier'\] of mac are not in the design's block map"):
        block_breakdown(modules, "mac", {"mac": None, "fmaq": None})
    cells = block_breakdown(modules, "mac", {"mac": None, "fmaq": None, "multiplier": "multiplier", "x": "adder"})
    assert cells == {"multiplier": {"$_XOR_": 3}, "adder": {}, "glue": {"$_AND_": 1, "$_OR_": 2}}


def test_hierarchical_design_needs_its_block_map():
    with pytest.raises(ValueError, match="module_blocks"):
        Design("mac", "module mac; endmodule", "module mac; endmodule")


def test_more_bits_never_cost_fewer_gates(cache):
    reports = synthesize_designs([Design("fmaq", toy_verilog(width)) for width in (2, 3, 4, 6)],
                                 cache=cache, workers=2, progress=False)
    ges = [report["ge"] for report in reports]
    assert ges == sorted(ges) and ges[0] < ges[-1]


def test_reproducible_without_cache():
    designs = toy_designs(3)[:1]
    first = synthesize_designs(designs, cache=ResultCache(None), progress=False)
    second = synthesize_designs(designs, cache=ResultCache(None), progress=False)
    assert first == second


def test_cache_hit_is_used_and_damage_is_redone(cache):
    designs = toy_designs(3)[:1]
    real = synthesize_designs(designs, cache=cache, progress=False)[0]
    entries = sorted(cache.root.rglob("*.json"))
    assert len(entries) == 2  # generic and blocks

    # A valid entry is trusted: plant a recognizable result and see it come back.
    generic_entry = next(path for path in entries if "transistors" in path.read_text())
    key = generic_entry.stem
    planted = dict(cache.get(key), depth=-1)
    cache.put(key, planted)
    assert synthesize_designs(designs, cache=cache, progress=False)[0]["depth"] == -1

    # A damaged entry (truncated, or edited so its checksum fails) is detected and recomputed.
    for damage in (lambda text: text[: len(text) // 2], lambda text: text.replace('"depth": -1', '"depth": 7')):
        generic_entry.write_text(damage(generic_entry.read_text()))
        before = cache.corrupt_entries
        again = synthesize_designs(designs, cache=cache, progress=False)[0]
        assert cache.corrupt_entries == before + 1
        assert again == real
        cache.put(key, planted)


def test_cache_rejects_foreign_and_wrong_schema_entries(tmp_path):
    cache = ResultCache(tmp_path)
    cache.put("ab" * 32, {"x": 1})
    assert cache.get("ab" * 32) == {"x": 1}
    foreign = cache.path("cd" * 32)
    foreign.parent.mkdir(parents=True)
    foreign.write_text(cache.path("ab" * 32).read_text())
    assert cache.get("cd" * 32) is None  # a valid envelope, but of another key
    cache.put("ef" * 32, {"x": 1})
    envelope = json.loads(cache.path("ef" * 32).read_text())
    cache.path("ef" * 32).write_text(json.dumps(dict(envelope, schema=0)))
    assert cache.get("ef" * 32) is None
    assert ResultCache(None).get("ab" * 32) is None


def test_yosys_failure_names_the_kept_log(tmp_path):
    with pytest.raises(YosysError) as caught:
        run_yosys("read_verilog design.v\nsynth -top no_such_module\n", {"design.v": toy_verilog(2)}, tmp_path)
    assert str(tmp_path / "yosys.log") in str(caught.value)
    assert caught.value.log_path.exists() and "no_such_module" in caught.value.log_path.read_text()


def test_yosys_failure_crosses_the_process_pool(cache):
    broken = Design("fmaq", "module fmaq(input a, output y); assign y = ; endmodule\n")
    with pytest.raises(YosysError) as caught:
        synthesize_designs([broken, toy_designs(2)[0]], cache=cache, workers=2, progress=False)
    assert "log kept at" in str(caught.value) and caught.value.log_path.exists()


def test_unknown_target_is_rejected_before_work():
    with pytest.raises(ValueError, match="unknown synthesis target"):
        synthesize_designs(toy_designs(2), ["asic"], progress=False)


def test_unknown_cell_has_no_area():
    from hwmodel.synthesis.synth import gate_equivalents

    with pytest.raises(SynthesisError, match="no area"):
        gate_equivalents({"$_AOI3_": 1}, cell_areas_ge())


def test_ice40_resources(cache):
    report = synthesize_designs(toy_designs(4)[1:], ["ice40"], blocks=False, cache=cache, progress=False)[0]
    ice40 = report["fpga"]["ice40"]
    assert ice40["lut"] > 0 and ice40["ff"] == 8
    assert ice40["lut"] + ice40["carry"] + ice40["ff"] + ice40["dsp"] == sum(ice40["cells"].values())


@pytest.mark.slow
def test_xilinx_and_ecp5_resources(cache):
    report = synthesize_designs(toy_designs(4)[1:], ["xilinx", "ecp5"], blocks=False, cache=cache,
                                workers=2, progress=False)[0]
    assert set(report["fpga"]) == {"xilinx", "xilinx_nodsp", "ecp5"}
    for flow in ("xilinx", "xilinx_nodsp", "ecp5"):
        assert report["fpga"][flow]["ff"] == 8 and report["fpga"][flow]["lut"] > 0
