"""Area of MAC configurations: Verilog export, synthesis of ``fmaq`` and ``mac``, sweep tables and reports.

:func:`synthesize_configs` gives the full per-configuration report (the ``hwmodel synth --json`` object);
:func:`area_sweep` turns a list of configurations into one table row each, with the reduction against the
FP32-accumulator baseline and the analytical cost model beside the synthesized GE; :func:`write_area_report`
writes that table as area.csv and area.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

import lba_core
import rtl
from lba_core import FloatFormat, MacConfig
from lba_core.fileio import atomic_write_text, markdown_table

from .cache import ResultCache, content_key
from .costmodel import TERMS, WIDTH_COLUMNS, CostModel, fit_cost_model, mac_widths
from .jobs import run_cached
from .synth import BLOCK_NAMES, GLUE_BLOCK, Design, check_targets, synthesize_designs, yosys_version

TOPS = ("fmaq", "mac")
BASELINE_ACC = FloatFormat.parse("fp32")
#: The accumulators of the default sweep (project issue #4): 12-bit candidates, narrower and wider ones.
DEFAULT_ACCS = ("e4m7", "e5m6", "e3m8", "e4m3", "e5m10", "bf16", "fp32")
#: The paper's comparison: FP8 inputs with standard and 12-bit accumulators.
PAPER_INPUTS = ("e4m3", "e5m2")
PAPER_ACCS = ("fp32", "fp16", "bf16", "e4m7", "e5m6", "e3m8")


def default_workers() -> int:
    return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------- export
def generator_fingerprint() -> str:
    """Hash of everything that shapes the exported Verilog: the generator's and lba_core's sources and the
    Amaranth and Yosys versions. Part of each export's cache key, so editing the RTL invalidates it."""
    digest = hashlib.sha256()
    for package in (rtl, lba_core):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    digest.update(f"amaranth {metadata.version('amaranth')} {yosys_version()}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportJob:
    """Export one configuration's Verilog (both tops), flattened or hierarchical."""

    config_json: str
    hierarchical: bool
    fingerprint: str

    @property
    def key(self) -> str:
        return content_key("rtl.export_verilog", self.config_json, str(self.hierarchical), self.fingerprint)

    def run(self) -> dict[str, str]:
        cfg = MacConfig.from_dict(json.loads(self.config_json))
        with tempfile.TemporaryDirectory(prefix="lba-export-") as folder:
            paths = rtl.export_verilog(cfg, folder, hierarchical=self.hierarchical)
            return {top: paths[top].read_text() for top in TOPS}


def export_designs(
    configs: Sequence[MacConfig],
    *,
    block_tops: Sequence[str],
    cache: ResultCache,
    workers: int,
    progress: bool,
) -> list[dict[str, Design]]:
    """The ``fmaq`` and ``mac`` designs of each configuration, with hierarchical Verilog for ``block_tops``."""
    blocks = bool(block_tops)
    fingerprint = generator_fingerprint()
    jobs = []
    for cfg in configs:
        config_json = json.dumps(cfg.to_dict(), sort_keys=True)
        jobs.append(ExportJob(config_json, False, fingerprint))
        if blocks:
            jobs.append(ExportJob(config_json, True, fingerprint))
    texts = iter(run_cached(jobs, cache, workers, progress, desc="verilog"))
    designs = []
    for _ in configs:
        flat = next(texts)
        hierarchical = next(texts) if blocks else {}
        designs.append({top: Design(top, flat[top], hierarchical.get(top) if top in block_tops else None)
                        for top in TOPS})
    return designs


# --------------------------------------------------------------------------------------------- synthesis
def check_configs(configs: Iterable[MacConfig]) -> list[MacConfig]:
    """Every configuration must be buildable: raises ConfigError naming the first that is not."""
    configs = list(configs)
    if not configs:
        raise ValueError("no configurations to synthesize")
    for cfg in configs:
        rtl.check_config(cfg)
    return configs


def synthesize_configs(
    configs: Iterable[MacConfig],
    targets: Iterable[str] = ("generic",),
    *,
    blocks: bool = True,
    cache: ResultCache | None = None,
    workers: int | None = None,
    progress: bool = True,
    timeout_s: float | None = None,
    block_tops: Sequence[str] = TOPS,
) -> list[dict[str, Any]]:
    """``{"fmaq": report, "mac": report, "config": {...}}`` per configuration (see hwmodel.synth for a report).

    ``blocks`` adds the per-block breakdown of the tops in ``block_tops`` (one more Yosys run each)."""
    configs = check_configs(configs)
    targets = check_targets(targets)
    cache = cache if cache is not None else ResultCache(None)
    workers = workers or default_workers()
    block_tops = tuple(block_tops) if blocks else ()
    designs = export_designs(configs, block_tops=block_tops, cache=cache, workers=workers, progress=progress)
    flat = [per_config[top] for per_config in designs for top in TOPS]
    reports = iter(
        synthesize_designs(flat, targets, blocks=blocks, cache=cache, workers=workers, progress=progress,
                           timeout_s=timeout_s)
    )
    results = []
    for cfg in configs:
        result: dict[str, Any] = {top: next(reports) for top in TOPS}
        result["config"] = {**cfg.to_dict(), "name": cfg.name}
        results.append(result)
    return results


# --------------------------------------------------------------------------------------------- sweep table
def with_baselines(configs: Sequence[MacConfig], baseline_acc: FloatFormat = BASELINE_ACC) -> list[MacConfig]:
    """The configurations followed by the ``baseline_acc`` twin (same inputs) of each that is not listed."""
    result = list(dict.fromkeys(configs))
    for cfg in list(result):
        twin = cfg.replace(acc=baseline_acc)
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
        row.update({f"{flow}_{name}": count for name, count in resources.items() if name != "cells"})
    for block in (*BLOCK_NAMES, GLUE_BLOCK):
        if block in mac["blocks"]:
            row[f"block_{block}_ge"] = mac["blocks"][block]["ge"]
    return row


def baseline_key(row: pd.Series) -> tuple:
    return (row["input"], row["weight"], row["product"], row["rounding"], row["chunk"])


def add_reduction(df: pd.DataFrame, baseline_acc: FloatFormat = BASELINE_ACC) -> pd.DataFrame:
    """``ge_reduction`` = 1 - GE / GE of the row with the same inputs and a ``baseline_acc`` accumulator."""
    baselines = {baseline_key(row): row["ge"] for _, row in df[df["acc"] == baseline_acc.name].iterrows()}
    df = df.copy()
    df["baseline_acc"] = baseline_acc.name
    df["ge_reduction"] = [1 - row["ge"] / baselines[baseline_key(row)] for _, row in df.iterrows()]
    return df


def sweep_cost_model(df: pd.DataFrame) -> CostModel | None:
    """The cost model fitted on the table's MAC GE, or None when there are too few distinct points."""
    points = df.drop_duplicates(subset=list(WIDTH_COLUMNS))
    try:
        return fit_cost_model(points[list(WIDTH_COLUMNS)].to_dict("records"), points["ge"].tolist())
    except ValueError:
        return None


def add_cost_model(df: pd.DataFrame) -> pd.DataFrame:
    model = sweep_cost_model(df)
    df = df.copy()
    if model is None:
        df["ge_model"] = math.nan
    else:
        df["ge_model"] = [round(model.predict(row), 1) for row in df[list(WIDTH_COLUMNS)].to_dict("records")]
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
) -> pd.DataFrame:
    """One row per configuration (plus the ``baseline``-accumulator twin of each, if missing): widths, MAC
    gates/GE/transistors/depth/LUTs, FMAq figures, per-block GE, ``ge_reduction`` and the cost model."""
    baseline = FloatFormat.parse(baseline)
    configs = with_baselines(check_configs(configs), baseline)
    # The table reports blocks of the MAC only, so the FMAq's hierarchical run is skipped.
    results = synthesize_configs(configs, targets, blocks=blocks, cache=cache, workers=jobs, progress=progress,
                                 timeout_s=timeout_s, block_tops=("mac",))
    df = pd.DataFrame([sweep_row(cfg, result) for cfg, result in zip(configs, results)])
    return add_cost_model(add_reduction(df, baseline))


