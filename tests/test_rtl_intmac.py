"""The integer/fixed-point MAC circuits (rtl.intmac) against lba_core.fmaq / dot: Amaranth's simulator on a
quick subset, the exported Verilog in Verilator on every pair of 8-bit operand codes against boundary
accumulators, and the sequential MAC on whole dot products (saturating and wrapping)."""

from __future__ import annotations

import numpy as np
import pytest

from lba_core import ConfigError, FixedFormat, MacConfig
from rtl import FixedFMAq, export_verilog
from support.reference import expected_results
from support.simulators import simulate_fmaq, simulate_fmaq_amaranth, simulate_mac_amaranth
from support.vectors import Vectors, all_pairs_vectors, boundary_vectors, mismatch_report, schedule_dot_products

CONFIGS = [
    MacConfig("int8", "int32"),
    MacConfig("int8", "int16_sat"),
    MacConfig("int8", "int16"),
    MacConfig("int4", "int8_sat", weight="int8"),
    MacConfig("fx8.3", "fx12.4_sat", rounding="rtz"),  # fixed operands whose product grid is finer than F
    MacConfig("e4m3", "fx40.24"),
    MacConfig("e4m3", "fx24.12_sat"),
    MacConfig("e4m3", "fx20.8", rounding="rtz"),
    MacConfig("e4m3_sub", "fx16.6_sat"),
    MacConfig("e5m2", "fx44.32"),
]


def fixed_boundary_codes(cfg: MacConfig) -> np.ndarray:
    """Accumulator codes at both ends, around zero, and one largest product inside each end."""
    acc: FixedFormat = cfg.acc
    largest = max(abs(cfg.a_format.min_value if isinstance(cfg.a_format, FixedFormat) else cfg.a_format.max_value), 1)
    largest *= max(abs(cfg.b_format.min_value if isinstance(cfg.b_format, FixedFormat) else cfg.b_format.max_value), 1)
    reach = min(int(largest / acc.quantum), acc.max_int)
    values = {acc.min_int, acc.min_int + 1, -1, 0, 1, acc.max_int - 1, acc.max_int, acc.max_int - reach + 1, acc.min_int + reach - 1}
    return np.array(sorted(v % acc.code_count for v in values), dtype=np.int64)


def random_fixed_vectors(cfg: MacConfig, count: int, seed: int) -> Vectors:
    rng = np.random.default_rng(seed)
    return Vectors(
        rng.integers(0, cfg.a_format.code_count, count, dtype=np.int64),
        rng.integers(0, cfg.b_format.code_count, count, dtype=np.int64),
        rng.integers(0, cfg.acc.code_count, count, dtype=np.int64),
    )


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: cfg.name)
def test_amaranth_fixed_fmaq_random_and_boundary(cfg, comparisons):
    vectors = Vectors.concat(
        [random_fixed_vectors(cfg, 150, seed=1), boundary_vectors(cfg, fixed_boundary_codes(cfg), 250, seed=2)]
    )
    expected = expected_results(cfg, vectors)
    got = simulate_fmaq_amaranth(cfg, vectors)
    mismatches = int(np.count_nonzero(expected != got))
    comparisons(f"amaranth fixed fmaq {cfg.name}", len(vectors), mismatches)
    assert mismatches == 0, "\n".join(mismatch_report(cfg, vectors, expected, got))


@pytest.mark.parametrize(
    "cfg",
    [MacConfig("int8", "int16_sat"), MacConfig("e4m3", "fx24.12_sat")]
    + [pytest.param(cfg, marks=pytest.mark.slow) for cfg in (MacConfig("int8", "int32"), MacConfig("e4m3", "fx40.24"), MacConfig("int8", "int16"))],
    ids=lambda cfg: cfg.name,
)
def test_verilator_every_8bit_pair_against_boundary_accumulators(cfg, tmp_path, comparisons):
    vectors = all_pairs_vectors(cfg, fixed_boundary_codes(cfg))
    paths = export_verilog(cfg, tmp_path / "rtl")
    expected = expected_results(cfg, vectors, processes=2)
    got = simulate_fmaq(cfg, paths["fmaq"], vectors, tmp_path / "verilator", "verilator")
    mismatches = int(np.count_nonzero(expected != got))
    comparisons(f"verilator fixed fmaq.v, every 8-bit operand pair x boundary accs, {cfg.name}", len(vectors), mismatches)
    assert mismatches == 0, "\n".join(mismatch_report(cfg, vectors, expected, got))


@pytest.mark.parametrize(
    "cfg", [MacConfig("int8", "int16_sat"), MacConfig("int8", "int12"), MacConfig("e4m3", "fx20.8_sat")], ids=lambda cfg: cfg.name
)
def test_amaranth_fixed_mac_dot_products(cfg, comparisons):
    lengths = [0, 1, 2, 3, 5, 9, 16, 23, 1, 0, 12]
    cycles, checks = schedule_dot_products(cfg, lengths, seed=len(cfg.name))
    observed = simulate_mac_amaranth(cfg, cycles)
    wrong = [(cycle, length, want, observed[cycle]) for cycle, want, length in checks if observed[cycle] != want]
    comparisons(f"amaranth fixed mac {cfg.name} ({len(lengths)} dot products)", len(checks), len(wrong))
    assert not wrong, f"(cycle, length, expected, got): {wrong[:5]}"


def test_circuits_refuse_what_they_do_not_build():
    with pytest.raises(ConfigError, match="chunk_size"):
        FixedFMAq(MacConfig("int8", "int32", chunk_size=4))
    with pytest.raises(ConfigError, match="both operands"):
        FixedFMAq(MacConfig("int8", "int32", weight="e4m3"))


def test_cli_writes_the_fixed_point_verilog(tmp_path, capsys):
    import json

    from hwmodel.cli import main

    assert main(["verilog", "--in", "int8", "--acc", "int16_sat", "-o", str(tmp_path)]) == 0
    description = json.loads((tmp_path / "config.json").read_text())
    assert description["name"] == "int8xint8-int16_sat-rne"
    assert description["ports"]["fmaq"] == {"a": 8, "b": 8, "acc_in": 16, "acc_out": 16, "overflow": 1, "underflow": 1, "swamp": 1}
    assert description["ports"]["mac"] == {"clk": 1, "rst": 1, "valid": 1, "clear": 1, "a": 8, "b": 8, "acc": 16}
