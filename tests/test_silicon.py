"""Standard-cell mapping, OpenSTA timing and FPGA place and route on a small hand-written MAC.

Oracles independent of the code under test: Yosys's own ``stat -liberty`` area against the sum of cell areas
read by hwmodel's Liberty reader, cell values copied from the .lib text, OpenSTA's path arithmetic redone
from its printed report, and the nextpnr report's own counts.
"""

from __future__ import annotations

import argparse
import shutil

import pytest

from hwmodel.execution.cache import ResultCache
from hwmodel.cli.synth import parse_targets
from hwmodel.synthesis.flows import opensta
from hwmodel.synthesis.flows.libraries import extract_library, get_library, library_data, parse_liberty
from hwmodel.synthesis.flows.liberty import MappingJob, area_report
from hwmodel.synthesis.flows.opensta import StaError, TimingJob, ToolMissing, parse_sta_log, timing_report
from hwmodel.synthesis.flows.targets import asic_reports
from hwmodel.synthesis.synth import Design
from lba_core import ConfigError

from test_synth import TOY_BLOCKS, toy_verilog

needs_sta = pytest.mark.skipif(shutil.which("sta") is None, reason="OpenSTA (Debian package opensta) missing")

TINY_LIB = r"""
/* a comment */
library (tiny) {
  time_unit : "1ns"; leakage_power_unit : "1nW"; capacitive_load_unit (1, ff); nom_voltage : 1.1;
  power_lut_template (p2) { variable_1 : input_transition_time; variable_2 : total_output_net_capacitance;
    index_1 ("0.1, 0.2"); index_2 ("1, 2"); }
  cell (NAND2) { area : 0.798; cell_leakage_power : 17.39;
    pin (A) { direction : input; capacitance : 1.6; }
    pin (B) { direction : input; capacitance : 1.7; }
    pin (Y) { direction : output; function : "!(A & B)";
      internal_power () { related_pin : "A";
        rise_power (p2) { values ("1, 2", \
                                  "3, 4"); }
        fall_power (p2) { index_1 ("0.5, 0.6"); index_2 ("5, 6"); values ("5, 6", "7, 8"); } } } }
  cell (DFF) { area : 4.5; ff (IQ, IQN) { next_state : "D"; clocked_on : "CK"; }
    pin (D) { direction : input; capacitance : 1.1; } pin (CK) { direction : input; clock : true; capacitance : 0.9; }
    pin (Q) { direction : output; function : "IQ"; } }
}
"""


def test_liberty_reader_on_a_tiny_library():
    data = extract_library(TINY_LIB)
    assert data["voltage"] == 1.1 and data["capacitance_scale_pf"] == 1e-3
    nand = data["cells"]["NAND2"]
    assert nand["area"] == 0.798 and nand["leakage"] == 17.39
    assert nand["pins"]["A"]["capacitance"] == 1.6 and nand["pins"]["Y"]["function"] == "!(A & B)"
    (arc,) = nand["pins"]["Y"]["internal_power"]
    assert arc["related_pin"] == "A"
    # The template's indices apply where a table has none; a table's own indices win.
    assert arc["rise_power"]["index_1"] == [0.1, 0.2] and arc["rise_power"]["values"] == [1, 2, 3, 4]
    assert arc["fall_power"]["index_2"] == [5, 6]
    assert data["cells"]["DFF"]["ff"] == {"state": ["IQ", "IQN"], "clocked_on": "CK", "next_state": "D"}
    assert data["cells"]["DFF"]["pins"]["CK"]["clock"] is True
    with pytest.raises(ValueError, match="no library group"):
        parse_liberty("cell (x) { }")


def test_vendored_libraries_read_with_values_from_their_text():
    sky = library_data("sky130")["cells"]["sky130_fd_sc_hd__nand2_1"]
    assert sky["area"] == 3.7536 and sky["leakage"] == pytest.approx(0.00211796)
    assert sky["pins"]["A"]["capacitance"] == 0.002315 and sky["pins"]["Y"]["function"] == "(!A) | (!B)"
    nangate = library_data("nangate45")["cells"]["NAND2_X1"]
    assert nangate["area"] == 0.798 and nangate["leakage"] == pytest.approx(17.39336)
    with pytest.raises(ValueError, match="known: sky130, nangate45"):
        get_library("tsmc7")


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(argparse.ArgumentTypeError, match="known targets: .*sky130.*nangate45"):
        parse_targets("sky130,gf180")
    assert parse_targets("sky130,nangate45,ice40,ecp5") == ("sky130", "nangate45", "ice40", "ecp5")


