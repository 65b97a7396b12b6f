"""Full FDPA cosimulation (``make fused-cosim``; every test here is ``slow``).

- The exported fdpa.v in Verilator: the five presets (mixed and subnormal operand formats, one pipelined) and
  general (L, F) points from L = 4 to 64 and F = 8 to 25, random and directed groups, > 10^6 groups in all,
  against MMA-Sim 2.1.1's ``t_fdpa`` (every group, where MMA-Sim models the output mode) and lba_core's
  exact-rational ``fdpa`` (a sample of each configuration; every group where MMA-Sim does not apply).
- Amaranth's simulator: >= 10^4 groups over small general points and the presets (pipelined too), every
  group against lba_core.fdpa (and MMA-Sim where it applies).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from lba_core import MacConfig
from rtl.fdpa_export import export_fdpa_verilog
from rtl.fdpa_plan import plan_fused
from support.fdpa_sim import simulate_fdpa_amaranth, simulate_fdpa_verilog
from support.fdpa_vectors import (
    FdpaVectors,
    directed_groups,
    mmasim_codes,
    mmasim_supports,
    random_groups,
    reference_codes,
)

pytestmark = pytest.mark.slow

PROCESSES = min(2, os.cpu_count() or 1)
REFERENCE_SAMPLE = 4000  # groups per configuration also checked against lba_core.fdpa when MMA-Sim covers all

#: (configuration, random groups, pipeline registers)
VERILOG_CASES = [
    (MacConfig(input="e4m3", acc="hopper-fp8"), 150_000, 0),
    (MacConfig(input="e4m3_sub", weight="e5m2_sub", acc="hopper-fp8"), 150_000, 2),
    (MacConfig(input="e5m2_sub", weight="e4m3_sub", acc="hopper-fp8-f16"), 120_000, 0),
    (MacConfig(input="fp16", acc="hopper-fp16"), 100_000, 0),
    (MacConfig(input="e8m7_sub", acc="hopper-bf16"), 100_000, 0),
    (MacConfig(input="e4m3_sub", acc="blackwell-fp8"), 100_000, 1),
    (MacConfig(input="e4m3_sub", weight="e5m2_sub", acc="fdpa4f8-e8m13_sub-rtz"), 100_000, 0),
    (MacConfig(input="e4m3_sub", acc="fdpa8f11-e8m23_sub-rne"), 100_000, 0),
    (MacConfig(input="e5m2_sub", acc="fdpa16f16-e5m10_sub-rne"), 100_000, 4),
    (MacConfig(input="e4m3_sub", weight="e5m2", acc="fdpa64f20-e8m23_sub-rtz"), 50_000, 0),
    (MacConfig(input="e4m3_sub", acc="fdpa8f10-e5m6-rne-sat"), 20_000, 0),
]


def case_id(case) -> str:
    cfg, _, pipeline = case
    return f"{cfg.name}-p{pipeline}"


def groups(cfg: MacConfig, count: int, seed: int) -> FdpaVectors:
    plan = plan_fused(cfg)
    return FdpaVectors.concat([random_groups(plan, count, seed), directed_groups(plan, max(20, count // 500), seed + 1)])


def compare(label: str, expected: np.ndarray, got: np.ndarray, comparisons) -> None:
    wrong = np.nonzero(expected != got)[0]
    comparisons(label, len(expected), len(wrong))
    assert len(wrong) == 0, [(int(i), hex(int(expected[i])), hex(int(got[i]))) for i in wrong[:5]]


@pytest.mark.parametrize("case", VERILOG_CASES, ids=case_id)
def test_verilator_fdpa(case, tmp_path, comparisons):
    cfg, count, pipeline = case
    plan = plan_fused(cfg)
    vectors = groups(cfg, count, seed=101)
    paths = export_fdpa_verilog(cfg, tmp_path / "rtl", pipeline=pipeline)
    got = simulate_fdpa_verilog(plan, paths["fdpa"], vectors, tmp_path / "verilator", "verilator", latency=pipeline)
    shutil.rmtree(tmp_path / "verilator")  # vector files of tens of MB
    label = f"verilator fdpa.v {cfg.name} pipeline={pipeline}"
    if mmasim_supports(plan):
        compare(f"{label} vs MMA-Sim", mmasim_codes(plan, vectors), got, comparisons)
        sample = np.random.default_rng(7).choice(len(vectors), size=min(REFERENCE_SAMPLE, len(vectors)), replace=False)
        subset = FdpaVectors(vectors.a[sample], vectors.b[sample], vectors.c[sample])
        compare(f"{label} vs lba_core.fdpa (sample)", reference_codes(cfg, subset, PROCESSES), got[sample], comparisons)
    else:
        compare(f"{label} vs lba_core.fdpa", reference_codes(cfg, vectors, PROCESSES), got, comparisons)


#: (configuration, random groups, pipeline registers) for Amaranth's simulator
AMARANTH_CASES = [
    (MacConfig(input="e2m1_sub", weight="e3m1", acc="fdpa2f4-e3m2_sub-rne"), 2_000, 0),
    (MacConfig(input="e3m2_sub", acc="fdpa4f3-e4m3_sub-rtz"), 2_000, 1),
    (MacConfig(input="e3m2", weight="e2m1_sub", acc="fdpa3f6-e4m4-rne-sat"), 2_000, 0),
    (MacConfig(input="e4m3_sub", weight="e5m2_sub", acc="fdpa8f11-e5m10_sub-rne"), 1_500, 0),
    (MacConfig(input="e4m3_sub", acc="fdpa4f25-e8m23_sub-rtz"), 1_500, 3),
    (MacConfig(input="e3m2_sub", weight="e2m1_sub", acc="fdpa5f0-e4m3_sub-rtz"), 500, 0),  # F = 0
    (MacConfig(input="e4m3", weight="e5m2", acc="hopper-fp8"), 400, 2),
    (MacConfig(input="e5m2_sub", acc="hopper-fp8-f16"), 300, 0),
    (MacConfig(input="fp16", acc="hopper-fp16"), 300, 4),
]


@pytest.mark.parametrize("case", AMARANTH_CASES, ids=case_id)
def test_amaranth_fdpa(case, comparisons):
    cfg, count, pipeline = case
    plan = plan_fused(cfg)
    vectors = groups(cfg, count, seed=201)
    got = simulate_fdpa_amaranth(plan, vectors, pipeline)
    label = f"amaranth fdpa {cfg.name} pipeline={pipeline}"
    compare(f"{label} vs lba_core.fdpa", reference_codes(cfg, vectors, PROCESSES), got, comparisons)
    if mmasim_supports(plan):
        compare(f"{label} vs MMA-Sim", mmasim_codes(plan, vectors), got, comparisons)
