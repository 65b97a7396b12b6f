"""The tensor-core fused accumulators (hopper-fp8, +promote128) as sweep rows: accepted by --acc, TOML and
check_option alike, labelled in the area table and the result row (issue 24 item 4). No training, no synthesis."""

from __future__ import annotations

import math

import pytest

import pandas as pd

from hwmodel.report.tables import compact_table
from hwmodel.sweep.spec import MAIN_JOB, SweepSpec, apply_options, check_buildable, check_option, load_sweep_spec
from hwmodel.sweep.sweep import result_row
from hwmodel.synthesis.area import FUSED_AREA_STATUS, area_sweep
from hwmodel.workloads.comparison import acc_label, is_reference
from lba_core import ConfigError, MacConfig

FUSED = ("hopper-fp8", "hopper-fp8+promote128")


def test_acc_option_and_toml_accept_fused_spellings(tmp_path):
    spec = apply_options(MAIN_JOB, {"--acc": "hopper-fp8,hopper-fp8+promote128,e4m7".split(",")}, from_file=False)
    assert spec.accumulators == (*FUSED, "e4m7")
    assert check_option("--acc", ["hopper-fp8+promote128"]) == ("hopper-fp8+promote128",)
    path = tmp_path / "fused.toml"
    path.write_text('accumulators = ["hopper-fp8", "hopper-fp8+promote128", "fp32"]\nfixed_point = []\n')
    loaded = load_sweep_spec(path)
    names = [cfg.acc.name for cfg in check_buildable(loaded)]
    assert names == [*FUSED, "e8m23"]


def test_misspelled_fused_accumulator_is_one_line_naming_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"^--acc: .*hopper-fp8") as error:
        check_option("--acc", ["hopper-fp9"])
    assert "\n" not in str(error.value)
    path = tmp_path / "bad.toml"
    path.write_text('accumulators = ["hopper-fp8+promote100"]\n')  # not a multiple of the group of 32
    with pytest.raises(ConfigError, match=r"key 'accumulators'.*promote_every"):
        load_sweep_spec(path)


def test_fused_rows_are_labelled_not_synthesized_and_keep_their_output_format():
    spec = SweepSpec(accumulators=(*FUSED, "e4m7"), fixed_point=())
    fused = [cfg for cfg in spec.configs() if cfg.fused_acc]
    assert [spec.bias_mode(cfg) for cfg in fused] == ["format", "format"]
    area = area_sweep(fused, progress=False).set_index("config")
    for cfg in fused:
        row = result_row(cfg, spec, area.loc[cfg.name].to_dict(), [], blocks=False)
        assert (row["config"], row["acc"], row["input"]) == (cfg.name, cfg.acc.name, "e4m3")
        assert row["acc_bits"] == 22  # the unit's E8M13 output register
        assert row["area_status"] == FUSED_AREA_STATUS.format(acc=cfg.acc.name)
        assert math.isnan(row["ge"]) and math.isnan(row["ge_reduction"])
        assert acc_label(row["acc"]) == cfg.acc.name and not is_reference(row["acc"])
    assert acc_label("e8m23") == "fp32" and is_reference("e8m23")
    rows = pd.DataFrame([result_row(cfg, spec, area.loc[cfg.name].to_dict(), [], blocks=False) for cfg in fused]
                        + [{"config": "e4m3xe4m3-e4m7-rne", "input": "e4m3", "acc": "e4m7", "rounding": "rne", "chunk": 0,
                           "acc_bits": 12, "ge": 908.0}])
    header, cells, _ = compact_table(rows, pd.DataFrame({"config": rows["config"]}))
    assert [row[header.index("Accumulator")] for row in cells] == [*FUSED, "e4m7"]
    assert [row[header.index("MAC area [GE]")] for row in cells] == ["not synthesized (FDPA unit)"] * 2 + ["908"]


def test_area_sweep_mixes_fused_rows_with_synthesized_ones_without_synthesizing_the_fused():
    cfg = MacConfig("e4m3", "hopper-fp8")
    table = area_sweep([cfg], progress=False)
    assert list(table["config"]) == [cfg.name] and "gates" not in table
