"""Silicon figures as table rows: µm², timing, energy per MAC and FPGA results of hwmodel.synthesis.flows.targets,
flattened per configuration, with ratios against the FP32-accumulator twin of the same inputs.

Used by ``hwmodel paper-claim`` (paper_claim_silicon.csv/.md) and by the sweep's silicon columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lba_core import FloatFormat, MacConfig
from lba_core.fileio import atomic_write_text, markdown_table, replace_marked_block

from . import columns
from .flows.nextpnr import DEVICES

#: Figures of the MAC per ASIC library, as (column suffix, report key or path of keys). The energy of one
#: inference of the operands' model is the sum over its layers of MACs per image x pJ/MAC on that layer's
#: operands (hwmodel.synthesis.flows.energy); ``energy_vs_opensta`` is the estimator / OpenSTA report_power ratio
#: under the same global activity (the energy model's check).
ASIC_COLUMNS = (
    ("um2", "area_um2"),
    ("cells", "cells"),
    ("leakage_nw", "leakage_nw"),
    ("period_ns", "period_ns"),
    ("fmax_mhz", "fmax_mhz"),
    ("loop_ns", "reg_to_reg_ns"),
    ("pj_per_mac", "energy_pj_per_mac"),
    ("pj_per_mac_random", "energy_pj_per_mac_random"),
    ("pj_per_inference", "energy_pj_per_inference"),
    ("pj_per_inference_random", ("energy_detail", "random", "pj_per_image")),
    ("energy_vs_opensta", ("energy_validation", "ratio")),
)
FPGA_COLUMNS = (("luts", "luts"), ("ffs", "ffs"), ("dsps", "dsps"), ("fmax_mhz", "fmax_mhz"))
#: Figures whose ratio against the FP32 accumulator the claim table reports.
RATIO_COLUMNS = columns.RATIO_FIGURES


def silicon_row(silicon: dict[str, dict[str, Any]], top: str = "mac") -> dict[str, Any]:
    """``<target>_<figure>`` columns of one configuration's ``top`` (ASIC and FPGA targets it has)."""
    row: dict[str, Any] = {}
    for target, figures in silicon.get(top, {}).items():
        declared = ASIC_COLUMNS if "area_um2" in figures else FPGA_COLUMNS
        for suffix, key in declared:
            value = figures
            for part in (key,) if isinstance(key, str) else key:
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                row[columns.target_column(target, suffix)] = value
    return row


def with_ratios(rows: list[dict[str, Any]], configs: Sequence[MacConfig],
                baseline: FloatFormat = FloatFormat.parse("fp32")) -> list[dict[str, Any]]:
    """Each row plus ``<column>_vs_fp32`` = value / value of the FP32-accumulator row with the same inputs."""
    by_inputs = {}
    for cfg, row in zip(configs, rows):
        if cfg.acc == baseline:
            by_inputs[(cfg.a_format.name, cfg.b_format.name)] = row
    result = []
    for cfg, row in zip(configs, rows):
        reference = by_inputs.get((cfg.a_format.name, cfg.b_format.name), {})
        extra = {}
        for column, value in row.items():
            if column in columns.RATIO_OF:
                base = reference.get(column)
                if isinstance(value, (int, float)) and isinstance(base, (int, float)) and base:
                    extra[columns.RATIO_OF[column]] = round(value / base, 4)
        result.append({**row, **extra})
    return result


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def claim_rows(configs: Sequence[MacConfig], silicon: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{"input": cfg.a_format.name, "acc": cfg.acc.name, "acc_bits": cfg.acc.width, **silicon_row(result)}
            for cfg, result in zip(configs, silicon)]
    return with_ratios(rows, configs)


