"""Cosimulation vectors: (a, b, acc_in) code triples in NumPy arrays, and the packed result word.

A result word packs ``acc_out | overflow | underflow | swamp`` (the flags in the three low bits).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from lba_core import FloatFormat, MacConfig, dot

FLAG_BITS = 3


@dataclass(frozen=True)
class Vectors:
    """Code triples for the fmaq circuit, one entry per vector."""

    a: np.ndarray
    b: np.ndarray
    acc: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    @staticmethod
    def concat(parts: "list[Vectors]") -> "Vectors":
        return Vectors(*(np.concatenate([getattr(part, name) for part in parts]) for name in ("a", "b", "acc")))


def pack_result(acc_code: int, overflow: bool, underflow: bool, swamp: bool) -> int:
    return (acc_code << FLAG_BITS) | (int(overflow) << 2) | (int(underflow) << 1) | int(swamp)


def unpack_result(word: int) -> tuple[int, int, int, int]:
    return word >> FLAG_BITS, (word >> 2) & 1, (word >> 1) & 1, word & 1


def check_packable(cfg: MacConfig) -> None:
    if cfg.a_format.width + cfg.b_format.width + cfg.acc.width > 62:
        raise ValueError(f"{cfg.name}: vectors wider than 62 bits are not supported by the cosim harness")


def boundary_codes(fmt: FloatFormat, mantissas_per_exponent: int = 4) -> np.ndarray:
    """Accumulator codes covering every exponent code and the boundary values.

    Every exponent code with 1, 2 or 4 mantissas (1: one code per exponent, the mantissa alternating between
    all-ones and zero and the sign alternating; 2: both extremes; 4: also 1 and the middle; 2 and 4 take both
    signs), plus, with both signs: max and the value below it, min_normal and its neighbours, the smallest
    exponent-0 code (a subnormal, or a code that must read as zero), +0 and the -0 code.
    """
    if mantissas_per_exponent not in (1, 2, 4):
        raise ValueError(f"mantissas_per_exponent must be 1, 2 or 4, got {mantissas_per_exponent}")
    man_max = (1 << fmt.man_bits) - 1
    sign = 1 << (fmt.width - 1)
    if mantissas_per_exponent == 1:
        spread = {
            (e << fmt.man_bits) | (man_max if e % 2 else 0) | (sign if e % 4 >= 2 else 0)
            for e in range(1 << fmt.exp_bits)
        }
    else:
        mantissas = {0, man_max} | ({1, man_max // 2 + 1} if mantissas_per_exponent == 4 else set())
        spread = {(e << fmt.man_bits) | m for e in range(1 << fmt.exp_bits) for m in mantissas}
        spread |= {code | sign for code in spread}
    max_code = fmt.encode(fmt.max_value)
    min_normal_code = fmt.encode(fmt.min_normal)
    special = {0, 1, max_code, max_code - 1, min_normal_code, min_normal_code + 1, min_normal_code - 1}
    return np.array(sorted(spread | special | {code | sign for code in special}), dtype=np.int64)


def all_pairs_vectors(cfg: MacConfig, acc_codes: np.ndarray) -> Vectors:
    """Every (a, b) code pair against each accumulator code (accumulator-major)."""
    a, b = np.meshgrid(np.arange(cfg.a_format.code_count), np.arange(cfg.b_format.code_count), indexing="ij")
    pairs = a.size
    return Vectors(
        np.tile(a.ravel(), len(acc_codes)).astype(np.int64),
        np.tile(b.ravel(), len(acc_codes)).astype(np.int64),
        np.repeat(acc_codes.astype(np.int64), pairs),
    )


def boundary_vectors(cfg: MacConfig, acc_codes: np.ndarray, count: int, seed: int) -> Vectors:
    """Random (a, b) code pairs, each against the next accumulator of acc_codes in turn."""
    rng = np.random.default_rng(seed)
    return Vectors(
        rng.integers(0, cfg.a_format.code_count, count, dtype=np.int64),
        rng.integers(0, cfg.b_format.code_count, count, dtype=np.int64),
        np.resize(acc_codes.astype(np.int64), count),
    )


def random_vectors(cfg: MacConfig, count: int, seed: int) -> Vectors:
    """Random code triples: a third with a uniform accumulator code, a third with the accumulator near the
    product's binade (partial overlap of the significands), a third near -product (massive cancellation)."""
    rng = np.random.default_rng(seed)
    a, b, product = random_operands(cfg, count, rng)
    kind = rng.integers(0, 3, count)
    acc = np.select(
        [kind == 0, kind == 1],
        [rng.integers(0, cfg.acc.code_count, count, dtype=np.int64), near_codes(cfg.acc, product, rng)],
        cancelling_codes(cfg.acc, product, rng),
    )
    return Vectors(a, b, acc.astype(np.int64))


