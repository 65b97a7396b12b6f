"""The sequential MAC (plain and chunked) in Amaranth's simulator: whole dot products against lba_core.dot,
with ``clear`` alone or together with the first product, and gaps in ``valid``."""

from __future__ import annotations

import random

import pytest

from lba_core import MacConfig, dot
from rtl.cosim import simulate_mac_amaranth


def random_code(fmt, rng: random.Random) -> int:
    """Half uniform codes, half codes of binades around 1 (long sums that swamp and cancel); fixed-point
    formats get uniform codes (a long run of them overflows a narrow accumulator)."""
    if rng.random() < 0.5 or not hasattr(fmt, "bias"):
        return rng.randrange(fmt.code_count)
    exponent = fmt.bias + rng.randint(-2, 2)
    return (rng.getrandbits(1) << (fmt.width - 1)) | (exponent << fmt.man_bits) | rng.getrandbits(fmt.man_bits)


def schedule_dot_products(cfg: MacConfig, lengths: list[int], seed: int):
    """Cycles (valid, clear, a, b) for back-to-back dot products, and for each one the cycles at which the
    registered acc must show its result (from the result latency until the next dot product starts)."""
    rng = random.Random(seed)
    latency = 1 if cfg.chunk_size is None else 2
    cycles, checks = [], []
    for length in lengths:
        a_codes = [random_code(cfg.a_format, rng) for _ in range(length)]
        b_codes = [random_code(cfg.b_format, rng) for _ in range(length)]
        clear_with_first = length > 0 and rng.random() < 0.5
        if not clear_with_first:
            cycles.append((0, 1, rng.randrange(cfg.a_format.code_count), 0))
        for index, (a, b) in enumerate(zip(a_codes, b_codes)):
            while rng.random() < 0.3:  # a gap: inputs change but valid is low
                cycles.append((0, 0, rng.randrange(cfg.a_format.code_count), rng.randrange(cfg.b_format.code_count)))
            cycles.append((1, int(clear_with_first and index == 0), a, b))
        last = len(cycles) - 1
        cycles += [(0, 0, 0, 0)] * (latency + 1)
        result = dot([cfg.a_format.decode(a) for a in a_codes], [cfg.b_format.decode(b) for b in b_codes], cfg)
        expected = cfg.acc.encode(result.value)
        checks += [(cycle, expected, length) for cycle in range(last + latency - 1, len(cycles))]
    return cycles, checks


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