# --------------------------------------------------------------------------------------------- reports
SUMMARY_COLUMNS = ("config", "acc", "acc_bits", "gates", "ge", "transistors", "depth", "luts", "ge_reduction",
                   "ge_model", "ge_model_error")


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column.endswith("_error"):
        return f"{100 * value:+.1f}%"
    if column.endswith("_reduction"):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:,.1f}" if not value.is_integer() else f"{int(value):,d}"
    if isinstance(value, int):
        return f"{value:,d}"
    return str(value)


def area_table(df: pd.DataFrame, columns: Sequence[str]) -> str:
    """The non-empty ``columns`` of ``df`` as a Markdown table."""
    columns = [column for column in columns if column in df.columns and df[column].notna().any()]
    return markdown_table(columns, ([_cell(c, record[c]) for c in columns] for record in df[columns].to_dict("records")))


def cost_model_text(model: CostModel | None) -> str:
    if model is None:
        return f"Too few distinct points to fit the cost model (it needs more than {len(TERMS)})."
    terms = " + ".join(f"{value:.3g}·{term}" for term, value in model.coefficients.items())
    return (
        f"GE ≈ {terms} (fitted on {model.points} points; relative error: RMS {100 * model.rms_error:.1f}%, "
        f"max {100 * model.max_error:.1f}%, leave-one-out RMS {100 * model.loo_rms_error:.1f}%). "
        "Terms: multiplier = (Ma+1)(Mb+1), shifter = W·log2 W, adder = W, exponent = E, register = "
        "accumulator bits; see docs/hwmodel.md."
    )


