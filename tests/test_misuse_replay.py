"""Issue 27's command-line misuse cases, replayed (tests/misuse_replay.py), and the checks behind each fix.

Two cases are marked slow (``make test-full``, ``make misuse-replay``): ``sweep --array 1000x1000`` (the same
limit as ``synth --array 1000x1000``, but ``hwmodel sweep`` takes 10-16 s to start on the loaded machine) and
``paper-claim`` under SIGTERM (the same mechanism as ``synth`` under SIGTERM)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import misuse_replay  # noqa: E402

from lba_core import ConfigError, MacConfig  # noqa: E402


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name, marks=[pytest.mark.slow] if case.slow else [])
                                  for case in misuse_replay.CASES])
def test_misuse_case(case, tmp_path):
    outcome = misuse_replay.replay(case, tmp_path)
    assert outcome.ok, outcome.line()


def test_the_replay_catches_what_it_is_for(tmp_path):
    """A command that succeeds, prints several lines and leaves an lba-* folder fails on each count."""
    case = misuse_replay.Case("planted", 0, ("synth", "--help"))
    outcome = misuse_replay.replay(case, tmp_path / "a")
    assert outcome.problems and outcome.problems[0] == "exit status 0"
    assert any("lines on stderr" in problem for problem in outcome.problems)

    def leave_temp(root: Path) -> None:
        (root.parent / "tmp" / "lba-left").mkdir(parents=True)

    leaky = misuse_replay.Case("leaky", 0, ("synth", "--in", "e4m3", "--acc", "e4m0x"), prepare=leave_temp)
    outcome = misuse_replay.replay(leaky, tmp_path / "b")
    assert outcome.returncode == 2 and any("lba-left" in problem for problem in outcome.problems)


# ------------------------------------------------------------------------------------------ case 1: resource limits
def test_resource_limits():
    from hwmodel.synthesis.limits import MAX_ARRAY_SIDE, check_array_size, check_datapath_width

    check_array_size(MAX_ARRAY_SIDE, MAX_ARRAY_SIDE)
    with pytest.raises(ConfigError, match=rf"--array 1000x1000: at most {MAX_ARRAY_SIDE} rows"):
        check_array_size(1000, 1000)
    with pytest.raises(ConfigError, match=r"--array 8x65"):
        check_array_size(8, MAX_ARRAY_SIDE + 1)
    for shipped in ("int8:int32", "int8:int16_sat", "e4m3:fx48.18", "e4m3:fx32.10_sat", "fp16:int32", "e4m3:e4m7",
                    "fp32:fp32"):
        check_datapath_width(MacConfig(input=shipped.split(":")[0], acc=shipped.split(":")[1]))
    with pytest.raises(ConfigError, match=r"556 bits wide, more than synthesis handles \(128\)"):
        check_datapath_width(MacConfig(input="fp32", acc="int16_sat"))


# --------------------------------------------------------------------------------- case 2: the main job's folder
def _sweep_args(**given) -> argparse.Namespace:
    from hwmodel.cli.sweep import GRID_OPTIONS

    values = {option: None for option in GRID_OPTIONS}
    values.update(name=None, config=None, reports=Path("reports"))
    values.update(given)
    return argparse.Namespace(**values)


def test_only_the_main_job_writes_its_folder():
    from hwmodel.cli.sweep import AREA_ONLY_NAME, check_main_job_folder
    from hwmodel.sweep.spec import MAIN_JOB, SweepSpec

    check_main_job_folder(_sweep_args(), MAIN_JOB)  # `hwmodel sweep`
    check_main_job_folder(_sweep_args(acc=["e4m7"], name="mine"), SweepSpec(name="mine"))
    check_main_job_folder(_sweep_args(acc=["e4m7"]), SweepSpec(name=AREA_ONLY_NAME))  # area only: reports/area
    with pytest.raises(ConfigError, match=r"--name: a sweep with its own grid \(--acc ...\) needs --name"):
        check_main_job_folder(_sweep_args(acc=["e4m7"]), SweepSpec())
    with pytest.raises(ConfigError, match=r"\(--in ...\)"):
        check_main_job_folder(_sweep_args(inputs=["e5m2"]), MAIN_JOB)


# ------------------------------------------------------------------------- case 3: temp folders and Yosys errors
class _ToolError(Exception):
    def __init__(self, log_path):
        super().__init__("failed")
        self.log_path = log_path


def test_a_pool_keeps_its_scratch_only_for_a_named_log(tmp_path, monkeypatch):
    from hwmodel.execution import jobs

    monkeypatch.setattr(jobs.tempfile, "tempdir", str(tmp_path))
    for keep in (False, True):
        with pytest.raises(_ToolError):
            with jobs.worker_pool(1):
                scratch = next(tmp_path.glob(jobs.SCRATCH_PREFIX + "*"))
                (scratch / "run").mkdir()
                log = scratch / "run" / "yosys.log"
                log.write_text("log\n")
                raise _ToolError(log if keep else None)
        assert scratch.exists() is keep
        if keep:
            import shutil

            shutil.rmtree(scratch)


def test_yosys_failure_without_a_log_is_one_line(capsys):
    from hwmodel.cli.synth import yosys_failure

    error = _ToolError(None)
    error.args = ("yosys ran past 5 s\nline of log\nanother",)
    assert yosys_failure("synth", error) == 1
    assert capsys.readouterr().err.splitlines() == ["hwmodel synth: error: yosys ran past 5 s"]
    error.log_path = Path("kept/yosys.log")  # a failure with a kept log shows the log's tail
    yosys_failure("synth", error)
    assert len(capsys.readouterr().err.splitlines()) == 3


# ------------------------------------------------------------------------------------- case 5: the report's input
def test_results_columns_that_come_together():
    from hwmodel.report.data import missing_column

    assert missing_column(["config", "acc", "ge", "ge_reduction", "top1_zero_shot", "top1_stage2",
                           "top1_stage2_sd"]) is None
    assert missing_column(["config", "acc", "top1_zero_shot", "top1_finetuned"]) == ("top1_stage2", "top1_zero_shot")
    assert missing_column(["config", "acc", "ge_reduction"]) == ("ge", "ge_reduction")
    assert missing_column(["config", "acc", "top1_zero_shot", "top1_stage2", "top1_stage2_sd", "top1_zero_shot_sd",
                           "ge_reduction"]) == ("ge", "ge_reduction")  # the needs are declared in synthesis/columns.py


def test_statistics_words_with_predictions_but_no_fp32_row():
    from hwmodel.report.prose import statistics_words

    without = statistics_words(pd.DataFrame({"config": ["a"]}))
    assert without.startswith("No per-example predictions")
    intervals_only = statistics_words(pd.DataFrame({"config": ["a"], "stage2_low": [0.8], "stage2_test": [None]}))
    assert intervals_only.startswith("Intervals: 95% Wilson") and "No row is compared" in intervals_only


# ------------------------------------------------------------------------------------ case 7: no bars in a log
def test_progress_bars_only_on_a_terminal(monkeypatch):
    from hwmodel.execution.jobs import progress_bars

    class Stream:
        def __init__(self, tty: bool):
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert not progress_bars(True)
    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert progress_bars(True) and not progress_bars(False)


# --------------------------------------------------------------------- case 2: the notice about replaced rows
def test_replaced_rows_notice_says_where_points_are(tmp_path):
    from hwmodel.sweep import sweep

    (tmp_path / "results.csv").write_text("config,acc\nx,e4m7\n")
    lines: list[str] = []
    assert sweep._earlier_rows(tmp_path, {"settings": {"epochs": 1}}, {"epochs": 2}, lines.append) is None
    assert f"no points of theirs are saved in {tmp_path / 'points'}" in lines[-1], lines
    (tmp_path / "points").mkdir()
    sweep._earlier_rows(tmp_path, {"settings": {"epochs": 1}}, {"epochs": 2}, lines.append)
    assert f"their saved points stay in {tmp_path / 'points'}" in lines[-1], lines
