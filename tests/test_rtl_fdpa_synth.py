"""``hwmodel synth`` of the FDPA unit (hwmodel.synthesis.fdpa_synth): a small unit through the flat and the
stitched per-block flow (hwmodel.synthesis.stitched), the flow choice, and the errors raised before any work."""

from __future__ import annotations

import pytest

from lba_core import ConfigError, MacConfig
from hwmodel.execution.cache import ResultCache
from hwmodel.synthesis.fdpa_synth import FLAT_MAX_GROUP, choose_flow, fdpa_design, synthesize_fdpa
from hwmodel.synthesis.stitched import stitched_generic_script, stitched_mapping_script
from rtl.fdpa_export import FDPA_BLOCK_NAMES

SMALL = MacConfig(input="e2m1_sub", weight="e3m1", acc="fdpa2f4-e3m2_sub-rne")


@pytest.mark.slow  # two Yosys runs (about 30 s on the shared machine): make fused-cosim
def test_generic_synthesis_and_blocks():
    result = synthesize_fdpa(SMALL, ("generic",), cache=ResultCache(None), progress=False)
    report = result["fdpa"]
    assert report["gates"] > 0 and report["ge"] > 0 and report["flops"] == 0 and report["depth"] > 0
    assert set(report["blocks"]) <= {*FDPA_BLOCK_NAMES, "glue"}
    assert {"product_term", "term_aligner", "compressor_tree", "rounder"} <= set(report["blocks"])
    assert 0.5 < report["blocks_ge"] / report["ge"] < 2.0
    assert result["config"]["group"] == 2 and result["config"]["fraction_bits"] == 4


def test_pipelined_design_has_registers_in_its_block_map():
    design = fdpa_design(SMALL, pipeline=2)
    assert design.module_blocks["fdpa_aligned_register"] == "register"
    assert "always @(posedge clk)" in design.verilog


@pytest.mark.slow  # four Yosys runs and two OpenSTA runs (about 1 min on the shared machine): make fused-cosim
def test_stitched_flow_matches_the_flat_flows_blocks_and_times_a_pipelined_unit():
    cache = ResultCache(None)
    flat = synthesize_fdpa(SMALL, ("generic",), cache=cache, progress=False, flow="flat")
    stitched = synthesize_fdpa(SMALL, ("generic", "sky130"), cache=cache, progress=False, flow="stitched",
                               recipes=("area",))
    report = stitched["fdpa"]
    assert stitched["config"]["synthesis_flow"] == report["synthesis_flow"] == "stitched"
    # The same per-module synthesis as the flat flow's per-block run: identical blocks.
    assert report["blocks"] == flat["fdpa"]["blocks"]
    # Stitching only drops cells that drive nothing: never more cells than the blocks hold, and few fewer.
    assert 0.0 <= report["blocks_overhead"] < 0.05
    assert report["depth"] > 0 and report["transistors"] > 0
    sky130 = report["sky130"]
    assert sky130["area_um2"] > 0 and sky130["delay_ns"] > 0 and sky130["synthesis_flow"] == "stitched"
    assert sum(block["area_um2"] for block in sky130["blocks"].values()) >= sky130["area_um2"] - 1e-6
    # The energy flow simulated the stitched netlist and found every output equal to the reference.
    assert sky130["energy_pj_per_mac_random"] > 0 and 0 < sky130["energy_checked_outputs"] <= 128  # no overflows checked
    assert "connectivity" not in sky130
    piped = synthesize_fdpa(SMALL, ("generic", "sky130"), cache=cache, progress=False, pipeline=2,
                            recipes=("area",))["fdpa"]
    assert piped["flops"] > 0 and piped["sky130"]["flops"] == piped["flops"]
    assert 0 < piped["sky130"]["period_ns"] < sky130["delay_ns"]


def test_flow_choice():
    assert choose_flow("auto", FLAT_MAX_GROUP, 0, ["sky130"]) == "flat"
    assert choose_flow("auto", FLAT_MAX_GROUP + 1, 0, []) == "stitched"
    assert choose_flow("auto", 2, 1, ["sky130"]) == "stitched"  # pipelined standard-cell timing
    assert choose_flow("auto", 2, 1, []) == "flat"
    assert choose_flow("flat", 32, 0, []) == "flat"


def test_stitched_scripts_map_per_module_then_flatten_without_optimizing():
    generic = stitched_generic_script("fdpa").splitlines()
    assert "synth -top fdpa" in generic and not any("-flatten" in line for line in generic)
    mapped_at = max(index for index, line in enumerate(generic) if line.startswith("abc "))
    after = generic[mapped_at + 1 :]
    assert "flatten" in after
    assert not any(line.startswith(("abc", "opt ", "opt_expr", "synth", "freduce", "share")) for line in after)
    liberty = stitched_mapping_script("sky130", "area", "fdpa")
    assert "-simple-lhs" in liberty and liberty.index("abc -liberty") < liberty.index("\nflatten\n")


def test_errors_before_work():
    with pytest.raises(ConfigError, match="--pipeline 1 with sky130"):
        synthesize_fdpa(SMALL, ("generic", "sky130"), pipeline=1, progress=False, flow="flat")
    with pytest.raises(ConfigError, match="--fdpa-flow"):
        synthesize_fdpa(SMALL, progress=False, flow="fast")
    with pytest.raises(ConfigError, match="recipe"):
        synthesize_fdpa(SMALL, ("generic", "sky130"), progress=False, recipes=("speed",))
    with pytest.raises(ConfigError, match="fused accumulator"):
        synthesize_fdpa(MacConfig(input="e4m3", acc="e4m7"), progress=False)


def test_cli_fdpa_flow_is_for_fused_accumulators_only(capsys):
    from hwmodel.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--in", "e4m3", "--acc", "e4m7", "--fdpa-flow", "flat", "--no-cache"])
    assert exit_info.value.code == 2
    assert "--fdpa-flow flat applies to a fused accumulator" in capsys.readouterr().err


@pytest.mark.slow  # export and one stitched Yosys run (about 20 s on the shared machine)
def test_cli_synth_fused_stitched_json(capsys):
    import json

    from hwmodel.cli.app import main

    argv = ["synth", "--in", "e2m1_sub", "--weight", "e3m1", "--acc", "fdpa2f4-e3m2_sub-rne", "--fdpa-flow",
            "stitched", "--no-cache", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["synthesis_flow"] == result["fdpa"]["synthesis_flow"] == "stitched"
    assert result["fdpa"]["ge"] > 0 and result["fdpa"]["blocks"]


def test_random_chains_feed_each_result_back_as_the_next_addend():
    import numpy as np

    from hwmodel.synthesis.fdpa_energy import UNCHECKED, random_chains

    chains = random_chains(SMALL, groups=4, lanes=3, seed=5)
    assert chains.a.shape == chains.b.shape == (4, 3, 2) and chains.c.shape == chains.out.shape == (4, 3)
    assert (chains.c[0] == 0).all()
    # The next addend is the previous result; after an overflow (UNCHECKED) the chain restarts at +0.
    assert (chains.c[1:] == np.where(chains.out[:-1] == UNCHECKED, 0, chains.out[:-1])).all()
    again = random_chains(SMALL, groups=4, lanes=3, seed=5)
    assert (again.out == chains.out).all() and (chains.out > 0).any()
