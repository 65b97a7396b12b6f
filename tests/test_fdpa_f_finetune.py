"""experiments/fdpa_f_finetune.py (issue 25 item 5, the F sweep after fine-tuning): its spellings and commands,
the "smallest F within noise" rule and its bad-input lines (on hand-made rows; no points run)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture
def finetune(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return importlib.import_module("fdpa_f_finetune")


def test_spellings_join_with_the_zero_shot_sweep(finetune):
    zero_shot = importlib.import_module("fdpa_f_sweep")
    for f in (*finetune.DIGITS_FRACTIONS, *finetune.LM_FRACTIONS):
        for promote in (False, True):
            assert finetune.spelling(f, promote) == zero_shot.spelling(f, promote)


def test_commands_fine_tune_digits_with_seeds_and_the_lm_with_an_fp32_control(finetune, tmp_path):
    digits = finetune.digits_command(tmp_path, 1)
    assert digits[digits.index("--model") + 1] == "resnet" and digits[digits.index("--seeds") + 1] == "3"
    assert "--accuracy" in digits and digits[digits.index("--name") + 1] == "digits"
    accs = digits[digits.index("--acc") + 1].split(",")
    assert accs[0] == "fp32" and "fdpa32f0-e8m13_sub-rtz+promote128" in accs and len(accs) == 1 + 2 * 11
    lm = finetune.lm_command(tmp_path)
    assert lm[lm.index("--accs") + 1].split(",") == [
        "fp32", "fdpa32f6-e8m13_sub-rtz", "fdpa32f7-e8m13_sub-rtz", "fdpa32f8-e8m13_sub-rtz", "fdpa32f9-e8m13_sub-rtz", "fdpa32f11-e8m13_sub-rtz",
        "fdpa32f13-e8m13_sub-rtz", "fdpa32f8-e8m13_sub-rtz+promote128", "fdpa32f9-e8m13_sub-rtz+promote128",
        "fdpa32f11-e8m13_sub-rtz+promote128"]


def _row(finetune, f, low, high, promote=False):
    row = finetune._unit_row("lm", finetune.spelling(f, promote), f, promote)
    row.update(finetuned_mean=3.5, finetuned_diff=(low + high) / 2, finetuned_diff_low=low, finetuned_diff_high=high,
               finetuned_within=low <= 0.0 <= high)
    return row


def test_smallest_f_stops_at_the_first_row_beyond_noise(finetune):
    rows = [_row(finetune, 13, -0.001, 0.001), _row(finetune, 11, 0.001, 0.003), _row(finetune, 9, -0.001, 0.002)]
    best, beyond = finetune.smallest_within(rows, "finetuned", False)
    assert (best["F"], beyond["F"]) == (13, 11)  # F = 9 lands inside its wide interval below a row beyond: not counted
    assert finetune.verdict(rows, "lm", "finetuned", False) == (
        "F = 13", "Δ +0.0000 [-0.0010, +0.0010], while F = 11 gives Δ +0.0020 [+0.0010, +0.0030]")
    rows = [_row(finetune, 13, -0.001, 0.001), _row(finetune, 8, -0.002, 0.001)]
    assert finetune.verdict(rows, "lm", "finetuned", False)[1].endswith("the smallest F tried")
    assert finetune.verdict([_row(finetune, 13, 0.001, 0.002)], "lm", "finetuned", False)[0] == "none of the F measured"


def test_a_unit_not_run_leaves_the_verdict_open(finetune):
    rows = [_row(finetune, 13, -0.001, 0.001), finetune._unit_row("lm", finetune.spelling(9, False), 9, False)]
    assert finetune.verdict(rows, "lm", "finetuned", False) == ("not known yet", "F = 9 not run")


@pytest.mark.parametrize("argv,message", [
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--part", "minilm"], "argument --part: invalid choice"),
])
def test_bad_input_is_one_line_before_any_work(finetune, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        finetune.main([*argv, "--out", str(tmp_path / "f")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_tables_only_names_the_missing_file(finetune, tmp_path, capsys):
    assert finetune.main(["--tables-only", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (f"fdpa_f_finetune: no tables yet, {tmp_path / 'run.json'} is missing "
                                               "(run both parts first)")