def write_silicon_claim(configs: Sequence[MacConfig], silicon: Sequence[dict[str, Any]], out_dir: Path | str,
                        libraries: Sequence[str], provenance: str) -> dict[str, Path]:
    """``paper_claim_silicon.csv`` (every column) and ``.md`` (per library: µm², period, pJ/MAC and their
    ratios vs the FP32 accumulator)."""
    import pandas as pd

    out = Path(out_dir)
    rows = claim_rows(configs, silicon)
    paths = {"silicon_csv": out / "paper_claim_silicon.csv", "silicon_md": out / "paper_claim_silicon.md"}
    frame = pd.DataFrame(rows)
    atomic_write_text(paths["silicon_csv"], columns.to_csv(columns.SILICON, frame))
    sections = ["# MAC in standard cells with FP8 inputs: standard vs 12-bit accumulators", provenance]
    for library in libraries:
        figures = [("um2", "µm²"), ("period_ns", "period ns"), ("pj_per_mac", "pJ/MAC"),
                   ("pj_per_mac_random", "pJ/MAC random")]
        header = ["input", "acc", "bits"]
        for suffix, label in figures:
            header += [label, f"{label} / fp32"]
        body = []
        for row in rows:
            cells = [row["input"], row["acc"], row["acc_bits"]]
            for suffix, _ in figures:
                column = f"{library}_{suffix}"
                cells += [_format(row.get(column)), _format(row.get(f"{column}_vs_fp32"))]
            body.append(cells)
        sections += [f"## {library}", markdown_table(header, body, "llr" + "r" * 2 * len(figures))]
    fpga = sorted(device for device in DEVICES if any(columns.target_column(device, "luts") in row for row in rows))
    for device in fpga:
        header = ["input", "acc", "LUTs", "LUTs / fp32", "FFs", "DSPs", "Fmax MHz", "Fmax / fp32"]
        body = [[row["input"], row["acc"], _format(row.get(f"{device}_luts")),
                 _format(row.get(f"{device}_luts_vs_fp32")), _format(row.get(f"{device}_ffs")),
                 _format(row.get(f"{device}_dsps")), _format(row.get(f"{device}_fmax_mhz")),
                 _format(row.get(f"{device}_fmax_mhz_vs_fp32"))] for row in rows]
        sections += [f"## {device} (nextpnr)", markdown_table(header, body, "llrrrrrr")]
    atomic_write_text(paths["silicon_md"], "\n\n".join(sections) + "\n")
    return paths


README_MARKERS = ("<!-- silicon_claim: generated from reports/paper_claim/paper_claim_silicon.csv by "
                  "hwmodel.synthesis.silicon.update_readme -->", "<!-- /silicon_claim -->")
#: The README's summary: e4m7 vs fp32 accumulator, per input format, each figure as a ratio.
SUMMARY_FIGURES = (("sky130_um2", "sky130 µm²"), ("sky130_period_ns", "sky130 period"),
                   ("sky130_pj_per_mac", "sky130 pJ/MAC"), ("sky130_pj_per_mac_random", "sky130 pJ/MAC random"),
                   ("nangate45_um2", "nangate45 µm²"), ("nangate45_period_ns", "nangate45 period"),
                   ("nangate45_pj_per_mac", "nangate45 pJ/MAC"),
                   ("nangate45_pj_per_mac_random", "nangate45 pJ/MAC random"),
                   ("ice40_luts", "iCE40 LUTs"), ("ice40_fmax_mhz", "iCE40 Fmax"),
                   ("ecp5_luts", "ECP5 LUTs"), ("ecp5_fmax_mhz", "ECP5 Fmax"))


def ratio_summary(csv_path: Path | str, acc: str = "e4m7") -> str:
    """A Markdown table: for each input format, ``acc``'s figures and their ratio to the fp32 accumulator."""
    import pandas as pd

    df = pd.read_csv(csv_path)
    header = ["figure (MAC)"]
    rows = df[df["acc"] == acc]
    base = df[df["acc"] == "e8m23"].set_index("input")
    for _, row in rows.iterrows():
        header += [f"{row['input']}: {acc}", "fp32", f"{acc} / fp32"]
    body = []
    for column, label in SUMMARY_FIGURES:
        if column not in df:
            continue
        cells = [label]
        for _, row in rows.iterrows():
            cells += [_format(row[column]), _format(base.at[row["input"], column]),
                      _format(row.get(f"{column}_vs_fp32"))]
        body.append(cells)
    return markdown_table(header, body, "l" + "r" * (len(header) - 1))


