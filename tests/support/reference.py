"""Expected results of the cosimulation from the Fraction reference (lba_core.fmaq), spread over processes."""

from __future__ import annotations

import functools
import multiprocessing
from fractions import Fraction

import numpy as np
from tqdm import tqdm

from lba_core import MacConfig, fmaq

from .vectors import Vectors, check_packable, pack_result

#: Reference runs per process-pool task.
REFERENCE_CHUNK = 20000


def expected_results(cfg: MacConfig, vectors: Vectors, processes: int = 1, progress: bool = False) -> np.ndarray:
    """The reference's packed result word for every vector (lba_core.fmaq on exact values).

    FMAq depends on a and b only through their exact product, so the reference runs once per distinct
    (product, accumulator) pair; ``processes`` > 1 spreads those runs over a process pool, ``progress``
    shows a tqdm bar.
    """
    check_packable(cfg)
    a_values = [cfg.a_format.decode(code) for code in range(cfg.a_format.code_count)]
    b_values = [cfg.b_format.decode(code) for code in range(cfg.b_format.code_count)]
    product_ids: dict[Fraction, int] = {}
    pair_ids = np.array(
        [product_ids.setdefault(x * y, len(product_ids)) for x in a_values for y in b_values], dtype=np.int64
    )
    pair = vectors.a * cfg.b_format.code_count + vectors.b
    keys = pair_ids[pair] * cfg.acc.code_count + vectors.acc
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    triples = list(zip(vectors.a[first].tolist(), vectors.b[first].tolist(), vectors.acc[first].tolist()))
    chunks = [triples[start : start + REFERENCE_CHUNK] for start in range(0, len(triples), REFERENCE_CHUNK)]
    words: list[int] = []
    with tqdm(total=len(triples), desc=f"reference {cfg.name}", unit="fma", disable=not progress) as bar:
        if processes > 1 and len(chunks) > 1:
            with multiprocessing.get_context("fork").Pool(processes) as pool:
                parts = pool.imap(functools.partial(reference_words, cfg), chunks)
                for part in parts:
                    words += part
                    bar.update(len(part))
        else:
            for chunk in chunks:
                words += reference_words(cfg, chunk)
                bar.update(len(chunk))
    return np.array(words, dtype=np.int64)[inverse.ravel()]


def reference_words(cfg: MacConfig, triples: list[tuple[int, int, int]]) -> list[int]:
    """Packed lba_core.fmaq results; decoding and encoding are memoized (they cost as much as fmaq itself)."""
    acc = cfg.acc
    a_values = cached(cfg.a_format.decode)
    b_values = cached(cfg.b_format.decode)
    acc_values = cached(acc.decode)
    acc_codes = cached(acc.encode)
    words = []
    for a, b, c in triples:
        step = fmaq(a_values(a), b_values(b), acc_values(c), cfg)
        words.append(pack_result(acc_codes(step.value), step.overflow, step.underflow, step.swamp))
    return words


def cached(function):
    """A per-call memo of a pure one-argument function."""
    memo = {}

    def lookup(key):
        if key not in memo:
            memo[key] = function(key)
        return memo[key]

    return lookup
