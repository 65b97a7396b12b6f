"""``hwmodel sweep --executor ray`` (issue #18 item 1): the same sweep gives the same bytes as local workers.

The cluster tests start a local Ray instance (two CPUs, no dashboard); they run by ``make test-cluster``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hwmodel import jobs
from hwmodel.jobs import Executor, worker_pool
from test_sweep import fails, run_cli, sweep_args

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install -e '.[cluster]')")


@pytest.mark.cluster
@needs_ray
def test_ray_executor_gives_the_local_results_byte_for_byte(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    local = run_cli(sweep_args(tmp_path, cache, "local", "--executor", "local"))
    assert local.returncode == 0, local.stderr
    on_ray = run_cli(sweep_args(tmp_path, cache, "ray", "--executor", "ray"), env={"RAY_USAGE_STATS_ENABLED": "0"})
    assert on_ray.returncode == 0, on_ray.stderr
    assert (tmp_path / "ray" / "results.csv").read_bytes() == (tmp_path / "local" / "results.csv").read_bytes()
    points = sorted(path.name for path in (tmp_path / "ray" / "points").iterdir())
    assert points == sorted(path.name for path in (tmp_path / "local" / "points").iterdir())
    rerun = run_cli(sweep_args(tmp_path, cache, "ray", "--executor", "ray"))
    assert rerun.returncode == 0, rerun.stderr
    assert "accuracy: reusing 2 of 2 points (all finished)" in rerun.stderr


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
