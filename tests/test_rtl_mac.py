"""The sequential MAC (plain and chunked) in Amaranth's simulator: whole dot products against lba_core.dot,
with ``clear`` alone or together with the first product, and gaps in ``valid``."""

from __future__ import annotations

import pytest

from lba_core import MacConfig
from support.simulators import simulate_mac_amaranth
from support.vectors import schedule_dot_products


@pytest.mark.parametrize(
    "cfg",
    [
        MacConfig(input="e4m3", acc="e4m3"),
        MacConfig(input="e4m3", acc="e5m6", rounding="rtz", product="e5m3"),
        MacConfig(input="e4m3", acc="e4m3", rounding="rtz", chunk_size=4),
        MacConfig(input="e5m2_sub", acc="e5m6", chunk_size=3),
        MacConfig(input="e4m3", acc="e4m7", chunk_size=1),
    ],
    ids=lambda cfg: cfg.name,
)
def test_mac_dot_products(cfg, comparisons):
    lengths = [0, 1, 2, 3, 4, 5, 8, 9, 16, 23, 1, 0, 12]
    cycles, checks = schedule_dot_products(cfg, lengths, seed=len(cfg.name))
    observed = simulate_mac_amaranth(cfg, cycles)
    wrong = [
        (cycle, length, expected, observed[cycle]) for cycle, expected, length in checks if observed[cycle] != expected
    ]
    comparisons(f"amaranth mac {cfg.name} ({len(lengths)} dot products, {len(cycles)} cycles)", len(checks), len(wrong))
    assert not wrong, f"(cycle, length, expected, got): {wrong[:5]}"
