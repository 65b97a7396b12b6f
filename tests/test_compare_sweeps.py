"""scripts/compare_sweeps.py: byte-identical tables pass, a changed cell or a new column is named, --expect allows them."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("compare_sweeps", ROOT / "scripts" / "compare_sweeps.py")
compare_sweeps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_sweeps)


def write_report(folder: Path, results: str) -> Path:
    folder.mkdir()
    (folder / "results.csv").write_text(results)
    (folder / "predictions.json").write_text("{}")
    return folder


def test_identical_reports_pass(tmp_path):
    text = "config,acc,gates,settings_hash\na,e4m7,613,h1\n"
    old, new = write_report(tmp_path / "old", text), write_report(tmp_path / "new", text)
    assert compare_sweeps.compare(old, new) == {"results.csv": [], "predictions.json": []}
    assert compare_sweeps.main([str(old), str(new)]) == 0


def test_changed_cell_and_new_column_are_named(tmp_path, capsys):
    old = write_report(tmp_path / "old", "config,acc,gates,settings_hash\na,e4m7,613,h1\nb,e5m6,598,h2\n")
    new = write_report(tmp_path / "new", "config,acc,gates,settings_hash,scale_margin\na,e4m7,613.0,h9,0\nb,e5m6,598,h8,0\n")
    found = compare_sweeps.compare(old, new)["results.csv"]
    assert "columns only in new: scale_margin" in found
    assert any(line.startswith("column gates: 1 of 2 rows differ") and "'613' -> '613.0'" in line for line in found)
    assert compare_sweeps.main([str(old), str(new), "--expect", "settings_hash,scale_margin"]) == 1
    assert "gates" in capsys.readouterr().out
    assert compare_sweeps.main([str(old), str(new), "--expect", "settings_hash,scale_margin,gates"]) == 0
