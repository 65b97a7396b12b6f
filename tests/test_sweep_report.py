"""Sweep configuration files, the report builder and the resume logic of the main job."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hwmodel.report.plots import pareto_front
from hwmodel.report.report import build_report, write_results
from hwmodel.sweep.spec import SweepSpec, load_sweep_spec
from lba_core import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_example_file_loads():
    spec = load_sweep_spec(ROOT / "examples" / "sweep.toml")
    assert spec.inputs == ("e4m3", "e5m2") and spec.chunk_sizes == (0, 16)
    assert len(spec.configs()) == 2 * 8 * 1 * 2 + 4  # the grid, then the fixed_point rows
    assert spec.accuracy.epochs == (1, 1)


def test_default_covers_the_embedded_grid():
    names = [cfg.acc.name for cfg in SweepSpec().configs()]
    assert names == ["e8m23", "e5m10", "e8m7", "e5m6", "e4m7", "e3m8", "e4m3", "e5m2", "hopper-fp8",
                     "hopper-fp8+promote128", "int32", "int16_sat", "fx48.18", "fx32.10_sat"]


def test_fixed_point_rows_are_validated(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('fixed_point = ["int8:fp32"]\n')
    with pytest.raises(ConfigError, match="fixed_point"):
        load_sweep_spec(path)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ('colour = "red"', "unknown key(s) colour"),
        ('accumulators = ["e4m7", "e4x"]', "key 'accumulators': malformed float format 'e4x'"),
        ('inputs = "e1m3"', "key 'inputs': exp_bits must be >= 2"),
        ('rounding = ["up"]', "key 'rounding'"),
        ('targets = ["asic"]', "key 'targets'"),
        ("chunk_sizes = [-1]", "key 'chunk_sizes'"),
        ("jobs = 0", "key 'jobs'"),
        ('[accuracy]\nmodel = "vgg"', "key 'accuracy.model'"),
        ('[accuracy]\ndata = "mnist:/no/such/dir"', "dataset path '/no/such/dir' does not exist"),
        ("[accuracy]\nepochs = [1, 2, 3]", "key 'accuracy.epochs'"),
        ("[accuracy]\nlearning_rate = 1", "unknown key(s) accuracy.learning_rate"),
        ("accumulators = [", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as error:
        load_sweep_spec(path)
    assert fragment in str(error.value) and str(path) in str(error.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep_spec("/no/such/sweep.toml")


def fake_results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "config": ["a-fp32", "a-e4m7", "a-e4m3", "a-e5m6"],
            "input": ["e4m3"] * 4,
            "acc": ["e8m23", "e4m7", "e4m3", "e5m6"],
            "rounding": ["rne"] * 4,
            "chunk": [0] * 4,
            "acc_bits": [32, 12, 8, 12],
            "gates": [2000, 900, 600, 950],
            "ge": [2500.0, 1100.0, 700.0, 1200.0],
            "luts": [400, 180, 120, 190],
            "ge_reduction": [0.0, 0.56, 0.72, 0.52],
            "block_multiplier_ge": [300.0, 300.0, 300.0, 300.0],
            "block_aligner_ge": [900.0, 300.0, 150.0, 350.0],
            "top1_baseline": [0.97] * 4,
            "top1_zero_shot": [0.97, 0.95, 0.40, 0.96],
            "top1_stage1": [0.97, 0.96, 0.70, 0.96],
            "top1_stage2": [0.97, 0.965, 0.80, 0.96],
            "overflow_rate": [0.0, 1e-4, 1e-2, 0.0],
            "underflow_rate": [0.0, 1e-3, 1e-2, 1e-4],
            "swamp_rate": [0.0, 0.1, 0.3, 0.12],
        }
    )


def test_pareto_front():
    # e5m6 costs more than e4m7 and is less accurate: dominated. The others each win on one axis.
    assert pareto_front(fake_results()).tolist() == [True, True, True, False]


def test_report_is_written_and_rebuilt_from_csv(tmp_path):
    index = write_results(fake_results(), tmp_path)
    assert index == tmp_path / "index.html"
    for name in ("results.csv", "results.md", "accuracy_vs_ge.png", "accuracy_vs_ge.svg", "area_blocks.png", "area_blocks.svg"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| e4m7 | 12 |" in (tmp_path / "results.md").read_text()
    assert "<img" in index.read_text()
    (tmp_path / "results.md").unlink()
    (tmp_path / "area_blocks.png").unlink()
    build_report(tmp_path)
    assert (tmp_path / "results.md").exists() and (tmp_path / "area_blocks.png").exists()
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_silicon_plots_drawn_from_their_columns_or_their_absence_explained(tmp_path):
    """Accuracy vs sky130 pJ/MAC and µm² when the sweep has those columns; an older or area-and-timing-only
    folder gets one sentence per missing plot instead, in results.md and index.html."""
    old = fake_results()
    write_results(old, tmp_path / "old")
    for page in ("results.md", "index.html"):
        text = (tmp_path / "old" / page).read_text()
        assert "No accuracy-vs-energy plot" in text and "No accuracy-vs-µm² plot" in text, page
    assert not list((tmp_path / "old").glob("accuracy_vs_energy.*"))
    new = old.assign(sky130_um2=[7700.0, 3376.0, 2600.0, 3500.0], sky130_pj_per_mac=[4.5, 2.9, 2.1, 3.0],
                     sky130_pj_per_inference=[9e5, 6e5, 4e5, 6.2e5], sky130_energy_vs_opensta=[0.99, 0.98, 1.01, 0.97])
    index = write_results(new, tmp_path / "new")
    markdown = (tmp_path / "new" / "results.md").read_text()
    for name in ("accuracy_vs_energy", "accuracy_vs_um2"):
        assert (tmp_path / "new" / f"{name}.svg").stat().st_size > 0
        assert f"]({name}.png)" in markdown and f'src="{name}.svg"' in index.read_text()
    assert "No accuracy-vs" not in markdown
    assert "0.970–1.010 × OpenSTA's over these 4 MACs (worst case 3.0% apart)" in markdown
    assert "| sky130 energy [pJ/MAC] | sky130 energy per inference [nJ] |" in markdown.replace("\n", " ")
    assert "| 2.900 | 600.0 |" in markdown


def test_build_report_without_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `hwmodel sweep` first"):
        build_report(tmp_path)
