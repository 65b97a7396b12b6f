"""The area sweep table of MAC configurations and its report (area.csv, area.md).

:func:`area_sweep` turns a list of configurations into one table row each, with the reduction against the
FP32-accumulator baseline and the analytical cost model beside the synthesized GE; :func:`write_area_report`
writes that table as area.csv and area.md. Synthesis itself is hwmodel.synthesis.mac_synth's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lba_core import ConfigError, FloatFormat, MacConfig
from lba_core.fileio import atomic_write_text, markdown_table

from ..execution.cache import ResultCache
from . import columns
from .costmodel import WIDTH_COLUMNS, cost_model_text, mac_widths, sweep_cost_model
from ..execution.jobs import Executor
from .mac_synth import check_configs, synthesize_configs

BASELINE_ACC = FloatFormat.parse("fp32")
#: The accumulators of the default sweep (project issue #4): 12-bit candidates, narrower and wider ones.
DEFAULT_ACCS = ("e4m7", "e5m6", "e3m8", "e4m3", "e5m10", "bf16", "fp32")


def with_baselines(configs: Sequence[MacConfig], baseline_acc: FloatFormat = BASELINE_ACC) -> list[MacConfig]:
    """The configurations followed by the ``baseline_acc`` twin (same inputs) of each that is not listed.

    Integer operands have no floating-point twin (docs/arithmetic.md §8): their rows get no reduction."""
    result = list(dict.fromkeys(configs))
    for cfg in list(result):
        try:
            twin = cfg.replace(acc=baseline_acc)
        except ConfigError:
            continue
        if twin not in result:
            result.append(twin)
    return result


def luts_of(fpga: dict[str, Any]) -> float:
    """One LUT figure per row: iCE40 LUT4s, else Xilinx LUTs without DSPs, else ECP5 LUT4s."""
    for flow in ("ice40", "xilinx_nodsp", "ecp5"):
        if flow in fpga:
            return fpga[flow]["lut"]
    return math.nan


def sweep_row(cfg: MacConfig, result: dict[str, Any]) -> dict[str, Any]:
    mac, fmaq = result["mac"], result["fmaq"]
    row: dict[str, Any] = {
        "config": cfg.name,
        "input": cfg.a_format.name,
        "weight": cfg.b_format.name,
        "product": cfg.product.name if cfg.product else "exact",
        "acc": cfg.acc.name,
        "rounding": cfg.rounding,
        "chunk": cfg.chunk_size or 0,
        **mac_widths(cfg),
        "gates": mac["gates"],
        "flops": mac["flops"],
        "ge": mac["ge"],
        "transistors": mac["transistors"],
        "depth": mac["depth"],
        "luts": luts_of(mac["fpga"]),
        "fmaq_gates": fmaq["gates"],
        "fmaq_ge": fmaq["ge"],
        "fmaq_depth": fmaq["depth"],
    }
    for flow, resources in sorted(mac["fpga"].items()):
        row.update({columns.target_column(flow, name): count for name, count in resources.items() if name != "cells"})
    for block, figures in mac["blocks"].items():  # every block of the breakdown, in datapath order
        row[columns.block_ge(block)] = figures["ge"]
    if mac["blocks"]:
        row["blocks_ge"] = mac["blocks_ge"]
        row["blocks_overhead"] = mac["blocks_overhead"]
    return row


#: The area cell of a fused accumulator's row in a sweep: the FDPA unit is a group of L products, not a MAC, and is
#: synthesized on its own (``hwmodel synth --in e4m3 --acc hopper-fp8``, hwmodel.synthesis.fdpa_synth).
FUSED_AREA_STATUS = "not synthesized: fused FDPA unit, not a MAC (hwmodel synth --acc {acc})"


def register_bits(cfg: MacConfig) -> int:
    """The accumulator register's width of a row: the accumulator format's, or a fused unit's output format's (a
    promoted chain adds an fp32 register beside it)."""
    return cfg.acc.output.width if cfg.fused_acc else cfg.acc.width


def fused_row(cfg: MacConfig) -> dict[str, Any]:
    """The area row of a fused-accumulator configuration: its labels, the width of the unit's output register
    (``acc_bits``; a promoted chain adds an fp32 register beside it) and ``area_status`` instead of figures."""
    return {
        "config": cfg.name,
        "input": cfg.a_format.name,
        "weight": cfg.b_format.name,
        "product": "exact",
        "acc": cfg.acc.name,
        "rounding": cfg.rounding,
        "chunk": cfg.chunk_size or 0,
        **{name: math.nan for name in WIDTH_COLUMNS},
        "acc_bits": register_bits(cfg),
        "ge": math.nan,
        "area_status": FUSED_AREA_STATUS.format(acc=cfg.acc.name),
    }


def baseline_key(row: pd.Series) -> tuple:
    return (row["input"], row["weight"], row["product"], row["rounding"], row["chunk"])


def add_reduction(df: pd.DataFrame, baseline_acc: FloatFormat = BASELINE_ACC) -> pd.DataFrame:
    """``ge_reduction`` = 1 - GE / GE of the row with the same inputs and a ``baseline_acc`` accumulator."""
    baselines = {baseline_key(row): row["ge"] for _, row in df[df["acc"] == baseline_acc.name].iterrows()}
    df = df.copy()
    df["baseline_acc"] = baseline_acc.name
    df["ge_reduction"] = [1 - row["ge"] / baselines.get(baseline_key(row), math.nan) for _, row in df.iterrows()]
    return df


def add_cost_model(df: pd.DataFrame) -> pd.DataFrame:
    model = sweep_cost_model(df)
    df = df.copy()
    if model is None:
        df["ge_model"] = math.nan
    else:
        df["ge_model"] = [math.nan if any(map(math.isnan, row.values())) else round(model.predict(row), 1)
                          for row in df[list(WIDTH_COLUMNS)].to_dict("records")]
    df["ge_model_error"] = df["ge_model"] / df["ge"] - 1
    return df


def area_sweep(
    configs: Iterable[MacConfig],
    targets: Iterable[str] = ("generic",),
    *,
    jobs: int | None = None,
    cache: ResultCache | None = None,
    blocks: bool = True,
    progress: bool = True,
    timeout_s: float | None = None,
    baseline: str | FloatFormat = BASELINE_ACC,
    energy: bool = False,
    executor: Executor | None = None,
    stream_spec: Any = None,
) -> pd.DataFrame:
    """One row per configuration (plus the ``baseline``-accumulator twin of each, if missing): widths, MAC
    gates/GE/transistors/depth/LUTs, FMAq figures, per-block GE, ``ge_reduction`` and the cost model; for
    the silicon targets (sky130, nangate45; ice40/ecp5 place and route) the MAC's ``<target>_um2``,
    ``_period_ns``, ``_fmax_mhz``, ``_loop_ns``, ``_luts``... (hwmodel.synthesis.silicon), and with ``energy``
    ``<library>_pj_per_mac`` (real operands), ``_pj_per_mac_random``, ``_pj_per_inference`` (one inference of
    the operands' model, hwmodel.synthesis.flows.operands.StreamSpec ``stream_spec``; default the digits ResNet) and
    ``_energy_vs_opensta`` (the energy model's check). ``executor`` (hwmodel.execution.jobs.Executor, default
    local workers) runs the synthesis jobs that are not cached; the table does not depend on it."""
    from .flows.targets import ASIC_TARGETS, silicon_reports
    from .flows.nextpnr import PNR_TARGETS
    from .silicon import silicon_row
    from .synth import TARGETS as YOSYS_TARGETS

    baseline = FloatFormat.parse(baseline)
    configs = list(configs)
    fused = [fused_row(cfg) for cfg in configs if cfg.fused_acc]
    configs = [cfg for cfg in configs if not cfg.fused_acc]
    if not configs:
        return add_cost_model(add_reduction(pd.DataFrame(fused), baseline))
    configs = with_baselines(check_configs(configs), baseline)
    targets = tuple(targets)
    # The table reports blocks of the MAC only, so the FMAq's hierarchical run is skipped.
    results = synthesize_configs(configs, [target for target in targets if target in YOSYS_TARGETS],
                                 blocks=blocks, cache=cache, workers=jobs, progress=progress, timeout_s=timeout_s,
                                 block_tops=("mac",), executor=executor)
    rows = [sweep_row(cfg, result) for cfg, result in zip(configs, results)]
    silicon_targets = [target for target in targets if target in (*ASIC_TARGETS, *PNR_TARGETS)]
    if silicon_targets:
        silicon = silicon_reports(configs, silicon_targets, blocks=False, cache=cache, workers=jobs,
                                  progress=progress, timeout_s=timeout_s, energy=energy, tops=("mac",),
                                  recipes=("area",), executor=executor, stream_spec=stream_spec)
        rows = [{**row, **silicon_row(result)} for row, result in zip(rows, silicon)]
    df = pd.DataFrame(rows + fused)
    return add_cost_model(add_reduction(df, baseline))


SUMMARY_COLUMNS = ("config", "acc", "acc_bits", "gates", "ge", "transistors", "depth", "luts", "ge_reduction",
                   "ge_model", "ge_model_error", "area_status")


def _cell(column: columns.Column | None, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column is not None and column.unit == columns.FRACTION:
        return f"{100 * value:+.1f}%" if column.signed else f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:,.1f}" if not value.is_integer() else f"{int(value):,d}"
    if isinstance(value, int):
        return f"{value:,d}"
    return str(value)


def area_table(df: pd.DataFrame, names: Sequence[str], declared: dict[str, columns.Column] | None = None) -> str:
    """The non-empty columns ``names`` of ``df`` as a Markdown table, each headed with its unit and its values
    formatted by its declaration (hwmodel.synthesis.columns; ``declared``: a table's own map, default area.csv's)."""
    declared = columns.SCHEMA[columns.AREA] if declared is None else declared
    names = [name for name in names if name in df.columns and df[name].notna().any()]
    header = [name + (f" [{declared[name].shown_unit}]" if name in declared and declared[name].shown_unit else "")
              for name in names]
    return markdown_table(header, ([_cell(declared.get(name), record[name]) for name in names]
                                   for record in df[names].to_dict("records")))


def baseline_name(df: pd.DataFrame) -> str:
    return ", ".join(sorted(set(df["baseline_acc"])))


def write_area_report(df: pd.DataFrame, out_dir: Path | str, title: str = "MAC area sweep") -> dict[str, Path]:
    """Write ``area.csv`` (every column) and ``area.md`` (summary, blocks, cost model) into ``out_dir``."""
    out = Path(out_dir)
    paths = {"csv": out / "area.csv", "md": out / "area.md"}
    atomic_write_text(paths["csv"], columns.to_csv(columns.AREA, df))
    block_columns = ["config", "ge", *columns.names(columns.AREA, family="block", present=df.columns),
                     "blocks_ge", "blocks_overhead"]
    fpga_columns = ["config", *columns.names(columns.AREA, family="fpga", present=df.columns)]
    sections = [
        f"# {title}",
        (
            "MAC unit (`mac`: FMAq + accumulator register) synthesized with Yosys to generic gates; GE in NAND2 "
            "equivalents (NanGate 45 nm cell areas, hwmodel/synthesis/data/cell_area.csv); depth = longest combinational "
            f"path in gates; `ge_reduction` = 1 − GE / GE of the same inputs with a {baseline_name(df)} "
            "accumulator; `ge_model` = the analytical cost model."
        ),
        area_table(df, SUMMARY_COLUMNS),
        "## Per block (GE, hierarchical synthesis of `mac`)",
        (
            "`ge` is the canonical area: the flat synthesis, which optimizes across block boundaries. The "
            "per-block split comes from a second, hierarchical synthesis that keeps every block a module; its "
            "total is `blocks_ge`, and `blocks_overhead` = blocks_ge / ge − 1 is what keeping the hierarchy "
            "costs. `block_glue_ge` is the logic outside every block (the MAC's input muxes and chunk control)."
        ) if "blocks_ge" in df.columns else "No block breakdown in this run.",
    ]
    if "blocks_ge" in df.columns:
        sections.append(area_table(df, block_columns))
    sections += [
    ]
    if len(fpga_columns) > 1:
        sections += ["## FPGA resources (`mac`)", area_table(df, fpga_columns)]
    asic_columns = ["config", *columns.names(columns.AREA, family="silicon", present=df.columns)]
    if len(asic_columns) > 1:
        sections += ["## Standard cells (`mac`: µm², cells, leakage nW, OpenSTA period/Fmax/loop ns, pJ/MAC)",
                     area_table(df, asic_columns)]
    sections += ["## Cost model", cost_model_text(sweep_cost_model(df))]
    atomic_write_text(paths["md"], "\n\n".join(sections) + "\n")
    return paths


def default_configs(input_format: str = "e4m3", accs: Sequence[str] = DEFAULT_ACCS) -> list[MacConfig]:
    return [MacConfig(input=input_format, acc=acc) for acc in accs]
