"""experiments/fdpa_f_sweep.py (issue 25 item 5, the F sweep's accuracy half): its spellings, the sweep it runs,
its bad-input lines and the join of the sweep's MiniLM and LM tables (on hand-made tables; no points run)."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import pytest

from lba_core import MacConfig, parse_acc

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture
def sweep(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return importlib.import_module("fdpa_f_sweep")


def test_spelling_is_hopper_fp8_with_another_f(sweep):
    hopper = parse_acc("hopper-fp8")
    for f in sweep.FRACTIONS:
        acc = parse_acc(sweep.spelling(f, False))
        assert (acc.group, acc.output, acc.output_rounding, acc.e_zero, acc.fraction_bits) == (
            hopper.group, hopper.output, hopper.output_rounding, hopper.e_zero, f)
        assert parse_acc(sweep.spelling(f, True)).promote_every == 128
    assert sweep.spelling(13, False) == hopper.general_name


def test_sweep_command_runs_minilm_and_lm_zero_shot_only(sweep, tmp_path):
    command = sweep.sweep_command(tmp_path / "f", [13, 8], 2, {"--lm-windows": 2, "--minilm-sentences": None})
    accs = command[command.index("--acc") + 1].split(",")
    assert accs == ["fp32", "fdpa32f13-e8m13_sub-rtz", "fdpa32f13-e8m13_sub-rtz+promote128",
                    "fdpa32f8-e8m13_sub-rtz", "fdpa32f8-e8m13_sub-rtz+promote128"]
    for option in ("--accuracy", "--no-minilm-finetune", "--lm"):
        assert option in command
    assert command[command.index("--model") + 1] == "minilm" and command[command.index("--lm-windows") + 1] == "2"
    assert "--minilm-sentences" not in command and command[command.index("--name") + 1] == "f"


@pytest.mark.parametrize("argv,message", [
    (["--fractions", "x"], "--fractions: expected integers"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--lm-windows", "0"], "--lm-windows must be >= 1"),
])
def test_bad_input_is_one_line_before_any_work(sweep, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        sweep.main([*argv, "--out", str(tmp_path / "f")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_tables_only_joins_one_row_per_f_and_promotion(sweep, tmp_path):
    out = tmp_path / "f"
    out.mkdir()
    accs = ["fp32", "fdpa32f13-e8m13_sub-rtz", "fdpa32f13-e8m13_sub-rtz+promote128"]
    names = [MacConfig(input="e4m3", acc=acc).name for acc in accs]
    _write(out / "minilm.csv", [{"requested": name, "mean_cosine": 0.99 - i / 10, "diff_mean_cosine": -i / 10}
                                for i, name in enumerate(names)])
    _write(out / "lm.csv", [{"requested": name, "bpb": 3.5 + i, "diff_bpb": "" if i == 0 else i}
                            for i, name in enumerate(names[::-1])])
    meta = {"command": "python experiments/fdpa_f_sweep.py", "sweep_command": "hwmodel sweep", "machine": "m",
            "load_before": [1.0], "load_after": [2.0], "started": "s", "finished": "f", "seconds": 3.0}
    (out / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    assert sweep.main(["--tables-only", "--fractions", "13", "--out", str(out)]) == 0
    with (out / "fdpa_f_accuracy.csv").open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["acc"], row["F"], row["promote_every"]) for row in rows] == [
        ("fp32", "", ""), (accs[1], "13", "0"), (accs[2], "13", "128")]
    assert [float(row["minilm_mean_cosine"]) for row in rows] == [0.99, 0.89, 0.79]
    assert [float(row["lm_bpb"]) for row in rows] == [5.5, 4.5, 3.5]  # matched by name, not by position
    assert "| `fdpa32f13-e8m13_sub-rtz+promote128` | 13 | 128 | 0.7900" in (out / "report.md").read_text(encoding="utf-8")
