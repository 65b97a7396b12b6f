"""The FDPA unit end to end (the sample in ``make test``; the full counts are tests/test_rtl_fdpa_cosim.py, ``make
fused-cosim``): configuration errors, the exported Verilog (ports, lint), and random and directed groups through
Amaranth's simulator and Icarus Verilog against lba_core's exact-rational reference and MMA-Sim."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from lba_core import ConfigError, MacConfig
from rtl.fdpa import FusedDotProductAdd
from rtl.fdpa_export import export_fdpa_verilog
from rtl.fdpa_plan import plan_fdpa, plan_fused
from support.fdpa_sim import simulate_fdpa_amaranth, simulate_fdpa_verilog
from support.fdpa_vectors import (
    FdpaVectors,
    directed_groups,
    mmasim_codes,
    mmasim_supports,
    random_groups,
    reference_codes,
)


def vectors_for(plan, random_count: int, directed_each: int, seed: int) -> FdpaVectors:
    return FdpaVectors.concat([random_groups(plan, random_count, seed), directed_groups(plan, directed_each, seed + 1)])


def check(label, cfg, vectors, got, comparisons):
    """Compare with lba_core.fdpa, and with MMA-Sim where it models the output mode; print both counts."""
    plan = plan_fused(cfg)
    expected = reference_codes(cfg, vectors)
    wrong = np.nonzero(expected != got)[0]
    comparisons(f"{label} vs lba_core.fdpa", len(vectors), len(wrong))
    assert len(wrong) == 0, [(int(i), hex(int(expected[i])), hex(int(got[i]))) for i in wrong[:5]]
    if mmasim_supports(plan):
        oracle = mmasim_codes(plan, vectors)
        bad = int(np.count_nonzero(oracle != got))
        comparisons(f"{label} vs MMA-Sim t_fdpa", len(vectors), bad)
        assert bad == 0


def test_configuration_errors():
    with pytest.raises(ConfigError, match="fused accumulator"):
        plan_fused(MacConfig(input="e4m3", acc="e4m7"))
    with pytest.raises(ConfigError, match="MacConfig"):
        plan_fused("hopper-fp8")
    with pytest.raises(ConfigError, match="group L"):
        plan_fdpa(group=65, fraction_bits=13, a_format="e4m3", b_format="e4m3", output="e8m13_sub", e_zero=-133)
    with pytest.raises(ConfigError, match="rounding"):
        plan_fdpa(group=4, fraction_bits=13, a_format="e4m3", b_format="e4m3", output="e8m13_sub", rounding="rn", e_zero=-133)
    plan = plan_fused(MacConfig(input="e4m3", acc="hopper-fp8"))
    with pytest.raises(ConfigError, match="--pipeline"):
        FusedDotProductAdd(plan, pipeline=5)
    with pytest.raises(ConfigError, match="FdpaPlan"):
        FusedDotProductAdd(MacConfig(input="e4m3", acc="hopper-fp8"))


def test_plan_widths_of_the_presets():
    plan = plan_fused(MacConfig(input="e4m3", weight="e5m2", acc="hopper-fp8"))
    assert (plan.group, plan.fraction_bits, plan.term_bits, plan.sum_bits, plan.e_zero) == (32, 13, 15, 22, -133)
    assert (plan.product_sig_bits, plan.addend_sig_bits, plan.output.width) == (7, 14, 22)
    plan = plan_fused(MacConfig(input="fp16", acc="hopper-fp16"))
    assert (plan.group, plan.term_bits, plan.sum_bits, plan.product_sig_bits) == (16, 27, 33, 22)


SMALL = [
    # general (L, F) points with small formats: RNE/RTZ, IEEE/saturating outputs, F below the products' bits
    MacConfig(input="e2m1_sub", weight="e3m1", acc="fdpa2f4-e3m2_sub-rne"),
    MacConfig(input="e3m2_sub", acc="fdpa4f3-e4m3_sub-rtz"),
    MacConfig(input="e3m2", weight="e2m1_sub", acc="fdpa3f6-e4m4-rne-sat"),
    MacConfig(input="e4m3_sub", weight="e5m2_sub", acc="fdpa8f11-e5m10_sub-rne"),
    MacConfig(input="e3m2_sub", weight="e2m1_sub", acc="fdpa1f5-e4m3_sub-rne"),  # L = 1
]


@pytest.mark.parametrize("cfg", SMALL, ids=lambda cfg: cfg.name)
def test_amaranth_general_points(cfg, comparisons):
    plan = plan_fused(cfg)
    vectors = vectors_for(plan, 100 if plan.group < 8 else 40, 4, seed=5)
    check(f"amaranth fdpa {cfg.name}", cfg, vectors, simulate_fdpa_amaranth(plan, vectors), comparisons)


def test_amaranth_hopper_fp8_pipelined(comparisons):
    """The preset at L = 32, mixed e4m3 x e5m2, with two pipeline registers (one group per cycle)."""
    cfg = MacConfig(input="e4m3", weight="e5m2", acc="hopper-fp8")
    plan = plan_fused(cfg)
    vectors = vectors_for(plan, 40, 3, seed=7)
    check(f"amaranth fdpa {cfg.name} pipeline=2", cfg, vectors, simulate_fdpa_amaranth(plan, vectors, 2), comparisons)


def test_export_ports_json_and_lint(tmp_path):
    cfg = MacConfig(input="e4m3", weight="e5m2", acc="fdpa4f13-e8m13_sub-rtz")
    paths = export_fdpa_verilog(cfg, tmp_path / "comb")
    info = json.loads(paths["config"].read_text())
    expected_ports = {**{f"a_{i}": 8 for i in range(4)}, **{f"b_{i}": 8 for i in range(4)}, "c": 22, "out": 22}
    assert info["ports"] == expected_ports and info["latency_cycles"] == 0 and info["top"] == "fdpa"
    text = paths["fdpa"].read_text()
    assert "module fdpa(" in text
    assert not [construct for construct in ("initial", "$display", "$finish", "#") if construct in text]
    piped = export_fdpa_verilog(cfg, tmp_path / "piped", pipeline=3, hierarchical=True)
    info = json.loads(piped["config"].read_text())
    assert info["ports"] == {"clk": 1, "rst": 1, **expected_ports} and info["latency_cycles"] == 3
    assert "module fdpa_aligned_register(" in piped["fdpa"].read_text()
    if shutil.which("verilator") is None:
        pytest.skip("verilator is not installed")
    for path, extra in ((paths["fdpa"], []), (piped["fdpa"], ["-Wno-DECLFILENAME"])):
        lint = ["verilator", "--lint-only", "-Wall", "-Wno-WIDTH", "-Wno-UNUSEDSIGNAL", *extra, "--top-module", "fdpa", path.name]
        result = subprocess.run(lint, cwd=path.parent, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("pipeline", [0, 4])
def test_icarus_sample(pipeline, tmp_path, comparisons):
    """The exported fdpa.v in a Verilog simulator (Icarus: no C++ build, about 2 s; Verilator runs the full counts
    in the slow run): L = 4, e4m3_sub x e5m2_sub, F = 13, e8m13 RZ (MMA-Sim's RZ-E8M13 mode), combinational and
    with four pipeline registers (one group per cycle)."""
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog is not installed")
    cfg = MacConfig(input="e4m3_sub", weight="e5m2_sub", acc="fdpa4f13-e8m13_sub-rtz")
    plan = plan_fused(cfg)
    vectors = vectors_for(plan, 1500, 20, seed=11 + pipeline)
    paths = export_fdpa_verilog(cfg, tmp_path / "rtl", pipeline=pipeline)
    got = simulate_fdpa_verilog(plan, paths["fdpa"], vectors, tmp_path / "sim", "iverilog", latency=pipeline)
    check(f"iverilog fdpa.v {cfg.name} pipeline={pipeline}", cfg, vectors, got, comparisons)


def test_hwmodel_verilog_emits_the_fdpa_unit(tmp_path, capsys):
    from hwmodel.cli.app import main

    assert main(["verilog", "--in", "e4m3", "--weight", "e5m2", "--acc", "hopper-fp8", "--pipeline", "1", "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == ["fdpa:", str(tmp_path / "fdpa.v"), "config:", str(tmp_path / "fdpa.json")]
    info = json.loads((tmp_path / "fdpa.json").read_text())
    assert info["acc"]["name"] == "hopper-fp8" and info["latency_cycles"] == 1 and info["ports"]["a_31"] == 8
