"""The paper's area claim: FP8 inputs with standard and 12-bit accumulators (``hwmodel paper-claim``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lba_core import FloatFormat, MacConfig
from lba_core.fileio import atomic_write_text

from ..synthesis import columns
from ..synthesis.area import area_table, baseline_name, write_area_report

#: The paper's comparison: FP8 inputs with standard and 12-bit accumulators.
PAPER_INPUTS = ("e4m3", "e5m2")
PAPER_ACCS = ("fp32", "fp16", "bf16", "e4m7", "e5m6", "e3m8")


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


def claim_columns() -> dict[str, columns.Column]:
    """paper_claim.csv's columns, each declared as the area.csv column it holds for one input format."""
    area = columns.SCHEMA[columns.AREA]
    declared = {"accumulator": area["acc"], "acc": area["acc"], "acc_bits": area["acc_bits"]}
    for fmt in PAPER_INPUTS:
        declared.update({f"{fmt}_ge": area["ge"], f"{fmt}_ge_reduction": area["ge_reduction"]})
    return declared


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
        + area_table(table, list(table.columns), claim_columns())
        + "\n"
    )
    atomic_write_text(paths["claim_md"], text)
    return paths
