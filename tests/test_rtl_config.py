"""Configuration checks of the generator (clear ConfigErrors before elaboration) and the `hwmodel verilog` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hwmodel.cli import main
from lba_core import ConfigError, MacConfig
from rtl import MAC, ChunkAdder, FMAq, export_verilog


@pytest.mark.parametrize(
    "cfg, message",
    [
        (MacConfig(input="e4m3", acc="e4m7", underflow=False), "simulation-only"),
        (MacConfig(input="e4m3", acc="e8m3_b-100"), "every product would underflow"),
        (MacConfig(input="e2m1", acc="e3m3_b-12"), "every product would underflow"),
        (MacConfig(input="e4m3", acc="e3m2_b60"), "every product would saturate"),
        (MacConfig(input="e4m3", acc="e4m7", product="e3m3_b-20"), "product format"),
    ],
    ids=[
        "underflow-off",
        "acc-above-products",
        "acc-above-small-products",
        "acc-below-products",
        "product-above-products",
    ],
)
def test_bad_configurations_raise_config_error(cfg, message, tmp_path):
    for build in (FMAq, MAC, ChunkAdder, lambda cfg: export_verilog(cfg, tmp_path / "out")):
        with pytest.raises(ConfigError, match=message):
            build(cfg)
    assert not (tmp_path / "out").exists()


def test_not_a_config():
    with pytest.raises(ConfigError, match="MacConfig"):
        FMAq({"input": "e4m3"})


def test_cli_writes_files(tmp_path, capsys):
    status = main(
        [
            "verilog",
            "--in",
            "e4m3",
            "--acc",
            "e4m7",
            "--product",
            "e5m4",
            "--rounding",
            "rtz",
            "--in-subnormals",
            "--chunk",
            "8",
            "--weight",
            "e5m2",
            "--hierarchical",
            "-o",
            str(tmp_path),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    for name in ("fmaq.v", "mac.v", "config.json"):
        assert str(tmp_path / name) in printed
    description = json.loads((tmp_path / "config.json").read_text())
    assert description["name"] == "e4m3_subxe5m2-pe5m4-e4m7-rtz-c8"
    assert description["hierarchical"] is True


def test_cli_reports_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["verilog", "--in", "e4m3", "--acc", "e4m7", "--chunk", "0", "-o", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "chunk_size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["verilog", "--in", "e4x3", "--acc", "e4m7", "-o", str(tmp_path)])
    assert "malformed float format" in capsys.readouterr().err


def test_rtl_needs_only_amaranth_and_lba_core():
    """The generator's promise (docs/rtl.md): importing rtl loads no numerical or test stack."""
    code = (
        "import sys, rtl; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'torch', 'tqdm', 'pandas', 'scipy', "
        "'hwmodel', 'lba_train', 'support'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
