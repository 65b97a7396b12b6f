"""The sweep report: statistics against the fp32 accumulator, headline, compact table, plots, bad input, browser."""

from __future__ import annotations

import html
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from hwmodel.cli import main
from hwmodel.report.data import ReportError, predictions_from_points, read_predictions, statistics
from hwmodel.report.plots import place_labels
from hwmodel.report.report import build_report, write_results

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = 200


def _points(accuracies: dict[str, float], seeds=(0, 1)) -> dict[str, list[dict]]:
    """Accuracy point records whose predictions are right on the easiest examples: rows share their errors,
    as real models do, so that small differences stay small."""
    labels = np.arange(EXAMPLES) % 10
    points = {}
    for config, accuracy in accuracies.items():
        records = []
        for seed in seeds:
            right = np.arange(EXAMPLES) < round(accuracy * EXAMPLES) + seed  # seeds differ by one example
            wrong = (labels + 1) % 10
            predictions = {phase: np.where(right, labels, wrong).tolist() for phase in ("zero_shot", "stage2")}
            records.append({"seed": seed, "labels": labels.tolist(), "predictions": predictions})
        points[config] = records
    return points


def _results(points: dict[str, list[dict]]) -> pd.DataFrame:
    accs = {"s-fp32": "e8m23", "s-e4m7": "e4m7", "s-e5m6": "e5m6", "s-e5m2": "e5m2"}
    labels = np.asarray(next(iter(points.values()))[0]["labels"])
    rows = []
    for config, records in points.items():
        mean = {phase: float(np.mean([np.mean(np.asarray(r["predictions"][phase]) == labels) for r in records]))
                for phase in ("zero_shot", "stage2")}
        acc = accs[config]
        bits = {"e8m23": 32, "e4m7": 12, "e5m6": 12, "e5m2": 8}[acc]
        ge = {"e8m23": 2250.0, "e4m7": 940.0, "e5m6": 915.0, "e5m2": 858.0}[acc]
        rows.append({"config": config, "input": "e4m3", "acc": acc, "rounding": "rne", "chunk": 0, "acc_bits": bits,
                     "ge": ge, "luts": np.nan, "ge_reduction": 1 - ge / 2250.0, "baseline_acc": "e8m23",
                     "block_multiplier_ge": 178.0, "block_adder_ge": ge * 0.9, "top1_baseline": 0.95,
                     "top1_zero_shot": mean["zero_shot"], "top1_stage2": mean["stage2"], "seeds": len(records),
                     "swamp_rate": 0.01})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def built_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    points = _points({"s-fp32": 0.95, "s-e4m7": 0.95, "s-e5m6": 0.945, "s-e5m2": 0.6})
    write_results(_results(points), folder, title="test sweep", notes="made up", predictions=predictions_from_points(points))
    return folder


@pytest.fixture
def report(built_report, tmp_path):
    """A fresh copy of a report folder built once (building takes seconds: the plots)."""
    return Path(shutil.copytree(built_report, tmp_path / "report"))


def test_statistics_against_fp32(report):
    df = pd.read_csv(report / "results.csv")
    table = statistics(df, read_predictions(report, df)).set_index("config")
    assert table.loc["s-fp32", "stage2_p"] != table.loc["s-fp32", "stage2_p"]  # NaN: the reference itself
    assert table.loc["s-e4m7", "stage2_diff"] == 0 and table.loc["s-e4m7", "stage2_agreement"] == 1
    assert table.loc["s-e4m7", "stage2_beyond_noise"] == False  # noqa: E712 (numpy bool)
    assert table.loc["s-e5m2", "stage2_beyond_noise"] == True  # noqa: E712
    assert table.loc["s-e5m2", "stage2_diff"] == pytest.approx(-0.35)
    low, high = table.loc["s-e5m2", ["stage2_low", "stage2_high"]]
    assert low < 0.6 < high and high - low < 0.2
    assert (table["stage2_seeds"] == 2).all() and (table["stage2_examples"] == EXAMPLES).all()


