"""``hwmodel sweep --executor ray`` (issue #18 item 1): the same sweep gives the same bytes as local workers,
synthesis included; a failing task, Ctrl-C and SIGTERM behave as with local workers.

The cluster tests start a local Ray instance (two CPUs, no dashboard); they run by ``make test-cluster``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hwmodel.execution import jobs
from hwmodel.execution.cache import ResultCache
from hwmodel.execution.jobs import Executor, run_cached, worker_pool
from test_sweep import ROOT, TRAINING, _alive, _descendants, fails, run_cli, sweep_args

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install -e '.[cluster]')")


@pytest.mark.cluster
@needs_ray
def test_ray_executor_gives_the_local_results_byte_for_byte(tmp_path: Path) -> None:
    """Each executor with its own synthesis cache, so the Verilog exports, Yosys, Liberty mapping and OpenSTA
    runs (targets generic, sky130) and the accuracy points all run as Ray tasks in the second sweep."""
    local = run_cli(sweep_args(tmp_path, tmp_path / "local-cache", "local", "--executor", "local"))
    assert local.returncode == 0, local.stderr
    on_ray = run_cli(sweep_args(tmp_path, tmp_path / "ray-cache", "ray", "--executor", "ray"))
    assert on_ray.returncode == 0, on_ray.stderr
    assert "synthesis: reusing 0 of 2 points from the cache" in on_ray.stderr
    for table in ("results.csv", "area.csv"):
        assert (tmp_path / "ray" / table).read_bytes() == (tmp_path / "local" / table).read_bytes(), table
    points = sorted(path.name for path in (tmp_path / "ray" / "points").iterdir())
    assert points == sorted(path.name for path in (tmp_path / "local" / "points").iterdir())
    rerun = run_cli(sweep_args(tmp_path, tmp_path / "ray-cache", "ray", "--executor", "ray"))
    assert rerun.returncode == 0, rerun.stderr
    assert "accuracy: reusing 2 of 2 points (all finished)" in rerun.stderr
    assert "synthesis: reusing 2 of 2 points from the cache" in rerun.stderr


@dataclass(frozen=True)
class _Job:
    """A cached job that says where it ran; ``fail_after_s`` makes it raise once the others are done."""

    name: str
    fail_after_s: float | None = None

    @property
    def key(self) -> str:
        return f"job-{self.name}"

    def run(self) -> dict:
        if self.fail_after_s is not None:
            time.sleep(self.fail_after_s)
            raise ValueError(f"job {self.name} failed")
        import importlib

        in_ray = importlib.util.find_spec("ray") is not None and importlib.import_module("ray").is_initialized()
        return {"name": self.name, "in_ray_task": in_ray}


@pytest.mark.cluster
@needs_ray
@pytest.mark.parametrize("kind", ["local", "ray"])
def test_run_cached_runs_jobs_on_the_executor_and_keeps_finished_results_on_failure(kind: str, tmp_path: Path) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test file
    cache = ResultCache(tmp_path)
    with pytest.raises(ValueError, match="job c failed"):
        run_cached([_Job("a"), _Job("b"), _Job("c", fail_after_s=5)], cache, workers=2, progress=False,
                   executor=Executor(kind))
    assert cache.get("job-a") == {"name": "a", "in_ray_task": kind == "ray"}
    assert cache.get("job-b") == {"name": "b", "in_ray_task": kind == "ray"}
    assert cache.get("job-c") is None


@pytest.mark.cluster
@needs_ray
@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_failing_task_raises_its_own_exception(kind: str) -> None:
    with worker_pool(2, Executor(kind)) as pool:
        assert pool.submit(int, "7").result() == 7
        with pytest.raises(ValueError, match="invalid literal for int"):
            pool.submit(int, "seven").result()


def test_ray_executor_without_ray_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(jobs, "ray_installed", lambda: False)
    message = fails(sweep_args(tmp_path, tmp_path / "cache", "x", "--executor", "ray"), capsys)
    assert "--executor: ray needs Ray, which is not installed: pip install -e '.[cluster]'" in message
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("extra", "expected"), [
    (["--executor", "dask"], "--executor: expected one of local, ray, got 'dask'"),
    (["--ray-address", "auto"], "--ray-address: a Ray address has no effect without executor 'ray'"),
])
def test_executor_misuse_is_one_line_before_work(extra, expected, capsys, tmp_path: Path) -> None:
    message = fails(sweep_args(tmp_path, tmp_path / "cache", "x", *extra), capsys)
    assert expected in message
    assert not (tmp_path / "x").exists()


@pytest.mark.cluster
@needs_ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_under_ray_stops_its_tasks_keeps_points_and_says_so_in_one_line(tmp_path: Path, signum) -> None:
    """As tests/test_sweep.py's local-worker test: SIGTERM to the driver once a point is saved; Ctrl-C to the
    whole foreground group (driver, raylet, Ray workers) while the baseline trains."""
    reports = tmp_path / "reports"
    arguments = ["sweep", "--acc", "e4m7,e5m6,e3m8", "--accuracy", *TRAINING, "--jobs", "1", "--no-blocks",
                 "--cache-dir", str(tmp_path / "cache"), "--reports", str(reports), "--name", "s", "--executor", "ray"]
    points = reports / "s" / "points"
    ready = (lambda: points.is_dir()) if signum == signal.SIGINT else (lambda: bool(list(points.glob("accuracy-*.json"))))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "hwmodel.cli", *arguments], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # let the next task start in its Ray worker
    workers = _descendants(process.pid)
    assert workers, "the sweep should be running Ray's processes"
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted: (\d) of 3 points saved; rerun the same command to finish", last)
    assert match, stderr
    assert int(match.group(1)) == len(list(points.glob("accuracy-*.json"))) >= (signum == signal.SIGTERM)
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "a Ray process outlived its sweep"


@pytest.mark.parametrize(("extra", "expected"), [
    (["--device", "tpu"], "--device: expected one of cpu, cuda, got 'tpu'"),
    (["--device", "cuda"], "--device: device 'cuda' needs a GPU on this machine (torch.cuda.is_available() is False)"),
])
def test_device_misuse_is_one_line_before_work(extra, expected, capsys, tmp_path: Path) -> None:
    import torch

    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    message = fails(sweep_args(tmp_path, tmp_path / "cache", "x", *extra), capsys)
    assert expected in message
    assert not (tmp_path / "x").exists()


@needs_ray
def test_cuda_points_on_a_ray_cluster_declare_a_gpu_and_have_their_own_keys() -> None:
    from hwmodel.workloads.digits import accuracy_determinants, baseline_determinants
    from hwmodel.sweep.spec import SweepSpec, apply_options
    from lba_core import MacConfig

    on_cpu = SweepSpec()
    on_gpus = apply_options(on_cpu, {"--device": "cuda", "--executor": "ray", "--ray-address": "ray://head:10001"},
                            from_file=False)  # the cluster's GPUs are not this machine's: no local check
    assert on_gpus.accuracy.device == "cuda"
    assert "device" not in baseline_determinants(on_cpu)  # CPU points keep the keys they had before the setting
    assert baseline_determinants(on_gpus) == {**baseline_determinants(on_cpu), "device": "cuda"}
    cfg = MacConfig(input="e4m3", acc="e4m7")
    assert accuracy_determinants(on_gpus, cfg) != accuracy_determinants(on_cpu, cfg)
