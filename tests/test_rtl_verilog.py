"""The exported Verilog: files, top ports, hierarchy names, Verilator lint, and cosimulation in real Verilog
simulators against lba_core.fmaq (every e4m3 a x b pair in Verilator, random vectors in Icarus)."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from amaranth.lib import wiring

from lba_core import MacConfig
from rtl import MAC, FMAq, export_verilog
from rtl.blocks import ProductRounder, RangeFlags, block_name
from rtl.fmaq import ConfiguredComponent
from rtl.hierarchy import FLOAT_BLOCK_NAMES, FLOAT_BLOCKS
from support.reference import expected_results
from support.simulators import simulate_fmaq, simulate_mac
from support.vectors import (
    Vectors,
    all_pairs_vectors,
    boundary_codes,
    cancellation_vectors,
    mismatch_report,
    random_vectors,
    schedule_dot_products,
)

FMAQ_PORTS = {"a", "b", "acc_in", "acc_out", "overflow", "underflow", "swamp"}
MAC_PORTS = {"clk", "rst", "valid", "clear", "a", "b", "acc"}
#: Waivers for Yosys's output style: width-extending assignments and partially used intermediate wires.
LINT_WAIVERS = ["-Wno-WIDTH", "-Wno-UNUSEDSIGNAL"]
#: Hierarchical files hold several modules, so their names cannot all match the file name.
HIERARCHICAL_WAIVERS = ["-Wno-DECLFILENAME"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Flat and hierarchical exports of a chunked configuration with a product format and subnormal inputs."""
    cfg = MacConfig(input="e4m3_sub", acc="e4m7", product="e5m4", rounding="rtz", chunk_size=4)
    root = tmp_path_factory.mktemp("export")
    return cfg, export_verilog(cfg, root / "flat"), export_verilog(cfg, root / "hier", hierarchical=True)


def module_ports(verilog: str, module: str) -> set[str]:
    header = re.search(rf"^module {module}\((.*?)\);", verilog, re.MULTILINE | re.DOTALL)
    assert header, f"module {module} not found"
    return {name.strip() for name in header.group(1).split(",")}


def test_export_writes_tops_with_exact_ports(exported):
    cfg, flat, hier = exported
    for paths in (flat, hier):
        assert set(paths) == {"fmaq", "mac", "config"}
        assert module_ports(paths["fmaq"].read_text(), "fmaq") == FMAQ_PORTS
        assert module_ports(paths["mac"].read_text(), "mac") == MAC_PORTS
        description = json.loads(paths["config"].read_text())
        assert MacConfig.from_dict({key: description[key] for key in cfg.to_dict()}) == cfg
        assert description["ports"]["fmaq"] == {
            "a": 8,
            "b": 8,
            "acc_in": 12,
            "acc_out": 12,
            "overflow": 1,
            "underflow": 1,
            "swamp": 1,
        }
        assert description["ports"]["mac"] == {"clk": 1, "rst": 1, "valid": 1, "clear": 1, "a": 8, "b": 8, "acc": 12}


def test_hierarchical_export_keeps_one_module_per_block(exported):
    _, flat, hier = exported
    blocks = json.loads(hier["config"].read_text())["blocks"]
    for top in ("fmaq", "mac"):
        modules = re.findall(r"^module (\w+)\(", hier[top].read_text(), re.MULTILINE)
        # config.json's block map names exactly the modules of the Verilog (the area report relies on it).
        assert set(modules) == set(blocks[top]), top
    assert set(blocks["mac"].values()) - {None} == set(FLOAT_BLOCK_NAMES)
    assert [module for module, block in blocks["mac"].items() if block is None] == ["mac", "mac_fmaq"]
    assert blocks["mac"]["mac_chunk_adder_aligner"] == "chunk_adder"  # the outermost block owns its subtree
    assert re.findall(r"^module (\w+)\(", flat["mac"].read_text(), re.MULTILINE) == ["mac"]


