"""Full RTL cosimulation against the reference (``make cosim``; every test here is ``slow``).

- Amaranth's simulator over the whole configuration matrix: inputs e4m3, e5m2, e3m4, e2m1 with and without
  subnormals; accumulators e4m7, e5m6, e3m8, e4m3, e5m10, e8m23; RNE and RTZ; exact product and a rounded one.
- The exported fmaq.v in Verilator: every a x b pair against accumulators covering every exponent and the
  boundary values, plus 10^6 random vectors per configuration (uniform, overlapping, cancelling).
- The exported mac.v in Icarus Verilog: long runs of dot products with clear and valid gaps, plain and chunked.
"""

from __future__ import annotations

import itertools
import os
import shutil

import numpy as np
import pytest

from lba_core import FloatFormat, MacConfig
from rtl import export_verilog
from support.reference import expected_results
from support.simulators import simulate_fmaq, simulate_fmaq_amaranth, simulate_mac
from support.vectors import (
    Vectors,
    all_pairs_vectors,
    boundary_codes,
    boundary_vectors,
    cancellation_vectors,
    mismatch_report,
    random_vectors,
    schedule_dot_products,
)

pytestmark = pytest.mark.slow

RANDOM_VECTORS = 1_000_000
PROCESSES = os.cpu_count() or 1

INPUTS = ["e4m3", "e5m2", "e3m4", "e2m1"]
ACCUMULATORS = ["e4m7", "e5m6", "e3m8", "e4m3", "e5m10", "e8m23"]


def product_format(input_format: FloatFormat) -> str:
    """A rounded product one exponent bit and one mantissa bit wider than the inputs (the exact product has
    2M + 2 significand bits, so this rounds), with the inputs' subnormal setting."""
    return FloatFormat(input_format.exp_bits + 1, input_format.man_bits + 1, subnormals=input_format.subnormals).name


def matrix() -> list[MacConfig]:
    configs = []
    for name, subnormals, acc, rounding, rounded_product in itertools.product(
        INPUTS, (False, True), ACCUMULATORS, ("rne", "rtz"), (False, True)
    ):
        input_format = FloatFormat.parse(name + ("_sub" if subnormals else ""))
        product = product_format(input_format) if rounded_product else None
        configs.append(MacConfig(input=input_format, acc=acc, rounding=rounding, product=product))
    return configs


@pytest.mark.parametrize("cfg", matrix(), ids=lambda cfg: cfg.name)
def test_amaranth_matrix(cfg, comparisons):
    vectors = Vectors.concat(
        [
            random_vectors(cfg, 200, seed=21),
            boundary_vectors(cfg, boundary_codes(cfg.acc, 1), 100, seed=22),
            cancellation_vectors(cfg, 100, seed=23),
        ]
    )
    expected = expected_results(cfg, vectors)
    got = simulate_fmaq_amaranth(cfg, vectors)
    mismatches = int(np.count_nonzero(expected != got))
    comparisons(f"amaranth fmaq {cfg.name}", len(vectors), mismatches)
    assert mismatches == 0, "\n".join(mismatch_report(cfg, vectors, expected, got))


VERILOG_CONFIGS = [
    MacConfig(input="e4m3", acc="e4m7"),
    MacConfig(input="e4m3", acc="e4m7", rounding="rtz"),
    MacConfig(input="e4m3_sub", acc="e4m7"),
    MacConfig(input="e4m3", acc="e5m6", rounding="rtz"),
    MacConfig(input="e4m3", acc="e3m8"),
    MacConfig(input="e4m3", acc="e4m3", rounding="rtz"),
    MacConfig(input="e4m3", acc="e4m7", product="e5m4"),
    MacConfig(input="e4m3", acc="fp16"),
    MacConfig(input="e4m3", acc="bf16", rounding="rtz"),
    MacConfig(input="e4m3", acc="fp32"),
    MacConfig(input="e5m2", acc="fp16", rounding="rtz"),
    MacConfig(input="e5m2_sub", acc="e5m6", product="e6m3_sub"),
    MacConfig(input="e3m4_sub", acc="e3m8", rounding="rtz"),
    MacConfig(input="e2m1_sub", acc="e4m3"),
]


@pytest.mark.parametrize("cfg", VERILOG_CONFIGS, ids=lambda cfg: cfg.name)
def test_verilator_all_pairs_and_random(cfg, tmp_path, comparisons):
    """Every a x b pair against boundary accumulators, and 10^6 random vectors, through fmaq.v in Verilator."""
    per_exponent = 1 if cfg.acc.exp_bits > 5 else 2
    vectors = Vectors.concat(
        [all_pairs_vectors(cfg, boundary_codes(cfg.acc, per_exponent)), random_vectors(cfg, RANDOM_VECTORS, seed=31)]
    )
    paths = export_verilog(cfg, tmp_path / "rtl")
    expected = expected_results(cfg, vectors, processes=PROCESSES, progress=True)
    got = simulate_fmaq(cfg, paths["fmaq"], vectors, tmp_path / "verilator", "verilator")
    shutil.rmtree(tmp_path / "verilator")  # vector files of several hundred MB
    mismatches = int(np.count_nonzero(expected != got))
    comparisons(f"verilator fmaq.v {cfg.name} (all pairs + {RANDOM_VECTORS:,} random)", len(vectors), mismatches)
    assert mismatches == 0, "\n".join(mismatch_report(cfg, vectors, expected, got))


@pytest.mark.parametrize(
    "cfg",
    [
        MacConfig(input="e4m3", acc="e4m7"),
        MacConfig(input="e4m3", acc="e4m3", rounding="rtz", product="e5m3"),
        MacConfig(input="e4m3", acc="e4m7", chunk_size=16),
        MacConfig(input="e5m2_sub", acc="e5m6", rounding="rtz", chunk_size=5),
        MacConfig(input="e4m3", acc="bf16", chunk_size=32),
    ],
    ids=lambda cfg: cfg.name,
)
def test_iverilog_mac_dot_products(cfg, tmp_path, comparisons):
    lengths = [0, 1, 2, 7, 16, 17, 31, 32, 33, 64, 100, 3, 0, 128] * 3
    cycles, checks = schedule_dot_products(cfg, lengths, seed=41)
    observed = simulate_mac(cfg, export_verilog(cfg, tmp_path / "rtl")["mac"], cycles, tmp_path / "iverilog")
    wrong = [
        (cycle, length, expected, observed[cycle]) for cycle, expected, length in checks if observed[cycle] != expected
    ]
    comparisons(
        f"iverilog mac.v {cfg.name} ({len(lengths)} dot products, {len(cycles)} cycles)", len(checks), len(wrong)
    )
    assert not wrong, f"(cycle, length, expected, got): {wrong[:5]}"
