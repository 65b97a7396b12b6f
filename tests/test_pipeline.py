"""The pipelined MAC (``--pipeline N``): bit-exact to the contract after its documented latency, in Amaranth's
simulator and in Icarus on the exported Verilog; its option errors; its loop delay in static timing."""

from __future__ import annotations

import json
import shutil

import pytest

from lba_core import ConfigError, MacConfig
from rtl import PipelinedMAC, export_verilog
from support.simulators import simulate_mac, simulate_mac_amaranth
from support.vectors import schedule_dot_products

CONFIGS = [MacConfig(input="e4m3", acc="e4m7"), MacConfig(input="e5m2", acc="e5m6", product="e5m4")]
LENGTHS = [0, 1, 3, 5, 9, 1, 0, 7]


def amaranth_mac(cfg: MacConfig, stages: int, cycles) -> list[int]:
    dut = PipelinedMAC(cfg, stages)
    assert dut.latency == 1 + stages
    return simulate_mac_amaranth(cfg, cycles, dut)


@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
def test_pipelined_mac_in_amaranth(cfg, stages, comparisons):
    cycles, checks = schedule_dot_products(cfg, LENGTHS, seed=11, pipeline=stages)
    observed = amaranth_mac(cfg, stages, cycles)
    wrong = [(cycle, expected, observed[cycle]) for cycle, expected, _ in checks if observed[cycle] != expected]
    comparisons(f"amaranth pipelined mac {cfg.name} stages={stages}", len(checks), len(wrong))
    assert not wrong


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog (Debian package iverilog) missing")
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
def test_pipelined_mac_verilog_in_icarus(cfg, tmp_path, comparisons):
    paths = export_verilog(cfg, tmp_path / "rtl", pipeline=2)
    assert json.loads(paths["config"].read_text())["mac_latency_cycles"] == 3
    cycles, checks = schedule_dot_products(cfg, LENGTHS, seed=5, pipeline=2)
    observed = simulate_mac(cfg, paths["mac"], cycles, tmp_path / "iverilog")
    wrong = [(cycle, expected, observed[cycle]) for cycle, expected, _ in checks if observed[cycle] != expected]
    comparisons(f"iverilog pipelined mac.v {cfg.name} stages=2", len(checks), len(wrong))
    assert not wrong


def test_pipeline_option_errors():
    cfg = CONFIGS[0]
    with pytest.raises(ConfigError, match="--pipeline must be one of 0, 1, 2"):
        PipelinedMAC(cfg, 3)
    with pytest.raises(ConfigError, match="--chunk"):
        export_verilog(cfg.replace(chunk_size=4), "unused", pipeline=1)