def test_block_names_follow_the_block_classes():
    """Every component class of the FMAq/MAC datapath modules is a block in BLOCKS (named by its class) or
    one of the composites that only wire blocks together."""
    assert FLOAT_BLOCK_NAMES == tuple(block_name(block) for block in FLOAT_BLOCKS)
    assert block_name(ProductRounder) == "product_rounder" and block_name(RangeFlags) == "range_flags"
    assert len(set(FLOAT_BLOCK_NAMES)) == len(FLOAT_BLOCK_NAMES)
    composites = {FMAq, MAC, ConfiguredComponent}

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    datapath_modules = ("rtl.blocks", "rtl.fmaq", "rtl.mac")
    rtl_components = {cls for cls in subclasses(wiring.Component) if cls.__module__ in datapath_modules}
    assert rtl_components - composites == set(FLOAT_BLOCKS)


def test_verilog_has_no_simulation_only_constructs(exported):
    _, flat, hier = exported
    for paths in (flat, hier):
        for top in ("fmaq", "mac"):
            text = paths[top].read_text()
            for construct in ("initial", "$display", "$finish", "#"):
                assert construct not in text, f"{construct!r} in {paths[top]}"


def lint(path, top, extra=()):
    result = subprocess.run(
        ["verilator", "--lint-only", "-Wall", *LINT_WAIVERS, *extra, "--top-module", top, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_lint_clean(exported):
    _, flat, hier = exported
    for top in ("fmaq", "mac"):
        lint(flat[top], top)
        lint(hier[top], top, HIERARCHICAL_WAIVERS)


@pytest.mark.parametrize(
    "cfg",
    [
        MacConfig(input="e4m3", acc="fp32", rounding="rtz"),
        MacConfig(input="e5m2", acc="bf16", chunk_size=16),
        MacConfig(input="e2m1_sub", acc="e4m3_sub"),
    ],
    ids=lambda cfg: cfg.name,
)
def test_lint_clean_baselines(cfg, tmp_path):
    paths = export_verilog(cfg, tmp_path)
    for top in ("fmaq", "mac"):
        lint(paths[top], top)


def cosimulate(cfg, vectors, tmp_path, simulator, comparisons, processes=1):
    paths = export_verilog(cfg, tmp_path / "rtl")
    expected = expected_results(cfg, vectors, processes=processes)
    got = simulate_fmaq(cfg, paths["fmaq"], vectors, tmp_path / simulator, simulator)
    mismatches = int(np.count_nonzero(expected != got))
    comparisons(f"{simulator} fmaq.v {cfg.name}", len(vectors), mismatches)
    assert mismatches == 0, "\n".join(mismatch_report(cfg, vectors, expected, got))


def test_verilator_every_e4m3_pair(tmp_path, comparisons):
    """Every e4m3 a x b pair against an accumulator of every exponent code and the boundary values."""
    cfg = MacConfig(input="e4m3", acc="e4m7")
    vectors = all_pairs_vectors(cfg, boundary_codes(cfg.acc, mantissas_per_exponent=1))
    cosimulate(cfg, vectors, tmp_path, "verilator", comparisons, processes=2)


def test_iverilog_random_and_cancellation(tmp_path, comparisons):
    cfg = MacConfig(input="e4m3_sub", acc="e5m10", product="e5m4", rounding="rtz")
    vectors = Vectors.concat([random_vectors(cfg, 6000, seed=11), cancellation_vectors(cfg, 3000, seed=12)])
    cosimulate(cfg, vectors, tmp_path, "iverilog", comparisons)


@pytest.mark.parametrize(
    "cfg",
    [MacConfig(input="e4m3", acc="e4m3", rounding="rtz"), MacConfig(input="e4m3", acc="e5m6", chunk_size=4)],
    ids=lambda cfg: cfg.name,
)
def test_iverilog_mac_dot_products(cfg, tmp_path, comparisons):
    """mac.v on whole dot products (clear alone or with the first product, valid gaps) against lba_core.dot."""
    lengths = [0, 1, 3, 4, 5, 9, 16, 1, 0, 12]
    cycles, checks = schedule_dot_products(cfg, lengths, seed=7)
    observed = simulate_mac(cfg, export_verilog(cfg, tmp_path / "rtl")["mac"], cycles, tmp_path / "iverilog")
    wrong = [
        (cycle, length, expected, observed[cycle]) for cycle, expected, length in checks if observed[cycle] != expected
    ]
    comparisons(f"iverilog mac.v {cfg.name} ({len(lengths)} dot products)", len(checks), len(wrong))
    assert not wrong, f"(cycle, length, expected, got): {wrong[:5]}"
