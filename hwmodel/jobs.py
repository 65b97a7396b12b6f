"""Cached, parallel execution of independent jobs (Verilog exports, Yosys runs, training points).

A job is a picklable object with a ``key`` (content hash of everything that determines its result) and a
``run()`` method returning a JSON-ready result. Cached results are read in the calling process; the others
run in a process pool, each result cached by the caller as soon as it arrives (one writer per cache).

Every pool comes from :func:`worker_pool`, which owns the workers' lifetime: they are spawned (never forked
from a parent that may hold torch or Numba thread pools), ignore Ctrl-C (the parent decides), run in their own
process group (so their Yosys subprocesses can be stopped with them), die with the parent even if it is
killed, and keep their temporary files in one scratch folder. When the caller's block raises (a failed job,
Ctrl-C, SIGTERM) the workers are killed at once instead of being waited for, and the scratch folder goes.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from .cache import ResultCache
from .interrupt import Interrupted

SCRATCH_PREFIX = "lba-workers-"
_PR_SET_PDEATHSIG = 1


class Job(Protocol):
    @property
    def key(self) -> str: ...

    def run(self) -> Any: ...


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class _Pool(ProcessPoolExecutor):
    """Workers are started inside ``submit``; they start with Ctrl-C and SIGTERM blocked (the mask is
    inherited), so a signal during their start-up reaches the parent only, never a half-started worker."""

    def submit(self, fn, /, *args, **kwargs):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            return super().submit(fn, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _init_worker(scratch: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    os.setpgid(0, 0)
    try:  # Linux: the kernel kills the worker when its parent dies, even by SIGKILL
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    tempfile.tempdir = scratch
    os.environ["TMPDIR"] = scratch
    # A spawned child inherits the parent's start method, under which every lock it creates (tqdm makes one)
    # is registered with the shared resource tracker; a killed worker would leave it there and the tracker
    # would print a warning after the one-line interruption message. Workers start no processes themselves.
    if hasattr(os, "fork"):
        multiprocessing.set_start_method("fork", force=True)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the worker and the Yosys runs it started
        except (ProcessLookupError, PermissionError):
            pass  # not (yet) a group leader, or gone
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    for process in processes:
        process.join(timeout=10)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool that never outlives the block: see the module docstring.

    On success the pool is shut down normally. A failure other than an interruption keeps the scratch
    folder when it is not empty, because a failed Yosys run's log (named in its error) is kept there.
    """
    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    pool = _Pool(
        max_workers=max(1, workers),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(scratch,),
    )
    keep_scratch = False
    try:
        yield pool
    except (Interrupted, KeyboardInterrupt):
        _kill_workers(pool)
        raise
    except BaseException:
        _kill_workers(pool)
        keep_scratch = any(Path(scratch).iterdir())
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def each_result(futures: dict[Future, Any]) -> Iterator[tuple[Any, Any]]:
    """``(tag, result)`` of each future as it completes; the first failure propagates."""
    for future in as_completed(futures):
        yield futures[future], future.result()


def _run(job: Job) -> Any:
    return job.run()


def run_cached(
    jobs: Sequence[Job], cache: ResultCache, workers: int = 1, progress: bool = True, desc: str = "jobs"
) -> list[Any]:
    """Results of ``jobs`` in order. Jobs with equal keys run once. A failing job stops the others and its
    exception propagates (results that arrived before it stay cached)."""
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
        worker_pool(min(workers, len(missing))) as pool,
    ):
        futures = {pool.submit(_run, jobs[indices[0]]): key for key, indices in missing.items()}
        for key, result in each_result(futures):
            cache.put(key, result)
            for index in missing[key]:
                results[index] = result
            bar.update()
    return results


def call_in_worker(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a fresh worker process (isolates thread settings and memory from the caller)."""
    with worker_pool(1) as pool:
        return pool.submit(function, *args).result()