def test_minilm_operands_are_refused_before_work_without_their_extra_or_a_library(monkeypatch):
    import lba_train.minilm

    from hwmodel.cli.synth import stream_spec_from_args
    from hwmodel.synthesis.flows.operands import StreamSpec

    args = argparse.Namespace(operands="minilm", target=("generic",))
    with pytest.raises(ConfigError, match="--operands minilm has no effect without a standard-cell target"):
        stream_spec_from_args(args)
    monkeypatch.setattr(lba_train.minilm, "extra_missing", lambda: "module 'transformers' is not installed; pip install '.[transformers]'")
    with pytest.raises(ConfigError, match=r"--operands minilm: .*pip install '\.\[transformers\]'"):
        stream_spec_from_args(argparse.Namespace(operands="minilm", target=("sky130",)))
    assert stream_spec_from_args(argparse.Namespace(operands="resnet", target=("sky130",))) == StreamSpec()


def test_sta_error_lines_fail_although_sta_exits_zero():
    with pytest.raises(StaError, match="cannot find"):
        parse_sta_log("Error: netlist.v, line 3 cannot find module foo\n")


def test_missing_sta_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(opensta.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissing, match="opensta"):
        opensta.sta_executable()


@needs_sta
@pytest.mark.parametrize("library", ["sky130", "nangate45"])
def test_mapping_area_leakage_and_timing_of_a_small_mac(library, tmp_path):
    verilog = toy_verilog(4)
    cache = ResultCache(tmp_path)
    designs = [{"fmaq": Design("fmaq", verilog, verilog, TOY_BLOCKS), "mac": Design("mac", verilog, verilog, TOY_BLOCKS)}]
    (report,) = asic_reports(designs, [library], cache=cache, workers=2, progress=False)
    data = library_data(library, cache)["cells"]
    for top in ("fmaq", "mac"):
        figures = report[top][library]
        assert figures["recipe"] == "area" and set(figures["recipes"]) == {"area", "delay"}
        counts = figures["cells_by_type"]
        # Yosys's stat -liberty area against the cell areas this project's reader took from the same .lib.
        assert figures["area_um2"] == pytest.approx(sum(n * data[c]["area"] for c, n in counts.items()), rel=1e-6)
        assert figures["leakage_nw"] == pytest.approx(sum(n * data[c]["leakage"] for c, n in counts.items())
                                                      * (1.0 if library == "sky130" else 1.0), rel=1e-3)
        assert sum(block["area_um2"] for block in figures["blocks"].values()) == pytest.approx(
            figures["area_um2"], rel=0.05)
    mac = report["mac"][library]
    assert mac["flops"] == 8
    flop_area = sum(n * data[c]["area"] for c, n in mac["cells_by_type"].items() if data[c]["ff"])
    assert mac["sequential_area_um2"] == pytest.approx(flop_area, rel=1e-6)
    assert mac["period_ns"] == max(mac["reg_to_reg_ns"], mac["input_to_reg_ns"])
    assert mac["fmax_mhz"] == pytest.approx(1000 / mac["period_ns"], abs=0.01)
    path = mac["reg_to_reg_path"]
    assert path["delay_ns"] == pytest.approx(path["arrival_ns"] + path["setup_ns"], abs=1e-3)
    assert path["setup_ns"] > 0
    assert report["fmaq"][library]["delay_ns"] > 0
    # A delay-driven mapping is not slower than the area-oriented one.
    assert mac["recipes"]["delay"]["period_ns"] <= mac["recipes"]["area"]["period_ns"] * 1.02


@needs_sta
def test_broken_netlist_is_a_sta_failure(tmp_path):
    job = TimingJob("sky130", "mac", "module mac(input clk); nosuchcell u1 (.A(clk)); endmodule\n", True)
    with pytest.raises(StaError):
        timing_report(job.run(), "sky130", True)


def test_signed_declarations_are_dropped_for_opensta():
    netlist = "module m(a);\n  input signed [3:0] a;\n  wire signed [7:0] addend__exp;\n  wire signedness;\nendmodule\n"
    assert opensta.unsigned_netlist(netlist) == (
        "module m(a);\n  input [3:0] a;\n  wire [7:0] addend__exp;\n  wire signedness;\nendmodule\n")