FPGA_README_MARKERS = ("<!-- fpga_claim: generated from reports/paper_claim/synth_<input>_<acc>_fpga.json by "
                       "hwmodel.synthesis.silicon.update_readme -->", "<!-- /fpga_claim -->")
#: The FPGA summary's rows: (device, report key, label).
FPGA_SUMMARY_FIGURES = (("ice40", "luts", "iCE40 HX8K LUTs"), ("ice40", "ffs", "iCE40 HX8K FFs"),
                        ("ice40", "fmax_mhz", "iCE40 HX8K Fmax MHz"), ("ecp5", "luts", "ECP5 25k LUTs"),
                        ("ecp5", "dsps", "ECP5 25k DSPs"), ("ecp5", "fmax_mhz", "ECP5 25k Fmax MHz"))


def fpga_report_path(folder: Path | str, input_format: str, acc: str) -> Path:
    """Where ``hwmodel synth --in INPUT --acc ACC --target ice40,ecp5 --no-blocks --json`` is kept."""
    return Path(folder) / f"synth_{input_format}_{acc}_fpga.json"


def fpga_summary(folder: Path | str = "reports/paper_claim", acc: str = "e4m7",
                 inputs: Sequence[str] = ("e4m3", "e5m2")) -> str:
    """A Markdown table of the MAC on the FPGAs: ``acc`` vs fp32 for each input format whose two synth
    reports are in ``folder``, Fmax with its seeds' range, then the flow as the reports state it."""
    import json

    reports = {}
    for input_format in inputs:
        paths = [fpga_report_path(folder, input_format, name) for name in (acc, "fp32")]
        if all(path.is_file() for path in paths):
            reports[input_format] = [json.loads(path.read_text(encoding="utf-8"))["mac"] for path in paths]
    header = ["figure (MAC)"]
    for input_format in reports:
        header += [f"{input_format}: {acc}", "fp32", f"{acc} / fp32"]

    def text(figures: dict[str, Any], key: str) -> str:
        value = figures.get(key)
        if key == "fmax_mhz" and figures.get("fmax_mhz_seeds"):
            seeds = figures["fmax_mhz_seeds"]
            return f"{value:.2f} ({min(seeds):.2f}–{max(seeds):.2f})"
        return _format(value)

    body = []
    for device, key, label in FPGA_SUMMARY_FIGURES:
        cells = [label]
        for ours, fp32 in reports.values():
            mine, base = ours.get(device, {}), fp32.get(device, {})
            ratio = mine[key] / base[key] if base.get(key) and mine.get(key) is not None else None
            cells += [text(mine, key), text(base, key), _format(None if ratio is None else round(ratio, 3))]
        body.append(cells)
    flows = sorted({f"{ours[device]['device']}: {ours[device]['flow']}" for ours, _ in reports.values()
                    for device in ("ice40", "ecp5") if device in ours})
    files = ", ".join(f"`{fpga_report_path(folder, i, a).name}`" for i in reports for a in (acc, "fp32"))
    return (markdown_table(header, body, "l" + "r" * (len(header) - 1))
            + f"\n\nFmax: median of the seeds (their range in brackets). Flow: {'; '.join(flows)}. From {files}.")


def update_readme(readme: Path | str = "README.md",
                  csv_path: Path | str = "reports/paper_claim/paper_claim_silicon.csv",
                  fpga_folder: Path | str = "reports/paper_claim") -> None:
    """Replace the README's block between README_MARKERS with :func:`ratio_summary` of the committed CSV,
    and the one between FPGA_README_MARKERS with :func:`fpga_summary` of the committed synth reports."""
    replace_marked_block(readme, *README_MARKERS, ratio_summary(csv_path))
    replace_marked_block(readme, *FPGA_README_MARKERS, fpga_summary(fpga_folder))
