"""Settings declared once (issue 23 item 4): one declaration per setting (a dataclass field with
hwmodel.workloads.settings.setting metadata) gives the ``hwmodel sweep`` option, its help with the default,
the TOML key and the validation of both. No training, no synthesis."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from hwmodel import cli
from hwmodel.cli.app import build_parser
from hwmodel.cli.sweep import spec_from_args
from hwmodel.sweep import spec as sweep_spec
from hwmodel.sweep.spec import MAIN_JOB, AccuracySpec, SweepSpec, load_sweep_spec
from hwmodel.workloads import registry
from hwmodel.workloads.settings import count, declared, help_text, setting, shown, tables
from lba_core import ConfigError


def fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # argparse wraps help at the terminal width, breaking words at hyphens


def sweep_help(capsys) -> str:
    parser = build_parser("sweep")
    with pytest.raises(SystemExit):
        parser.parse_args(["sweep", "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare with single spaces


def parse(*argv: str) -> SweepSpec:
    return spec_from_args(build_parser("sweep").parse_args(["sweep", *argv]))


# --------------------------------------------------------------------------------- a setting added in one place
@dataclass(frozen=True)
class WithDummy(SweepSpec):
    """The sweep's spec plus one setting: its declaration is the only line written for it."""

    dummy_knob: int = setting(7, option="--dummy-knob", kind="int", metavar="N", check=count(1),
                              help="a knob that exists only in this test")


@pytest.fixture
def dummy(monkeypatch):
    monkeypatch.setattr(sweep_spec, "SweepSpec", WithDummy)
    monkeypatch.setattr(sweep_spec, "MAIN_JOB", WithDummy(minilm=MAIN_JOB.minilm, lm=MAIN_JOB.lm))


def test_a_dummy_setting_reaches_the_cli_the_toml_loader_and_the_help(dummy, tmp_path, capsys):
    assert "--dummy-knob N a knob that exists only in this test (default: 7)" in sweep_help(capsys)
    assert parse().dummy_knob == 7 and parse("--dummy-knob", "3").dummy_knob == 3
    assert parse("--acc", "e4m7", "--dummy-knob", "5").dummy_knob == 5
    with pytest.raises(ConfigError, match=r"^--dummy-knob: expected an integer >= 1, got 0$"):
        parse("--dummy-knob", "0")
    path = tmp_path / "knob.toml"
    path.write_text('accumulators = ["e4m7"]\ndummy_knob = 11\n')
    assert load_sweep_spec(path).dummy_knob == 11 and parse("--config", str(path)).dummy_knob == 11
    path.write_text("dummy_knob = -1\n")
    with pytest.raises(ConfigError, match=r"knob.toml: key 'dummy_knob': expected an integer >= 1, got -1"):
        load_sweep_spec(path)
    path.write_text('accumulators = ["e4m7"]\n')
    assert "--dummy-knob cannot be combined with --config" in fails(
        ["sweep", "--config", str(path), "--dummy-knob", "2", "--reports", str(tmp_path)], capsys)


