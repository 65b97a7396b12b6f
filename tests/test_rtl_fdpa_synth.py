"""``hwmodel synth`` of the FDPA unit (hwmodel.synthesis.fdpa_synth): a small unit through the generic flow with
its per-block breakdown, and the errors raised before any work."""

from __future__ import annotations

import pytest

from lba_core import ConfigError, MacConfig
from hwmodel.execution.cache import ResultCache
from hwmodel.synthesis.fdpa_synth import fdpa_design, synthesize_fdpa
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


def test_errors_before_work():
    with pytest.raises(ConfigError, match="--pipeline 1 with sky130"):
        synthesize_fdpa(SMALL, ("generic", "sky130"), pipeline=1, progress=False)
    with pytest.raises(ConfigError, match="fused accumulator"):
        synthesize_fdpa(MacConfig(input="e4m3", acc="e4m7"), progress=False)
