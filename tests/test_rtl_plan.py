"""The datapath plan of an RTL export is derived once and handed to every component it builds (docs/rtl.md)."""

from __future__ import annotations

import sys

import pytest
from amaranth.hdl import Fragment

import lba_core.datapath
from lba_core import ConfigError, MacConfig, derive_datapath, derive_fixed_datapath
from rtl import MAC, FixedFMAq, FMAq, PEArray, export_pe_array_verilog, export_verilog


def count_derivations(monkeypatch) -> list[str]:
    """Replace both derive functions wherever an rtl or lba_core module holds them; returns the calls' log."""
    calls: list[str] = []
    for original in (lba_core.datapath.derive_datapath, lba_core.datapath.derive_fixed_datapath):

        def counted(cfg, original=original):
            calls.append(original.__name__)
            return original(cfg)

        for name, module in list(sys.modules.items()):
            if name.split(".")[0] in ("rtl", "lba_core") and getattr(module, original.__name__, None) is original:
                monkeypatch.setattr(module, original.__name__, counted)
    return calls


EXPORTS = {
    # hierarchical: config.json's block map elaborates the tops a second time
    "chunked": lambda out: export_verilog(
        MacConfig(input="e4m3_sub", acc="e4m7", product="e5m4", chunk_size=4), out, hierarchical=True
    ),
    "pipelined": lambda out: export_verilog(MacConfig(input="e5m2", acc="e5m6", product="e5m4"), out, pipeline=2),
    "fixed point": lambda out: export_verilog(MacConfig("e4m3", "fx20.8", rounding="rtz"), out, hierarchical=True),
    "pe array": lambda out: export_pe_array_verilog(2, 3, MacConfig(input="e4m3", acc="e4m7"), out, hierarchical=True),
}


@pytest.mark.parametrize("kind", EXPORTS)
def test_an_export_derives_its_datapath_once(kind, monkeypatch, tmp_path):
    calls = count_derivations(monkeypatch)
    EXPORTS[kind](tmp_path)
    assert len(calls) == 1, calls


def test_a_component_built_directly_derives_its_own_plan_and_shares_it(monkeypatch):
    cfg = MacConfig(input="e4m3", acc="e5m6", chunk_size=4)
    calls = count_derivations(monkeypatch)
    mac = MAC(cfg)
    Fragment.get(mac, None)  # elaboration builds the chunk adder from the same plan
    assert calls == ["derive_datapath"]
    assert mac.plan == derive_datapath(cfg) and mac.fmaq.plan is mac.plan


def test_a_plan_of_another_configuration_is_refused():
    cfg = MacConfig(input="e4m3", acc="e4m7")
    with pytest.raises(ConfigError, match="derived for e4m3xe4m3-e5m6"):
        FMAq(cfg, plan=derive_datapath(cfg.replace(acc="e5m6")))
    fixed = MacConfig("int8", "int24")
    with pytest.raises(ConfigError, match="derived for int8xint8-int32"):
        FixedFMAq(fixed, plan=derive_fixed_datapath(fixed.replace(acc="int32")))


@pytest.mark.parametrize(
    "cfg", [MacConfig("int8", "int32"), MacConfig(input="e4m3", weight="e5m2", acc="hopper-fp8")], ids=["fixed", "fused"]
)
def test_a_floating_point_circuit_refuses_another_accumulator_before_it_exists(cfg):
    for build in (FMAq, MAC, lambda cfg: PEArray(2, 2, cfg)):
        with pytest.raises(ConfigError, match="need a floating-point accumulator"):
            build(cfg)