def test_without_the_dummy_the_option_and_key_do_not_exist(tmp_path, capsys):
    assert "--dummy-knob" not in sweep_help(capsys)
    path = tmp_path / "knob.toml"
    path.write_text("dummy_knob = 11\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_sweep_spec(path)


# --------------------------------------------------------------------------------- every declaration, generated
def _declarations():
    for table, cls in {None: SweepSpec, **tables(SweepSpec)}.items():
        for name, declaration in declared(cls).items():
            yield table, cls, name, declaration


def test_every_field_is_declared_and_every_option_is_in_the_help_with_its_default(capsys):
    text = sweep_help(capsys)
    for cls in (SweepSpec, *tables(SweepSpec).values()):
        undeclared = {f.name for f in fields(cls)} - set(declared(cls)) - set(tables(cls))
        assert not undeclared, (cls.__name__, undeclared)
    for table, cls, name, declaration in _declarations():
        assert declaration.option in text, declaration.option
        if declaration.group == "external":  # hwmodel synth's option (--target): its help, the spec's default
            assert f"(default: {shown(getattr(cls(), name))})" in text, declaration.option
            continue
        assert " ".join(help_text(cls, name).split()) in text, declaration.option
        if declaration.default_text is None:
            assert help_text(cls, name).endswith(f"(default: {shown(getattr(cls(), name))})")


def test_workload_tables_come_from_the_registry():
    with_table = {w.name: w.settings_table for w in registry.WORKLOADS if w.settings_table is not None}
    assert set(with_table) == {"minilm", "lm"}
    assert {name: cls for name, cls in tables(SweepSpec).items() if name != "accuracy"} == with_table
    for name, cls in with_table.items():
        assert all(d.option.startswith(f"--{name}") for d in declared(cls).values()), name


def test_accuracy_defaults_are_lba_trains():
    from lba_train.layers import LayerOptions
    from lba_train.finetuning import FinetuneOptions
    from lba_train.train import TrainOptions

    accuracy, train, finetune = AccuracySpec(), TrainOptions(), FinetuneOptions()
    assert (accuracy.epochs_baseline, accuracy.lr_baseline, accuracy.seed, accuracy.device) == (
        train.epochs, train.lr, train.seed, train.device)
    assert (accuracy.epochs, accuracy.lr, accuracy.bias) == (finetune.epochs, finetune.lr, finetune.bias)
    assert accuracy.estimator == LayerOptions().estimator


def test_the_train_command_takes_the_sweeps_accuracy_options(capsys):
    from hwmodel.cli.train import TRAIN_SETTINGS

    with pytest.raises(SystemExit):
        build_parser("train").parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in TRAIN_SETTINGS:
        assert " ".join(help_text(AccuracySpec, name).split()) in text, name


# --------------------------------------------------------------------------------- options that would do nothing
NO_EFFECT = [
    (["--acc", "e4m7", "--accuracy", "--lm-windows", "4", "--name", "x"], "--lm-windows would have no effect without the LM workload"),
    (["--no-lm", "--lm-resamples", "100"], "--lm-resamples would have no effect without the LM workload"),
    (["--no-accuracy", "--lm-standard-bias", "format"], "--lm-standard-bias would have no effect without the LM workload"),
]


@pytest.mark.parametrize("arguments,fragment", NO_EFFECT, ids=[" ".join(a) for a, _ in NO_EFFECT])
def test_lm_options_without_the_lm_workload_are_one_line(tmp_path, capsys, arguments, fragment):
    reports = tmp_path / "reports"
    message = fails(["sweep", "--reports", str(reports), "--cache-dir", str(tmp_path / "c"), *arguments], capsys)
    assert fragment in message and len(message.strip().splitlines()) == 1, message
    assert not reports.exists()


def test_lm_keys_without_the_lm_workload_name_the_key(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('accumulators = ["e4m7"]\n[lm]\nwindows = 4\n')
    with pytest.raises(ConfigError, match=r"spec.toml: key 'lm.windows' would have no effect without the LM workload"):
        load_sweep_spec(path)
    path.write_text('accumulators = ["e4m7"]\n[lm]\nenabled = false\nwindows = 4\n')
    with pytest.raises(ConfigError, match=r"key\(s\) lm.windows have no effect with lm.enabled = false"):
        load_sweep_spec(path)
    path.write_text('accumulators = ["e4m7"]\n[lm]\nenabled = true\nwindows = 4\n')
    assert load_sweep_spec(path).lm.windows == 4
    assert parse("--lm-windows", "4").lm.windows == 4  # the main job has the LM workload on


# --------------------------------------------------------------------------------- hwmodel train's point store
def test_train_and_the_sweep_share_one_baseline_definition():
    from pathlib import Path

    from hwmodel.cli.train import baseline_key_of, check_args
    from hwmodel.workloads.digits import baseline_determinants

    args = build_parser("train").parse_args(["train", "--model", "mlp", "--epochs-baseline", "2", "--seed", "4",
                                             "--threads", "2", "--acc", "e4m7"])
    check_args(args)
    sweep = parse("--acc", "e4m7", "--accuracy", "--model", "mlp", "--epochs-baseline", "2", "--seed", "4",
                  "--name", "x")
    assert baseline_key_of(args) == baseline_determinants(sweep, threads=2)
    assert baseline_key_of(args) != baseline_determinants(sweep)  # the sweep's points run on one thread
    hwmodel = Path(__file__).resolve().parents[1] / "hwmodel"
    defining = [str(path.relative_to(hwmodel)) for path in sorted(hwmodel.rglob("*.py"))
                if '"kind": "baseline"' in path.read_text(encoding="utf-8")]
    assert defining == ["workloads/digits.py"]