def test_page_carries_the_message(report):
    page = (report / "index.html").read_text()
    markdown = (report / "results.md").read_text()
    headline = ("12-bit accumulators (e4m7, e5m6): 58–59% less MAC area than fp32; fine-tuned accuracy within noise "
                "of fp32. Fine-tuned accuracy beyond noise of fp32: e5m2 (-35.0 points, p < 0.001).")
    assert f'id="headline">{headline}</p>' in html.unescape(page)
    assert f"**{headline}**" in markdown
    header = markdown.split("\n| ")[0]
    assert "| Accumulator | Bits | MAC area [GE] |" in markdown and "luts" not in markdown.lower()  # no empty column
    assert "| fp32 | 32 |" in markdown and "e8m23" not in markdown.split("|:---")[1]
    assert "Inputs: e4m3" in markdown and "Holm" in markdown and header
    for name in ("accuracy_vs_ge", "difference_vs_fp32", "area_blocks"):
        assert f'src="{name}.svg"' in page and (report / f"{name}.png").stat().st_size > 0
    assert "per-block bars come from a hierarchical synthesis" in page
    for path in report.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not list(report.glob(".*")), "temporary files left behind"


def test_rebuild_from_the_folder_gives_the_same_files(report):
    before = {name: (report / name).read_bytes() for name in ("index.html", "results.md", "stats.csv", "area_blocks.svg")}
    for name in before:
        (report / name).unlink()
    assert main(["report", str(report)]) == 0
    assert {name: (report / name).read_bytes() for name in before} == before


def test_old_results_without_predictions(tmp_path):
    shutil.copy(ROOT / "tests" / "data" / "results-v1.csv", tmp_path / "results.csv")
    build_report(tmp_path)
    page = (tmp_path / "index.html").read_text()
    assert "no per-example predictions" in page and "| e4m7 | 12 |" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda text: text[: len(text) * 2 // 3], "truncated"),
        (lambda text: text.replace(",rne,", ",rne,1,", 1), "fields, the header"),
        (lambda text: "name,value\na,1\n", "no column config, acc"),
        (lambda text: "", "empty file"),
        (lambda text: text.replace(",940.0,", ",lots,", 1), "column ge must be numeric"),
    ],
)
def test_bad_results_csv_is_one_line_and_touches_nothing(report, damage, message):
    csv = report / "results.csv"
    csv.write_text(damage(csv.read_text()))
    before = {path.name: path.read_bytes() for path in report.iterdir()}
    with pytest.raises(ReportError, match=message):
        build_report(report)
    with pytest.raises(SystemExit) as stop:
        main(["report", str(report)])
    text = str(stop.value.code)  # what Python prints on stderr, exit status 1
    assert text.startswith("hwmodel report: error: ") and "\n" not in text and message in text
    assert {path.name: path.read_bytes() for path in report.iterdir()} == before


def test_predictions_of_another_run_are_refused(report):
    df = pd.read_csv(report / "results.csv")
    df.loc[1, "top1_stage2"] -= 0.01
    df.to_csv(report / "results.csv", index=False)
    with pytest.raises(ReportError, match="does not belong to results.csv"):
        build_report(report)


def test_labels_do_not_overlap():
    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(852, 96.3), (858, 95.9), (914, 97.0), (943, 98.0), (982, 97.6), (1044, 96.8), (1148, 97.4), (2252, 96.8)]
    ax.plot(*zip(*points), "o")
    ax.set_xscale("log")
    labels = place_labels(ax, [(x, y, f"e{i}m{i}", "black") for i, (x, y) in enumerate(points)], points)
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in labels]
    assert len(boxes) == len(points)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (make report-check installs it)")
def test_page_in_a_real_browser(report):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_report.py"), str(report)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and (report / "screenshot.png").stat().st_size > 10_000


def test_a_partial_run_keeps_the_other_rows_predictions(report):
    df = pd.read_csv(report / "results.csv")
    again = _points({"s-fp32": 0.95, "s-e4m7": 0.95})
    write_results(df, report, predictions=predictions_from_points(again))
    table = statistics(df, read_predictions(report, df)).set_index("config")
    assert table.loc["s-e5m2", "stage2_beyond_noise"] == True  # noqa: E712 (numpy bool)


