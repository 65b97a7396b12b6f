"""Cached, parallel execution of independent jobs (Verilog exports, Yosys runs).

A job is a picklable object with a ``key`` (content hash of everything that determines its result) and a
``run()`` method returning a JSON-ready result. Cached results are read in the calling process; the others
run in a process pool, each result cached by the caller as soon as it arrives (one writer per cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol

from tqdm import tqdm

from .cache import ResultCache


class Job(Protocol):
    @property
    def key(self) -> str: ...

    def run(self) -> Any: ...


def _run(job: Job) -> Any:
    return job.run()


def run_cached(
    jobs: Sequence[Job], cache: ResultCache, workers: int = 1, progress: bool = True, desc: str = "jobs"
) -> list[Any]:
    """Results of ``jobs`` in order. Jobs with equal keys run once. A failing job cancels the pending ones
    and its exception propagates (results that arrived before it stay cached)."""
    keys = [job.key for job in jobs]
    results = [cache.get(key) for key in keys]
    missing: dict[str, list[int]] = {}
    for index, result in enumerate(results):
        if result is None:
            missing.setdefault(keys[index], []).append(index)
    if not missing:
        return results
    with (
        tqdm(total=len(missing), desc=desc, unit="run", disable=not progress, leave=False) as bar,
        ProcessPoolExecutor(max_workers=max(1, min(workers, len(missing)))) as pool,
    ):
        futures = {pool.submit(_run, jobs[indices[0]]): key for key, indices in missing.items()}
        try:
            for future in as_completed(futures):
                key = futures[future]
                result = future.result()
                cache.put(key, result)
                for index in missing[key]:
                    results[index] = result
                bar.update()
        except BaseException:
            for pending in futures:
                pending.cancel()
            raise
    return results
