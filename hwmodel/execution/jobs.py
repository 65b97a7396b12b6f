"""Cached, parallel execution of independent jobs (Verilog exports, Yosys runs, training points).

A job is a picklable object with a ``key`` (content hash of everything that determines its result) and a
``run()`` method returning a JSON-ready result. Cached results are read in the calling process; the others
run in a process pool, each result cached by the caller as soon as it arrives (one writer per cache).

Every pool comes from :func:`worker_pool`, which owns the workers' lifetime: they are spawned (never forked
from a parent that may hold torch or Numba thread pools), ignore Ctrl-C (the parent decides), run in their own
process group (so their Yosys subprocesses can be stopped with them), die with the parent even if it is
killed, and keep their temporary files in one scratch folder. When the caller's block raises (a failed job,
Ctrl-C, SIGTERM) the workers are killed at once instead of being waited for, and the scratch folder goes.

With ``executor=Executor("ray")`` the same block gets a :class:`RayPool` instead: the same ``submit`` returning a
``concurrent.futures.Future``, each call one Ray task declaring one CPU, so the caller's code does not change.
:func:`executor_session` keeps one Ray connection for several pools (a sweep's synthesis stages and points).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from lba_core import ConfigError

from .cache import ResultCache
from .interrupt import Interrupted

SCRATCH_PREFIX = "lba-workers-"
EXECUTORS = ("local", "ray")
RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install -e '.[cluster]'"
#: A local Ray instance on a small machine: no dashboard, a small object store (results are small JSON).
RAY_OBJECT_STORE_BYTES = 200 * 2**20
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


@dataclass(frozen=True)
class Executor:
    """Where pool jobs run: ``local`` worker processes, or ``ray`` tasks (``address`` None: a Ray instance
    started on this machine for the block; otherwise that running cluster's address)."""

    kind: str = "local"
    address: str | None = None


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _in_ray_worker(function: Callable[..., Any], args: tuple) -> Any:
    """One task in a (long-lived) Ray worker: its temporary files in a folder that goes with the task."""
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX) as scratch:
        previous = tempfile.tempdir, os.environ.get("TMPDIR")
        tempfile.tempdir = os.environ["TMPDIR"] = scratch
        try:
            return function(*args)
        finally:
            tempfile.tempdir = previous[0]
            if previous[1] is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = previous[1]


class RayPool:
    """``submit`` as in a process pool; each call becomes a Ray task declaring one CPU (and ``gpus``)."""

    def __init__(self, ray: Any, gpus: float = 0.0):
        self._ray = ray
        self._task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_in_ray_worker)
        self._refs: list[Any] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        ref = self._task.remote(fn, args)
        self._refs.append(ref)
        return ref.future()

    def cancel_all(self) -> None:
        for ref in self._refs:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)


def _ray_environment() -> dict[str, str]:
    """What every Ray worker gets: one thread per point (as local workers: the point pins torch/Numba
    itself), and this process's Numba cache folder when it names one (compiled kernels shared)."""
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    if "NUMBA_CACHE_DIR" in os.environ:
        env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
    return env


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # read by ray.init: no usage report, no network
    return ray


@contextlib.contextmanager
def executor_session(executor: Executor | None, workers: int) -> Iterator[None]:
    """Within the block, every :func:`worker_pool` of a ``ray`` executor shares one connection to Ray (a local
    instance with ``workers`` CPUs, or the cluster at ``executor.address``) instead of starting its own;
    a local executor needs nothing. The connection made here is closed on the way out."""
    if executor is None or executor.kind != "ray":
        yield
        return
    with _ray_connection(_import_ray(), workers, executor.address):
        yield


@contextlib.contextmanager
def _ray_connection(ray: Any, workers: int, address: str | None) -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        runtime = {"env_vars": _ray_environment()}
        # ray.init installs its own SIGTERM handlers (Python's exits, the core worker's aborts with a stack
        # dump); the caller's handler (hwmodel.execution.interrupt: stop, keep what is finished, one line) comes back.
        on_sigterm = signal.getsignal(signal.SIGTERM)
        if address is None:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, object_store_memory=RAY_OBJECT_STORE_BYTES,
                     log_to_driver=False, runtime_env=runtime)
        else:
            ray.init(address=address, log_to_driver=False, runtime_env=runtime)
        if on_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def _ray_pool(workers: int, executor: Executor, gpus_per_task: float) -> Iterator[RayPool]:
    ray = _import_ray()
    with _ray_connection(ray, workers, executor.address):
        pool = RayPool(ray, gpus_per_task)
        try:
            yield pool
        except BaseException:
            pool.cancel_all()
            raise


@contextlib.contextmanager
def worker_pool(workers: int, executor: Executor | None = None, *,
                gpus_per_task: float = 0.0) -> Iterator[ProcessPoolExecutor | RayPool]:
    """A process pool that never outlives the block: see the module docstring. ``gpus_per_task`` is what each
    Ray task declares besides its CPU (Ray then places it on a node with a free GPU); local workers ignore it.

    On success the pool is shut down normally. A failure whose error names a log kept in the scratch folder
    (a failed Yosys run's ``log_path``) keeps the folder; any other failure, a timeout or an interruption
    removes it.
    """
    if executor is not None and executor.kind == "ray":
        with _ray_pool(workers, executor, gpus_per_task) as pool:
            yield pool
        return
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
    except BaseException as error:
        _kill_workers(pool)
        keep_scratch = _holds_log(error, Path(scratch))
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def progress_bars(progress: bool) -> bool:
    """Whether to draw progress bars: asked for and stderr is a terminal (a log file gets no bar lines)."""
    return progress and sys.stderr.isatty()


def _holds_log(error: BaseException, scratch: Path) -> bool:
    """Whether ``error`` names a kept log inside ``scratch`` (a failed tool run's, e.g. rtl.yosys.ToolError's
    ``log_path``): only then does the scratch folder outlive the pool (a timeout's error names none)."""
    log_path = getattr(error, "log_path", None)
    return log_path is not None and Path(log_path).is_relative_to(scratch) and Path(log_path).exists()


def each_result(futures: dict[Future, Any]) -> Iterator[tuple[Any, Any]]:
    """``(tag, result)`` of each future as it completes; the first failure propagates."""
    for future in as_completed(futures):
        yield futures[future], future.result()


def _run(job: Job) -> Any:
    return job.run()


def run_cached(
    jobs: Sequence[Job], cache: ResultCache, workers: int = 1, progress: bool = True, desc: str = "jobs",
    executor: Executor | None = None,
) -> list[Any]:
    """Results of ``jobs`` in order, the missing ones run by ``executor`` (default: local workers). Jobs with
    equal keys run once. A failing job stops the others and its exception propagates (results that arrived
    before it stay cached)."""
    keys = [job.key for job in jobs]
    results = [cache.get(key) for key in keys]
    missing: dict[str, list[int]] = {}
    for index, result in enumerate(results):
        if result is None:
            missing.setdefault(keys[index], []).append(index)
    if not missing:
        return results
    with (
        tqdm(total=len(missing), desc=desc, unit="run", disable=not progress_bars(progress), leave=False) as bar,
        worker_pool(min(workers, len(missing)), executor) as pool,
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