def baseline_name(df: pd.DataFrame) -> str:
    return ", ".join(sorted(set(df["baseline_acc"])))


def write_area_report(df: pd.DataFrame, out_dir: Path | str, title: str = "MAC area sweep") -> dict[str, Path]:
    """Write ``area.csv`` (every column) and ``area.md`` (summary, blocks, cost model) into ``out_dir``."""
    out = Path(out_dir)
    paths = {"csv": out / "area.csv", "md": out / "area.md"}
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    block_columns = ["config", *[column for column in df.columns if column.startswith("block_")]]
    fpga_columns = ["config", *[column for column in df.columns
                                if column.split("_")[0] in ("ice40", "xilinx", "ecp5")]]
    sections = [
        f"# {title}",
        (
            "MAC unit (`mac`: FMAq + accumulator register) synthesized with Yosys to generic gates; GE in NAND2 "
            "equivalents (NanGate 45 nm cell areas, hwmodel/data/cell_area.csv); depth = longest combinational "
            f"path in gates; `ge_reduction` = 1 − GE / GE of the same inputs with a {baseline_name(df)} "
            "accumulator; `ge_model` = the analytical cost model."
        ),
        area_table(df, SUMMARY_COLUMNS),
        "## Per block (GE, hierarchical synthesis of `mac`)",
        area_table(df, block_columns) if len(block_columns) > 1 else "No block breakdown in this run.",
    ]
    if len(fpga_columns) > 1:
        sections += ["## FPGA resources (`mac`)", area_table(df, fpga_columns)]
    sections += ["## Cost model", cost_model_text(sweep_cost_model(df))]
    atomic_write_text(paths["md"], "\n\n".join(sections) + "\n")
    return paths


def default_configs(input_format: str = "e4m3", accs: Sequence[str] = DEFAULT_ACCS) -> list[MacConfig]:
    return [MacConfig(input=input_format, acc=acc) for acc in accs]


def paper_claim_configs() -> list[MacConfig]:
    return [MacConfig(input=fmt, acc=acc) for fmt in PAPER_INPUTS for acc in PAPER_ACCS]


def paper_claim_table(df: pd.DataFrame) -> pd.DataFrame:
    """Accumulator rows × input-format columns of GE and reduction, in the order of PAPER_ACCS."""
    accs = [FloatFormat.parse(acc).name for acc in PAPER_ACCS]
    table = pd.DataFrame({"accumulator": PAPER_ACCS, "acc": accs})
    table["acc_bits"] = [FloatFormat.parse(acc).width for acc in accs]
    for fmt in PAPER_INPUTS:
        rows = df[df["input"] == FloatFormat.parse(fmt).name].set_index("acc")
        table[f"{fmt}_ge"] = [rows.at[acc, "ge"] for acc in accs]
        table[f"{fmt}_ge_reduction"] = [rows.at[acc, "ge_reduction"] for acc in accs]
    return table


def write_paper_claim(df: pd.DataFrame, out_dir: Path | str) -> dict[str, Path]:
    """The full area report plus ``paper_claim.csv``/``paper_claim.md`` (accumulators × input formats)."""
    out = Path(out_dir)
    paths = write_area_report(df, out, title="Paper claim: MAC area with FP8 inputs")
    table = paper_claim_table(df)
    paths["claim_csv"] = out / "paper_claim.csv"
    paths["claim_md"] = out / "paper_claim.md"
    atomic_write_text(paths["claim_csv"], table.to_csv(index=False))
    text = (
        "# MAC area with FP8 inputs: standard vs 12-bit accumulators\n\n"
        "GE of the synthesized MAC (FMAq + accumulator register; NAND2 equivalents, NanGate 45 nm cell areas) "
        f"and its reduction against the {baseline_name(df)} accumulator with the same inputs.\n\n"
        + area_table(table, list(table.columns))
        + "\n"
    )
    atomic_write_text(paths["claim_md"], text)
    return paths


def area_records(
    configs: Iterable[MacConfig], targets: Iterable[str] = ("generic",), **options: Any
) -> dict[str, dict[str, Any]]:
    """Area figures per configuration name (the synthesis columns of :func:`sweep_row`), for callers that
    join area with other results; ``options`` are those of :func:`synthesize_configs`."""
    configs = check_configs(configs)
    results = synthesize_configs(configs, targets, **options)
    return {cfg.name: sweep_row(cfg, result) for cfg, result in zip(configs, results)}