def cancellation_vectors(cfg: MacConfig, count: int, seed: int) -> Vectors:
    """Random (a, b) with the accumulator within two codes of -(a*b): the exact sum cancels to a few ulps or
    to zero, and a product wider than the accumulator leaves a sticky tail on the subtracted operand."""
    rng = np.random.default_rng(seed)
    a, b, product = random_operands(cfg, count, rng)
    return Vectors(a, b, cancelling_codes(cfg.acc, product, rng))


def random_operands(cfg: MacConfig, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = rng.integers(0, cfg.a_format.code_count, count, dtype=np.int64)
    b = rng.integers(0, cfg.b_format.code_count, count, dtype=np.int64)
    return a, b, code_values(cfg.a_format)[a] * code_values(cfg.b_format)[b]


def near_codes(fmt: FloatFormat, product: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random codes of either sign whose binade is within a significand width of the product's."""
    count = len(product)
    exponent = np.frexp(np.abs(product))[1] - 1
    exponent_code = np.clip(exponent + rng.integers(-fmt.man_bits - 3, 4, count) + fmt.bias, 1, (1 << fmt.exp_bits) - 1)
    codes = (exponent_code << fmt.man_bits) | rng.integers(0, 1 << fmt.man_bits, count, dtype=np.int64)
    return codes | (rng.integers(0, 2, count, dtype=np.int64) << (fmt.width - 1))


def cancelling_codes(fmt: FloatFormat, product: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Codes within two steps of -product (a zero product gets +0 or a neighbour of it)."""
    magnitude = np.clip(
        nearest_code_magnitude(fmt, np.abs(product)) + rng.integers(-2, 3, len(product)), 0, (1 << (fmt.width - 1)) - 1
    )
    return magnitude | (np.where(product > 0, 1, 0).astype(np.int64) << (fmt.width - 1))


def code_values(fmt: FloatFormat) -> np.ndarray:
    """float64 value of every code (exact: formats are limited to binary64, docs §1)."""
    return np.array([float(fmt.decode(code)) for code in range(fmt.code_count)])


def nearest_code_magnitude(fmt: FloatFormat, magnitude: np.ndarray) -> np.ndarray:
    """A code (sign bit clear) whose value is within one ulp of each magnitude, clamped to the format."""
    mantissa, exponent = np.frexp(np.where(magnitude > 0, magnitude, 1.0))
    exponent_code = np.clip(exponent - 1 + fmt.bias, 0, (1 << fmt.exp_bits) - 1)
    fraction = np.floor((mantissa * 2 - 1) * (1 << fmt.man_bits)).astype(np.int64)
    code = (exponent_code.astype(np.int64) << fmt.man_bits) | np.clip(fraction, 0, (1 << fmt.man_bits) - 1)
    return np.where(magnitude > 0, code, 0)


def mismatch_report(
    cfg: MacConfig, vectors: Vectors, expected: np.ndarray, got: np.ndarray, limit: int = 5
) -> list[str]:
    """Readable lines for the first mismatching vectors."""
    lines = []
    for index in np.flatnonzero(expected != got)[:limit]:
        a, b, c = int(vectors.a[index]), int(vectors.b[index]), int(vectors.acc[index])
        lines.append(
            f"a={a:#x} ({float(cfg.a_format.decode(a))}) b={b:#x} ({float(cfg.b_format.decode(b))}) "
            f"acc={c:#x} ({float(cfg.acc.decode(c))}): expected {unpack_result(int(expected[index]))}, "
            f"got {unpack_result(int(got[index]))}"
        )
    return lines


# ------------------------------------------------------------------------------------------- MAC cycles
def random_code(fmt, rng: random.Random) -> int:
    """Half uniform codes, half codes of binades around 1 (long sums that swamp and cancel); fixed-point
    formats get uniform codes (a long run of them overflows a narrow accumulator)."""
    if rng.random() < 0.5 or not hasattr(fmt, "bias"):
        return rng.randrange(fmt.code_count)
    exponent = fmt.bias + rng.randint(-2, 2)
    return (rng.getrandbits(1) << (fmt.width - 1)) | (exponent << fmt.man_bits) | rng.getrandbits(fmt.man_bits)


def schedule_dot_products(cfg: MacConfig, lengths: list[int], seed: int, pipeline: int = 0):
    """Cycles (valid, clear, a, b) for back-to-back dot products, and for each one the cycles at which the
    registered acc must show its result (from the result latency until the next dot product starts);
    ``pipeline`` stages (rtl.PipelinedMAC) add to the latency."""
    rng = random.Random(seed)
    latency = (1 if cfg.chunk_size is None else 2) + pipeline
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
