"""Area of real MAC configurations (rtl + Yosys): monotonicity, the sweep table, reports, the CLI's JSON.

One small sweep (e4m3 inputs; e4m3, e4m5, e4m7 accumulators; e4m7 as the baseline) is synthesized once per
session into a private cache; the CLI tests read the same cache, so they exercise the command paths
without paying for synthesis again.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from hwmodel.synthesis.area import area_sweep, write_area_report
from hwmodel.synthesis.mac_synth import ExportJob, generator_fingerprint, generator_sources, synthesize_configs
from hwmodel.report.paper_claim import paper_claim_table
from hwmodel.execution.cache import ResultCache
from hwmodel.cli import main
from lba_core import ConfigError, MacConfig
from rtl import MAC, FMAq, module_blocks
from rtl.hierarchy import FLOAT_BLOCK_NAMES

SWEEP_ACCS = ("e4m3", "e4m5", "e4m7")
BASELINE = "e4m7"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hwmodel-cache")


@pytest.fixture(scope="session")
def sweep(cache_dir) -> pd.DataFrame:
    configs = [MacConfig(input="e4m3", acc=acc) for acc in SWEEP_ACCS]
    return area_sweep(configs, jobs=2, cache=ResultCache(cache_dir), progress=False, baseline=BASELINE)


def test_more_accumulator_mantissa_bits_never_cost_fewer_ge(sweep, comparisons):
    ordered = sweep.set_index("acc").loc[list(SWEEP_ACCS)]
    for column in ("ge", "fmaq_ge", "transistors"):
        values = ordered[column].tolist()
        assert values == sorted(values), f"{column} decreases with more mantissa bits: {values}"
    assert ordered["ge"].iloc[0] < ordered["ge"].iloc[-1]
    comparisons("monotonicity pairs (ge, fmaq_ge, transistors)", 3 * (len(SWEEP_ACCS) - 1))


def test_sweep_table(sweep):
    assert list(sweep["acc"]) == list(SWEEP_ACCS)  # the baseline was in the list: no extra row
    baseline_ge = sweep.set_index("acc").at[BASELINE, "ge"]
    for _, row in sweep.iterrows():
        assert row["ge_reduction"] == pytest.approx(1 - row["ge"] / baseline_ge)
        assert row["acc_bits"] == MacConfig(input="e4m3", acc=row["acc"]).acc.width
        assert row["flops"] == row["acc_bits"]  # the MAC's only state is the accumulator register
        blocks = [column for column in sweep.columns if column.startswith("block_")]
        assert {"block_multiplier_ge", "block_aligner_ge", "block_register_ge"} <= set(blocks)
    # Three points cannot fit five cost-model terms: the model columns stay empty rather than overfit.
    assert sweep["ge_model"].isna().all()


def test_baseline_twin_is_added(cache_dir):
    df = area_sweep([MacConfig(input="e4m3", acc="e4m3")], jobs=2, cache=ResultCache(cache_dir), progress=False,
                    baseline=BASELINE)
    assert list(df["acc"]) == ["e4m3", "e4m7"]
    assert df["ge_reduction"].iloc[1] == 0


def test_area_report_files(sweep, tmp_path):
    paths = write_area_report(sweep, tmp_path / "report", title="test sweep")
    assert pd.read_csv(paths["csv"])["ge"].tolist() == sweep["ge"].tolist()
    text = paths["md"].read_text()
    assert text.startswith("# test sweep")
    assert all(name in text for name in sweep["config"])
    assert "Too few distinct points" in text


def test_verilog_export_is_reproducible_and_keyed_by_generator():
    cfg = json.dumps(MacConfig(input="e4m3", acc="e4m3").to_dict(), sort_keys=True)
    fingerprint = generator_fingerprint()
    job = ExportJob(cfg, False, fingerprint)
    assert job.run() == job.run()
    assert fingerprint == generator_fingerprint()
    keys = {job.key, ExportJob(cfg, True, fingerprint).key, ExportJob(cfg, False, "other").key}
    assert len(keys) == 3


def test_every_block_of_the_design_appears_in_the_breakdown(cache_dir):
    """A chunked MAC with a product format instantiates every block class; the per-block report lists each
    block the circuit has (zero-cell ones included), states the flat total as canonical and the overhead."""
    cfg = MacConfig(input="e4m3", acc="e4m3", product="e4m2", chunk_size=4)
    result = synthesize_configs([cfg], cache=ResultCache(cache_dir), workers=2, progress=False)[0]
    for top, component in (("fmaq", FMAq(cfg)), ("mac", MAC(cfg))):
        design_blocks = {block for block in module_blocks(component, top).values() if block is not None}
        report = result[top]
        assert set(report["blocks"]) - {"glue"} == design_blocks, top
        assert report["blocks_ge"] == pytest.approx(sum(block["ge"] for block in report["blocks"].values()))
        assert report["blocks_overhead"] == pytest.approx(report["blocks_ge"] / report["ge"] - 1)
    assert set(result["mac"]["blocks"]) - {"glue"} == set(FLOAT_BLOCK_NAMES)


def test_synthesis_cache_key_covers_only_the_circuit_sources():
    """Editing tests (the cosimulation harness included), the simulator or hwmodel leaves every cached export
    and synthesis warm: the export key hashes rtl/ and lba_core/ sources only."""
    names = list(generator_sources())
    assert names and all(name.split("/")[0] in ("rtl", "lba_core") for name in names)
    assert "rtl/fmaq.py" in names and "lba_core/datapath.py" in names
    assert not any("cosim" in name or name.startswith("tests") for name in names)


def test_synthesis_is_reproducible_without_cache(sweep):
    fresh = synthesize_configs([MacConfig(input="e4m3", acc="e4m3")], blocks=False, cache=ResultCache(None),
                               workers=2, progress=False)[0]
    row = sweep.set_index("acc").loc["e4m3"]
    assert (fresh["mac"]["ge"], fresh["mac"]["gates"], fresh["mac"]["depth"]) == (row["ge"], row["gates"], row["depth"])
    assert fresh["fmaq"]["ge"] == row["fmaq_ge"]


def test_unbuildable_configuration_is_rejected_before_work():
    with pytest.raises(ConfigError, match="simulation-only"):
        area_sweep([MacConfig(input="e4m3", acc="e4m7", underflow=False)], progress=False)


def test_synth_json_output_schema(sweep, cache_dir, capsys):
    assert main(["synth", "--in", "e4m3", "--acc", "e4m7", "--json", "--cache-dir", str(cache_dir)]) == 0
    result = json.loads(capsys.readouterr().out)  # stdout is exactly one JSON object
    assert set(result) == {"fmaq", "mac", "config"}
    assert result["config"]["name"] == "e4m3xe4m3-e4m7-rne"
    fields = {key: value for key, value in result["config"].items() if key not in ("name", "pipeline")}
    assert MacConfig.from_dict(fields).acc.name == "e4m7"
    assert result["config"]["pipeline"] == 0
    for top in ("fmaq", "mac"):
        report = result[top]
        for key, kind in (("gates", int), ("ge", float), ("transistors", int), ("depth", int), ("cells", dict),
                          ("blocks", dict), ("fpga", dict)):
            assert isinstance(report[key], kind), (top, key)
        assert all(isinstance(count, int) for count in report["cells"].values())
        assert sum(report["cells"].values()) == report["gates"]
        for figures in report["blocks"].values():
            assert set(figures) == {"gates", "ge"}
    assert result["mac"]["ge"] == sweep.set_index("acc").at["e4m7", "ge"]


def test_sweep_command_writes_the_report(sweep, cache_dir, tmp_path, capsys):
    argv = ["sweep", "--in", "e4m3", "--acc", "e4m3,e4m5", "--name", "mini", "--reports", str(tmp_path),
            "--baseline", BASELINE, "--cache-dir", str(cache_dir)]
    assert main(argv) == 0
    assert str(tmp_path / "mini" / "area.md") in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "mini" / "area.csv")
    assert list(table["acc"]) == ["e4m3", "e4m5", BASELINE]  # the baseline is added


def test_bad_target_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["synth", "--in", "e4m3", "--acc", "e4m7", "--target", "asic"])
    assert caught.value.code == 2
    assert "unknown target" in capsys.readouterr().err


def test_paper_claim_table_layout():
    rows = []
    for fmt in ("e4m3", "e5m2"):
        for acc, ge in (("e8m23", 100.0), ("e5m10", 70.0), ("e8m7", 60.0), ("e4m7", 50.0), ("e5m6", 48.0),
                        ("e3m8", 52.0)):
            rows.append({"input": fmt, "acc": acc, "ge": ge, "ge_reduction": 1 - ge / 100.0})
    table = paper_claim_table(pd.DataFrame(rows))
    assert list(table["acc"]) == ["e8m23", "e5m10", "e8m7", "e4m7", "e5m6", "e3m8"]
    assert list(table["acc_bits"]) == [32, 16, 16, 12, 12, 12]
    assert table["e5m2_ge_reduction"].tolist() == pytest.approx([0, 0.3, 0.4, 0.5, 0.52, 0.48])
    assert not math.isnan(table["e4m3_ge"].sum())


@pytest.mark.slow
def test_synth_all_targets(cache_dir, capsys):
    assert main(["synth", "--in", "e4m3", "--acc", "e4m7", "--target", "all", "--json", "--no-blocks",
                 "--cache-dir", str(cache_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    for top in ("fmaq", "mac"):
        fpga = result[top]["fpga"]
        assert set(fpga) == {"ice40", "xilinx", "xilinx_nodsp", "ecp5"}
        assert all(fpga[flow]["lut"] > 0 for flow in fpga)
        assert fpga["xilinx_nodsp"]["dsp"] == 0
    assert result["mac"]["fpga"]["ice40"]["ff"] == result["mac"]["flops"]


def test_estimate_needs_enough_basis_points(sweep, cache_dir, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["estimate", "--in", "e4m3", "--acc", "e4m6", "--basis", ",".join(SWEEP_ACCS),
              "--cache-dir", str(cache_dir)])
    assert caught.value.code == 2
    assert "needs more than 5 distinct points" in capsys.readouterr().err