def test_integer_columns_stay_integers_beside_a_fused_row(tmp_path):
    """A fused accumulator's row leaves the synthesis cells empty, so pandas holds the integer columns as floats:
    results.csv still spells them as integers (1421, not 1421.0), empty cells empty, and reads back equal; a
    results.csv written with the old float spelling reads to the same frame."""
    import csv

    from hwmodel.report.data import read_results
    from hwmodel.synthesis import columns

    frame = _results(_points({"s-fp32": 0.9, "s-e4m7": 0.9})).assign(gates=[1421, 606], acc_bias=[127, -3])
    fused = {**frame.iloc[0].to_dict(), "config": "s-hopper", "acc": "hopper-fp8", "acc_bits": 22,
             "area_status": "not synthesized: fused FDPA unit, not a MAC"}
    fused.update({name: np.nan for name in ("gates", "acc_bias", "ge", "ge_reduction", "block_multiplier_ge",
                                            "block_adder_ge")})
    frame = pd.concat([frame, pd.DataFrame([fused])], ignore_index=True)
    assert frame["gates"].dtype == float and frame["acc_bias"].dtype == float
    write_results(frame, tmp_path / "new")
    with (tmp_path / "new" / "results.csv").open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["gates"], row["acc_bias"], row["acc_bits"]) for row in rows] == [
        ("1421", "127", "32"), ("606", "-3", "12"), ("", "", "22")]
    assert rows[0]["ge"] == "2250.0"  # GE (fractions of a NAND2) are not a count: stays a float
    written = read_results(tmp_path / "new")
    pd.testing.assert_frame_equal(written, frame, check_dtype=False)
    (tmp_path / "old").mkdir()
    frame.to_csv(tmp_path / "old" / "results.csv", index=False)
    assert ",1421.0," in (tmp_path / "old" / "results.csv").read_text()
    pd.testing.assert_frame_equal(read_results(tmp_path / "old"), written)
    with pytest.raises(ValueError, match="column 'gates' holds whole gates"):
        columns.to_csv(columns.RESULTS, frame.assign(gates=[1421.5, 606, np.nan]))


def test_every_column_of_the_committed_tables_is_declared():
    """results.csv, area.csv, minilm.csv, lm.csv, stats.csv and layer_events.csv of the committed default
    report, and the paper claim's silicon table: every header is declared in hwmodel/synthesis/columns.py."""
    import csv

    from hwmodel.synthesis import columns

    tables = sorted((ROOT / "reports/default").glob("*.csv")) + [ROOT / "reports/paper_claim/paper_claim_silicon.csv"]
    assert {path.name for path in tables} >= {"results.csv", "minilm.csv", "lm.csv", "area.csv", "stats.csv"}
    for path in tables:
        with path.open(encoding="utf-8") as stream:
            header = next(csv.reader(stream))
        assert columns.undeclared(path.name, header) == [], path
    with pytest.raises(columns.UndeclaredColumn, match="'sky_um2' is not declared"):
        columns.check_declared(columns.RESULTS, ["config", "sky_um2"])


