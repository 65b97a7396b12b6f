"""The ``hwmodel`` command line: fast start (no heavy imports for --help and verilog), help, version, examples."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hwmodel.cli.app import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "matplotlib", "numba")

# Runs hwmodel's main() in a fresh interpreter and prints which heavy packages ended up imported.
PROBE = """
import json, sys
from hwmodel.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
heavy = sorted({name.split('.')[0] for name in sys.modules} & set(%r))
print(json.dumps({"status": status, "heavy": heavy}))
""" % (HEAVY,)


def _probe(*argv: str, cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_imports_no_heavy_package(tmp_path):
    for argv in (["--help"], [], ["--version"], ["verilog", "--help"]):
        probe = _probe(*argv, cwd=tmp_path)
        assert probe == {"status": 0, "heavy": []}, argv


def test_verilog_export_imports_no_heavy_package(tmp_path):
    probe = _probe("verilog", "--in", "e4m3", "--acc", "e4m7", "-o", "out", cwd=tmp_path)
    assert probe == {"status": 0, "heavy": []}
    assert (tmp_path / "out" / "mac.v").is_file()


def test_no_command_prints_the_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hwmodel") and all(name in out for name in COMMANDS)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("hwmodel ")


def test_every_command_module_is_listed():
    modules = {path.stem.replace("_", "-") for path in (ROOT / "hwmodel" / "cli").glob("*.py")
               if path.stem not in ("__init__", "__main__", "app")}
    assert modules == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_examples_that_parse(command, capsys):
    parser = build_parser(command)
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "examples:\n  hwmodel " + command in text
    for example in COMMANDS[command].examples:
        words = shlex.split(example)[1:]
        args = parser.parse_args(words)
        assert args.command == command and callable(args.func), example
