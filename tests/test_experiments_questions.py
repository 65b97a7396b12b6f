"""The paper-question experiments (experiments/q1_*, q5_*, q9_*): their reports from saved runs and their
refusals of bad options. Training itself is not run here (minutes); `make experiments` runs it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
LABELS = list(range(10)) * 4  # 40 validation examples


@pytest.fixture
def load(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return importlib.import_module


def predictions(right: int) -> list[int]:
    """Predictions of which the first ``right`` are correct."""
    return [label if index < right else (label + 1) % 10 for index, label in enumerate(LABELS)]


def write_runs(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = {"command": ".venv/bin/python experiments/x.py", "finished": "2026-12-01 11:00 UTC"}
    (folder / "runs.jsonl").write_text("".join(json.dumps({**stamp, **row}) + "\n" for row in rows))


def test_runs_resume_and_select(load, tmp_path):
    questions = load("questions")
    runs = questions.Runs(tmp_path / "runs.jsonl", ("acc", "seed"))
    runs.add({"acc": "e3m2", "seed": 0, "value": 1})
    again = questions.Runs(tmp_path / "runs.jsonl", ("acc", "seed"))
    assert again.done(acc="e3m2", seed=0) and not again.done(acc="e3m2", seed=1)
    assert again.select(acc="e3m2")[0]["value"] == 1


def test_runs_are_saved_as_points_and_old_run_logs_still_read(load, tmp_path):
    questions = load("questions")
    # a run log of the earlier version, its last line cut short by an interruption
    (tmp_path / "runs.jsonl").write_text(json.dumps({"acc": "e3m2", "seed": 0, "value": 1}) + "\n" + '{"acc": "e3')
    runs = questions.Runs(tmp_path / "runs.jsonl", ("acc", "seed"))
    assert runs.done(acc="e3m2", seed=0) and len(runs.rows) == 1
    runs.add({"acc": "e3m2", "seed": 2, "value": 3})
    runs.add({"acc": "e3m2", "seed": 1, "value": 2})
    saved = sorted((tmp_path / "points").glob("run-*.json"))
    assert len(saved) == 2 and all(json.loads(path.read_text())["complete"] for path in saved)
    again = questions.Runs(tmp_path / "runs.jsonl", ("acc", "seed"))
    assert [row["seed"] for row in again.rows] == [0, 2, 1]  # the log's rows, then the points as added
    saved[0].write_text(saved[0].read_text()[:20])  # a damaged point is not a finished run
    assert len(questions.Runs(tmp_path / "runs.jsonl", ("acc", "seed")).rows) == 2


def test_committed_run_logs_are_read(load):
    questions = load("questions")
    reports = EXPERIMENTS.parent / "reports"
    logs = sorted(reports.glob("*/runs.jsonl"))
    assert logs
    for log in logs:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        assert len(questions.Runs(log, ()).rows) == len(lines), log


def test_q1_report_compares_each_split_with_one_stage(load, tmp_path):
    q1 = load("q1_underflow_split")
    rows = []
    for seed in (0, 1):
        for split, right in ((0, 20), (1, 30), (2, 38)):
            rows.append({"acc": "e3m2", "split": split, "seed": seed, "epochs": 2, "model": "resnet", "data": "digits",
                         "cfg": "e4m3xe4m3-e3m2_b-12-rne", "lr": 1e-3, "baseline": 0.9,
                         **{f"zero_shot_{e}_rate": 0.01 for e in ("overflow", "underflow", "swamp")},
                         "labels": LABELS, "predictions": {"stage2": predictions(right + seed),
                                                           "stage1_nouf": predictions(right)}})
    write_runs(tmp_path, rows)
    assert q1.main(["--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| 0 + 2 | 51.2 [" in text and "(reference)" in text
    assert "| 2 + 0 | 96.2 [" in text and "+45.0 [" in text  # 38.5/40 - 20.5/40


def test_q1_refuses_a_split_beyond_the_epochs(load, capsys):
    q1 = load("q1_underflow_split")
    with pytest.raises(SystemExit):
        q1.parse_args(["--epochs", "2", "--splits", "0,3"])
    assert "--splits" in capsys.readouterr().err


def test_q1_minilm_report_pairs_sentences(load, tmp_path):
    q1m = load("q1_underflow_split_minilm")
    assert q1m.run_order([0, 20, 40, 60, 80], 80) == [0, 80, 40, 20, 60]

    def interval(value):
        return {"estimate": value, "low": value - 0.01, "high": value + 0.01}

    def measured(cosine, difference=None):
        return {"metrics": {"mean_cosine": interval(cosine), "spearman": interval(0.9), "top1": interval(1.0)},
                "difference": None if difference is None else
                {"mean_cosine": interval(difference), "spearman": interval(0.0), "top1": interval(0.0)}}

    rows = [{"acc": "e3m8", "split": split, "seed": 0, "steps": 0 if split is None else 4, "cfg": "c", "lr": 1e-4,
             "sentences": 12, "training_sentences": 270, "losses": [] if split is None else [0.1] * 4,
             "underflow_on": measured(cosine, difference), "underflow_off": measured(0.95)}
            for split, cosine, difference in ((None, 0.6, None), (0, 0.7, None), (4, 0.65, -0.05))]
    rows += [{**row, "seed": 1} for row in rows if row["split"] is not None]
    write_runs(tmp_path, rows)
    assert q1m.main(["--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| 0 + 4 | 0.7000 [0.6900, 0.7100] |" in text and "(reference)" in text
    assert "| 4 + 0 | 0.6500 [" in text and "-0.0500 [-0.0600, -0.0400]" in text
    assert "| 4 + 0 | 0.6500 / 0.6500 | 0.6500 | -0.0500 / -0.0500 |" in text  # the seeds' summary


def test_q9_report_counts_macs_per_arm(load, tmp_path):
    q9 = load("q9_scratch_vs_finetune")
    common = {"epochs": 2, "model": "resnet", "data": "digits", "steps_per_epoch": 3, "examples_per_epoch": 100,
              "labels": LABELS}
    rows = [{**common, "arm": "float", "acc": "float", "seed": 0, "cfg": "float", "lba_epochs": 0,
             "predictions": {"final": predictions(40)}}]
    for arm, lba_epochs, right in (("finetune", 1, 36), ("scratch", 2, 30)):
        rows.append({**common, "arm": arm, "acc": "e4m3", "seed": 0, "cfg": "e4m3xe4m3-e4m3_b-4-rne",
                     "lba_epochs": lba_epochs, "forward_macs_accumulator": 1000, "forward_macs_float": 0,
                     "predictions": {"final": predictions(right)}})
    write_runs(tmp_path, rows)
    assert q9.main(["--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "N = 2 epochs = 6 optimizer steps" in text and "-15.0 [" in text
    # scratch: 2 epochs x 100 examples x 1000 forward MACs on the accumulator; 3 x that in all
    assert "| scratch | 0 + 2 | 2e+05 | 4e+05 |" in text and "| float | 2 + 0 | 0 | 6e+05 |" in text


def test_q5_refuses_unknown_estimators(load, capsys):
    q5 = load("q5_estimators_conv")
    with pytest.raises(SystemExit):
        q5.parse_args(["--estimators", "ste,backprop"])
    assert "--estimators" in capsys.readouterr().err


def test_q5_report_pairs_estimators_with_ste_and_shows_costs(load, tmp_path):
    q5 = load("q5_estimators_conv")
    rows = []
    for seed in (0, 1):
        for estimator, right in (("ste", 20), ("recursive-of", 28)):
            rows.append({"acc": "e3m4_b-10", "estimator": estimator, "seed": seed, "epochs": [1, 1],
                         "model": "resnet", "data": "digits", "cfg": "c", "baseline": 0.97, "labels": LABELS,
                         "predictions": {"zero_shot": predictions(4), "stage2": predictions(right + seed)},
                         **{f"zero_shot_{e}_rate": 0.01 for e in ("overflow", "underflow", "swamp")}, "seconds": 10})
    for estimator, seconds in (("ste", 0.2), ("recursive-of", 0.5)):
        rows.append({"acc": "cost", "estimator": estimator, "seed": 0, "epochs": [1, 1], "cfg": "c",
                     "seconds_per_step": seconds, "peak_rss_kib": 700 * 1024, "batch": 64,
                     "stored_d_bytes": 66 * 2**20})
    write_runs(tmp_path, rows)
    assert q5.main(["--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "(8 bits" in text and "+20.0 [" in text and "| +20.0/+20.0 |" in text  # 28.5/40 - 20.5/40
    assert "| recursive-of | 500 | 2.5 | 700 | 66 |" in text and "| ste | 200 | 1.0 | 700 | 0 (not needed) |" in text
