"""rtl.PEArray against lba_matmul with chunk_size = rows: Amaranth's simulator and Verilator on pe_array.v.

Every comparison is element by element on the accumulator codes, plus the overflow/underflow/swamp totals
of the array's event outputs against lba_matmul's EventStats. 2x2 and 4x4 run in ``make test`` (Verilator
for the volume, at least 10,000 outputs per size); 8x8 and further configurations are ``slow``
(``make cosim``).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from pe_array_cosim import ArrayShape, outputs_and_events, random_codes, reference, run_all, simulate_amaranth
from pe_array_cosim import simulate_verilog, split

import rtl
from lba_core import ConfigError, MacConfig
from rtl.pe_array import PEArray, export_pe_array_verilog

E4M7 = dict(input="e4m3", acc="e4m7")


def problems(rows: int, cfg: MacConfig, shapes, seed: int):
    """(X, W) code matrices for each (M, K, N, kind)."""
    rng = np.random.default_rng(seed)
    return [
        (random_codes(cfg.a_format, (m, k), rng, kind), random_codes(cfg.b_format, (k, n), rng, kind))
        for m, k, n, kind in shapes
    ]


def volume_shapes(rows: int, cols: int) -> list[tuple[int, int, int, str]]:
    """At least 10,000 outputs: K a multiple of rows, not a multiple, shorter than rows, one product; M and N
    not multiples of the buffer depth and of cols; saturating (uniform codes) and near-1 (moderate) data."""
    return [
        (50, 3 * rows + 1, 4 * cols + 1, "moderate"),
        (50, 2 * rows, 4 * cols, "uniform"),
        (50, max(1, rows - 1), 4 * cols, "moderate"),
        (50, 1, 2 * cols, "uniform"),
        (53, 4 * rows - 1, 40, "moderate"),
        (60, rows + 1, 50, "uniform"),
        (67, 2 * rows + 1, 61, "moderate"),
    ]


def compare(cfg, shape, program, samples, spans, cases):
    """(outputs compared, value mismatches, event mismatches) over every problem of a combined program."""
    outputs = value_mismatches = event_mismatches = 0
    for (x, w), span in zip(cases, spans):
        got, events = outputs_and_events(split(program, span), samples[span], w.shape[1])
        expected, expected_events = reference(cfg, x, w)
        assert got.shape == expected.shape
        outputs += expected.size
        value_mismatches += int((got != expected).sum())
        event_mismatches += sum(events[name] != expected_events[name] for name in events)
    return outputs, value_mismatches, event_mismatches


def run_verilator(tmp_path, rows, cols, depth, cfg, cases):
    paths = export_pe_array_verilog(rows, cols, cfg, tmp_path / "rtl", depth=depth)
    shape = ArrayShape.of(rows, cols, depth, cfg)
    program, spans = run_all(shape, cases)
    samples = simulate_verilog(program, paths["pe_array"], tmp_path / "sim")
    return compare(cfg, shape, program, samples, spans, cases)


def run_amaranth(rows, cols, depth, cfg, cases):
    shape = ArrayShape.of(rows, cols, depth, cfg)
    program, spans = run_all(shape, cases)
    samples = simulate_amaranth(PEArray(rows, cols, cfg, depth=depth), program)
    return compare(cfg, shape, program, samples, spans, cases)


@pytest.mark.parametrize("size", [2, 4])
def test_amaranth_matches_lba_matmul(size, comparisons, one_torch_thread):
    cfg = MacConfig(**E4M7, chunk_size=size)
    shapes = [(9, 2 * size + 1, 3 * size + 1, "moderate"), (8, size, 2 * size, "uniform"), (5, 1, size, "moderate"),
              (7, size - 1, 2 * size - 1, "moderate")]
    outputs, bad_values, bad_events = run_amaranth(size, size, size, cfg, problems(size, cfg, shapes, seed=size))
    comparisons(f"Amaranth {size}x{size} PE array vs lba_matmul(chunk_size={size}), outputs", outputs, bad_values)
    assert bad_values == 0 and bad_events == 0


# The 4x4 array (about 20-60 s of Verilator build) runs in make cosim; make test keeps the 2x2 one.
@pytest.mark.parametrize("size", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_verilator_matches_lba_matmul(size, tmp_path, comparisons, one_torch_thread):
    cfg = MacConfig(**E4M7, chunk_size=size)
    cases = problems(size, cfg, volume_shapes(size, size), seed=10 + size)
    outputs, bad_values, bad_events = run_verilator(tmp_path, size, size, 16, cfg, cases)
    comparisons(f"Verilator {size}x{size} pe_array.v vs lba_matmul(chunk_size={size}), outputs", outputs, bad_values)
    assert outputs >= 10_000
    assert bad_values == 0 and bad_events == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "rows, cols, depth, cfg",
    [
        (8, 8, 16, MacConfig(**E4M7, chunk_size=8)),
        (8, 8, 8, MacConfig(input="e4m3", acc="fp32", chunk_size=8)),
        (4, 2, 5, MacConfig(input="e5m2_sub", acc="e5m10", rounding="rtz", product="e6m3_sub", chunk_size=4)),
        (3, 5, 7, MacConfig(input="e4m3_sub", weight="e5m2", acc="e5m6", chunk_size=3)),
    ],
    ids=["8x8-e4m7", "8x8-fp32", "4x2-e5m2sub-fp16-rtz-product", "3x5-mixed-e5m6"],
)
def test_verilator_matches_lba_matmul_full(rows, cols, depth, cfg, tmp_path, comparisons, one_torch_thread):
    cases = problems(rows, cfg, volume_shapes(rows, cols), seed=rows * 100 + cols)
    outputs, bad_values, bad_events = run_verilator(tmp_path, rows, cols, depth, cfg, cases)
    comparisons(f"Verilator {rows}x{cols} pe_array.v {cfg.name}, outputs", outputs, bad_values)
    assert outputs >= 10_000
    assert bad_values == 0 and bad_events == 0


@pytest.mark.slow
def test_amaranth_matches_lba_matmul_8x8(comparisons, one_torch_thread):
    cfg = MacConfig(**E4M7, chunk_size=8)
    shapes = [(9, 17, 9, "moderate"), (8, 8, 8, "uniform")]
    outputs, bad_values, bad_events = run_amaranth(8, 8, 8, cfg, problems(8, cfg, shapes, seed=8))
    comparisons("Amaranth 8x8 PE array vs lba_matmul(chunk_size=8), outputs", outputs, bad_values)
    assert bad_values == 0 and bad_events == 0


def test_exported_verilog_and_sidecar(tmp_path):
    cfg = MacConfig(**E4M7)
    paths = rtl.export_pe_array_verilog(3, 2, cfg, tmp_path, depth=5)
    text = paths["pe_array"].read_text()
    header = re.search(r"module pe_array\(([^)]*)\);", text).group(1)
    ports = {name.strip() for name in header.split(",")}
    expected = {"clk", "rst", "weight_valid", "weight_row", "weight", "x_valid", "x", "x_row", "clear",
                "read_row", "y", "overflow", "underflow", "swamp"}
    assert ports == expected
    assert "initial" not in text and "$display" not in text
    sidecar = json.loads(paths["config"].read_text())
    assert sidecar["array"] == {"rows": 3, "cols": 2, "depth": 5, "dataflow": "weight-stationary",
                                "chunk_size": 3, "latency": 5}
    assert sidecar["ports"]["weight"] == 2 * 8 and sidecar["ports"]["x"] == 3 * 8 and sidecar["ports"]["y"] == 2 * 12
    assert sidecar["ports"]["overflow"] == (3 + 1) * 2 and sidecar["ports"]["x_row"] == 3
    assert MacConfig.from_dict({k: sidecar[k] for k in cfg.to_dict()}) == cfg


def test_rejected_before_elaboration():
    cfg = MacConfig(**E4M7)
    with pytest.raises(ConfigError, match="chunk_size=4"):
        PEArray(2, 2, MacConfig(**E4M7, chunk_size=4))
    with pytest.raises(ConfigError, match="dataflow"):
        PEArray(2, 2, cfg, dataflow="output-stationary")
    with pytest.raises(ConfigError, match="rows"):
        PEArray(0, 2, cfg)
    with pytest.raises(ConfigError, match="depth"):
        PEArray(2, 2, cfg, depth=0)
    with pytest.raises(ConfigError, match="underflow"):
        PEArray(2, 2, MacConfig(**E4M7, underflow=False))


def test_synthesis_reports_area_share_and_timing():
    from hwmodel.synthesis.pe_array import synthesize_array
    from rtl.pe_array import array_block_of, array_tile

    assert array_block_of(object, "skew_register_2_0") == "skew_register"
    assert array_block_of(object, "psum_register") == "psum_register"
    assert array_block_of(object, "fmaq") is None and array_block_of(object, "total_3") is None
    pe_blocks = rtl.module_blocks(array_tile("pe", 2, 2, MacConfig(input="e4m3", acc="e4m3"), 2), "pe", array_block_of)
    assert pe_blocks["pe_fmaq_aligner"] == "aligner" and pe_blocks["pe_fmaq"] is None
    assert pe_blocks["pe_weight_register"] == "weight_register" and pe_blocks["pe_psum_register"] == "psum_register"
    column_blocks = rtl.module_blocks(array_tile("column", 2, 2, MacConfig(input="e4m3", acc="e4m3"), 3), "column",
                                      array_block_of)
    assert column_blocks["column_chunk_adder_adder"] == "chunk_adder"  # the outermost block takes its subtree
    assert column_blocks["column_output_buffer_total_2"] == "output_buffer"

    result = synthesize_array(2, 2, MacConfig(input="e4m3", acc="e4m3"))
    blocks = result["blocks"]
    tiles = result["tiles"]
    assert set(tiles) == {"feeder", "pe", "column"} and tiles["pe"]["count"] == 4 and tiles["column"]["count"] == 2
    assert result["area"]["ge"] == pytest.approx(sum(t["ge"] * t["count"] for t in tiles.values()), abs=0.01)
    assert result["area"]["hierarchical_ge"] == pytest.approx(sum(b["ge"] for b in blocks.values()), abs=0.01)
    accumulator = sum(blocks[name]["ge"] for name in result["accumulator_blocks"])
    assert result["accumulator_share"] == pytest.approx(accumulator / result["area"]["hierarchical_ge"])
    assert 0 < result["accumulator_share"] < 1
    assert {"multiplier", "weight_register", "psum_register", "chunk_adder", "output_buffer"} <= set(blocks)
    assert "multiplier" not in result["accumulator_blocks"] and "weight_register" not in result["accumulator_blocks"]
    assert result["timing"]["depth"] == max(t["depth"] for t in tiles.values()) > 0


def test_sweep_array_option(tmp_path):
    from hwmodel.sweep.spec import SweepSpec, load_sweep_spec

    path = tmp_path / "array.toml"
    path.write_text('accumulators = ["e4m7", "fp32"]\narray = "8x8"\n')
    spec = load_sweep_spec(path)
    assert spec.array_shape() == (8, 8)
    assert [cfg.chunk_size for cfg in spec.configs()] == [8, 8]
    path.write_text('array = "8by8"\n')
    with pytest.raises(ConfigError, match="key 'array'"):
        load_sweep_spec(path)
    with pytest.raises(ConfigError, match="chunks of 4"):
        SweepSpec(array="4x4", chunk_sizes=(16,)).configs()