def test_an_undeclared_results_column_is_refused(tmp_path):
    frame = _results(_points({"s-fp32": 0.9, "s-e4m7": 0.9}))
    frame.rename(columns={"ge": "area_ge"}).to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(ReportError, match="column area_ge is not a column of a sweep's results.csv"):
        build_report(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.csv"]


def test_report_modules_set_no_global_state_on_import():
    """Importing the report (and drawing a figure) neither selects a matplotlib backend, nor loads pyplot, nor
    changes an rcParam: a caller's own matplotlib setup stays as it was."""
    code = ("import matplotlib, sys\n"
            "state = lambda: ({key: matplotlib.rcParams[key] for key in matplotlib.rcParams if key != 'backend'},\n"
            "                 matplotlib.rcParams._get_backend_or_none())  # reading 'backend' would resolve it\n"
            "before = state()\n"
            "import hwmodel.report.report, hwmodel.report.plots, hwmodel.report.per_workload, hwmodel.report.figures\n"
            "from hwmodel.report.figures import subplots\n"
            "fig, ax = subplots(figsize=(2, 2)); ax.plot([0, 1])\n"
            "assert before == state(), 'rcParams changed'\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def default_copy(tmp_path_factory):
    """The committed default report, rebuilt in a scratch folder (reports/ is not touched)."""
    folder = tmp_path_factory.mktemp("default") / "default"
    shutil.copytree(ROOT / "reports/default", folder)
    build_report(folder)
    return folder


def test_the_report_leads_with_the_workload_that_tells_accumulators_apart(default_copy):
    """One headline per workload from the committed tables, the one with most (within, beyond) pairs of
    accumulators first; the bold first paragraph of results.md is the page's headline."""
    from hwmodel.report.data import read_predictions, read_results, statistics
    from hwmodel.report.per_workload import acc_bits, headlines
    from hwmodel.workloads import registry
    from hwmodel.workloads.comparison import acc_label

    df = read_results(default_copy)
    items = headlines(df, statistics(df, read_predictions(default_copy, df)), registry.report_sections(default_copy))
    assert {item.title for item in items} == {"Digits", "MiniLM", "Language model"}
    assert [item.pairs for item in items] == sorted((item.pairs for item in items), reverse=True)
    lm_item = next(item for item in items if item.title == "Language model")
    lm = pd.read_csv(default_copy / "lm.csv")
    within = lm[lm["differs_from_fp32"].astype(str) == "False"]
    assert lm_item.pairs == len(within) * int((lm["differs_from_fp32"].astype(str) == "True").sum())
    if len(within):  # the committed sweep (2026-12-02): e4m7_b-7 and bf16 within, five rows beyond
        narrowest = within.assign(bits=[acc_bits(acc) for acc in within["acc"]]).sort_values("bits").iloc[0]
        assert f"within the 95% paired interval of fp32: {acc_label(narrowest['acc'])} " in lm_item.sentence
    assert items[0].pairs > 0  # some workload tells accumulators apart, and it leads
    markdown = (default_copy / "results.md").read_text()
    assert markdown.split("\n")[2] == f"**{items[0].sentence}**"
    assert all(f"- {item.sentence}" in markdown for item in items)
    page = html.unescape((default_copy / "index.html").read_text())
    assert f'id="headline">{items[0].sentence}</p>' in page


def test_each_workload_metric_is_plotted_against_silicon_cost(default_copy):
    from hwmodel.report.per_workload import cost_of
    from hwmodel.workloads import registry
    from lba_core import FusedAccumulator, parse_acc

    sections = [section for section in registry.report_sections(default_copy) if section.metric is not None]
    assert {section.title for section in sections} == {"MiniLM", "Language model"}
    results = pd.read_csv(default_copy / "results.csv")
    markdown = (default_copy / "results.md").read_text()
    page = (default_copy / "index.html").read_text()
    for stem in ("minilm_vs_cost", "language_model_vs_cost"):
        assert (default_copy / f"{stem}.png").stat().st_size > 0 and f'src="{stem}.svg"' in page
        assert f"![{stem.replace('_', ' ')}]({stem}.png)" in markdown
    if "sky130_pj_per_mac" not in results:  # no energy column in the committed sweep: the captions say so
        assert markdown.count("No energy axis: this sweep measured no energy") == 2
    for section in sections:  # every MAC row finds the MAC of its formats (a calibrated bias of its own aside)
        area = cost_of(section.metric.rows, results, "sky130_um2")
        macs = [not isinstance(parse_acc(acc), FusedAccumulator) for acc in section.metric.rows["acc"]]
        assert area[macs].notna().all() and sum(macs) >= 8
        fp32 = section.metric.rows["acc"] == "e8m23"
        assert area[fp32].iloc[0] == results.loc[results["acc"] == "e8m23", "sky130_um2"].iloc[0]


def test_a_workload_with_no_row_within_noise_says_so():
    from hwmodel.report.per_workload import metric_sentence
    from hwmodel.workloads.base import TaskMetric

    rows = pd.DataFrame({"config": ["a-e8m23-rne", "a-e4m3-rne"], "acc": ["e8m23", "e4m3"], "value": [1.0, 2.0],
                         "low": [0.9, 1.9], "high": [1.1, 2.1], "diff": [np.nan, 1.0], "diff_low": [np.nan, 0.9],
                         "diff_high": [np.nan, 1.1], "differs": [None, True]})
    metric = TaskMetric("Toy", "loss", "nats", "zero-shot", False, "95% intervals", rows)
    assert metric_sentence(metric, pd.DataFrame({"config": [], "acc": []})) == (
        "Toy (loss, zero-shot): every accumulator differs from fp32 beyond its 95% paired interval: e4m3 (+1.000 nats).")


def test_the_energy_axis_is_drawn_when_results_have_energy(tmp_path):
    """With a <library>_pj_per_mac column, a workload's plot gets its energy panel and the caption no longer
    says it is missing (the values here are made up: only the drawing is checked)."""
    from hwmodel.report.per_workload import metric_caption, plot_metric_vs_cost
    from hwmodel.workloads import registry

    results = pd.read_csv(ROOT / "reports/default/results.csv")
    results["sky130_pj_per_mac"] = results["sky130_um2"] / 1000
    metric = next(section.metric for section in registry.report_sections(ROOT / "reports/default")
                  if section.metric is not None)
    assert plot_metric_vs_cost(metric, results, tmp_path) == f"{metric.title.lower().replace(' ', '_')}_vs_cost"
    svg = next(tmp_path.glob("*_vs_cost.svg")).read_text()
    assert "energy per MAC" in svg and "MAC area" in svg
    assert "No energy axis" not in metric_caption(metric, results)
    assert "No energy axis" in metric_caption(metric, results.drop(columns="sky130_pj_per_mac"))
