"""The FDPA unit in silicon (issue 25, Deliver items 3-4): area and timing of the 32-term unit as F goes from 25
to 8, against 32 sequential FMAq MACs at the same products per cycle, and the error of the stitched flow.

Three parts, each a table in ``<out>/`` (CSV) and in ``<out>/README.md`` with command, date, machine, load and
the wall time of every synthesis:

- ``flat_vs_stitched.csv``: L = 4 and 8 (hopper-fp8's fields, ``fdpa<L>f13-e8m13_sub-rtz``, e4m3 inputs)
  through the flat flow and the stitched per-block flow (hwmodel.synthesis.stitched): how far the stitched
  area and delay are from the flat run's where the flat run finishes.
- ``f_sweep.csv``: L = 32, ``fdpa32f<F>-e8m13_sub-rtz`` for F in {25, 16, 13, 11, 9, 8} (F = 13 is hopper-fp8),
  stitched flow: GE, per-block GE, sky130 and nangate45 µm² and OpenSTA delay.
- ``iso_throughput.csv``: one 32-term unit (hopper-fp8 and F = 25) against 32 FMAq MACs (e4m3 inputs, the same
  output format e8m13_sub, RTZ): 32 products per cycle each way; the MAC's flat synthesis.

Standard-cell figures use the ``area`` recipe (the MAC reports' headline). Energy per MAC is not measured for
the FDPA unit (the operand-stream simulation drives MAC ports). Results are cached by content
(hwmodel.execution.cache): a rerun with a warm cache only rewrites the report.

    .venv/bin/python experiments/fdpa_area.py                      # all three parts -> reports/fdpa/
    .venv/bin/python experiments/fdpa_area.py --parts fsweep --fractions 13
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (25, 16, 13, 11, 9, 8)
GROUP = 32
FLAT_GROUPS = (4, 8)
LIBRARIES = ("sky130", "nangate45")
PARTS = ("fsweep", "iso", "flat", "plot")  # in the order they run; plot reads the committed CSVs only
BLOCKS = ("product_term", "exponent_max", "term_aligner", "compressor_tree", "sum_normalizer", "rounder")
MAC_ACC, MAC_ROUNDING = "e8m13_sub", "rtz"  # hopper-fp8's output format and rounding
ACCURACY_CSV = ROOT / "reports" / "fdpa_f_sweep" / "fdpa_f_accuracy.csv"


def spelling(group: int, fraction_bits: int) -> str:
    """hopper-fp8's general spelling (lba_core.fused: fdpa32f13-e8m13_sub-rtz) with L terms and F bits."""
    return f"fdpa{group}f{fraction_bits}-e8m13_sub-rtz"


def load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def int_list(option: str):
    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option}: expected integers such as 25,13,8, got {text!r}") from None
        if not values or any(value < 0 for value in values):
            raise argparse.ArgumentTypeError(f"{option}: expected non-negative integers, got {text!r}")
        return values
    return parse


def parts_list(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"--parts: choose from {','.join(PARTS)}, got {text!r}")
    return parts


class Runner:
    """Runs syntheses one at a time and records the wall time and load of each."""

    def __init__(self, cache, timeout_s: float, input_format: str):
        self.cache, self.timeout_s, self.input = cache, timeout_s, input_format
        self.log: list[dict] = []

    def fdpa(self, acc: str, flow: str) -> dict:
        from lba_core import MacConfig
        from hwmodel.synthesis.fdpa_synth import synthesize_fdpa

        cfg = MacConfig(input=self.input, acc=acc)
        started, before = time.perf_counter(), load()
        result = synthesize_fdpa(cfg, ("generic", *LIBRARIES), cache=self.cache, progress=True, flow=flow,
                                 timeout_s=self.timeout_s, recipes=("area",))
        self.log.append({"synthesis": f"{acc} ({flow})", "seconds": round(time.perf_counter() - started, 1),
                         "load_before": before, "load_after": load()})
        return result["fdpa"]

    def mac(self) -> dict:
        from lba_core import MacConfig
        from hwmodel.synthesis.flows.targets import silicon_reports
        from hwmodel.synthesis.mac_synth import TOPS, export_designs, synthesize_configs
        from hwmodel.synthesis.stitched import stitched_asic_reports, stitched_generic_report

        cfg = MacConfig(input=self.input, acc=MAC_ACC, rounding=MAC_ROUNDING)
        started, before = time.perf_counter(), load()
        result = synthesize_configs([cfg], ("generic",), blocks=False, cache=self.cache, workers=1, progress=True,
                                    timeout_s=self.timeout_s)[0]
        silicon = silicon_reports([cfg], LIBRARIES, blocks=False, cache=self.cache, workers=1, progress=True,
                                  timeout_s=self.timeout_s, energy=False, recipes=("area",))[0]
        for top, per_target in silicon.items():
            result[top].update(per_target)
        # The same MAC through the stitched per-block flow: like for like with the FDPA unit's figures.
        designs = export_designs([cfg], block_tops=TOPS, cache=self.cache, workers=1, progress=True)[0]
        for top in TOPS:
            report = stitched_generic_report(designs[top], cache=self.cache, timeout_s=self.timeout_s)
            report.update(stitched_asic_reports(designs[top], LIBRARIES, sequential=top == "mac", cache=self.cache,
                                                recipes=("area",), timeout_s=self.timeout_s))
            result[f"{top}_stitched"] = report
        self.mac_energy(cfg, result)
        self.log.append({"synthesis": f"{cfg.name} (fmaq and mac, flat and stitched)", "seconds": round(time.perf_counter() - started, 1),
                         "load_before": before, "load_after": load()})
        return result


    def mac_energy(self, cfg, result: dict) -> None:
        """The flat ``mac`` top's energy per MAC on uniformly random codes at its period (the energy flow of
        hwmodel.synthesis.flows.energy; 16 lanes of 3 dot products of 256), like the FDPA unit's random figure."""
        import numpy as np

        from hwmodel.execution.jobs import run_cached
        from hwmodel.synthesis.flows.energy import EnergyJob
        from hwmodel.synthesis.flows.liberty import MappingJob
        from hwmodel.synthesis.mac_synth import export_designs

        design = export_designs([cfg], block_tops=(), cache=self.cache, workers=1, progress=True)[0]["mac"]
        rng = np.random.default_rng(1)
        shape = (48, 256)
        stream = {"layer": "random", "length": shape[1], "macs_per_image": 1,
                  "a": rng.integers(0, 1 << cfg.a_format.width, shape).tolist(),
                  "b": rng.integers(0, 1 << cfg.b_format.width, shape).tolist()}
        streams = json.dumps({"real": [stream], "random": [stream]}, sort_keys=True)
        for library in LIBRARIES:
            mapped = run_cached([MappingJob(library, "area", "mac", design.verilog, timeout_s=self.timeout_s)],
                                self.cache, 1, True)[0]
            figures = result["mac"][library]
            job = EnergyJob(library, "mac", json.dumps(cfg.to_dict(), sort_keys=True),
                            json.dumps(mapped["connectivity"], sort_keys=True), streams, figures["period_ns"],
                            None if self.cache.root is None else str(self.cache.root))
            figures["energy_pj_per_mac_random"] = run_cached([job], self.cache, 1, True)[0]["energy_pj_per_mac_random"]


def unit_row(report: dict) -> dict:
    row = {"gates": report["gates"], "ge": round(report["ge"], 1), "depth": report["depth"]}
    for library in LIBRARIES:
        figures = report[library]
        row[f"{library}_um2"] = round(figures["area_um2"], 1)
        row[f"{library}_delay_ns"] = figures.get("delay_ns", figures.get("period_ns"))
        if "energy_pj_per_mac_random" in figures:
            row[f"{library}_pj_per_mac_random"] = figures["energy_pj_per_mac_random"]
    return row


def flat_part(runner: Runner, groups: list[int]) -> list[dict]:
    rows = []
    from rtl.yosys import ToolError

    for group in groups:
        acc = spelling(group, 13)
        by_flow = {}
        for flow in ("flat", "stitched"):
            try:
                by_flow[flow] = unit_row(runner.fdpa(acc, flow))
            except ToolError as error:  # the flat run past --timeout: a result too
                runner.log.append({"synthesis": f"{acc} ({flow})", "seconds": f"> {runner.timeout_s:g} (stopped)",
                                   "load_before": "", "load_after": load()})
                rows.append({"accumulator": acc, "L": group, "flow": flow,
                             "gates": f"did not finish: {str(error).splitlines()[0]}"})
        for flow, row in by_flow.items():
            rows.append({"accumulator": acc, "L": group, "flow": flow, **row})
        if len(by_flow) == 2:
            rows.append({"accumulator": acc, "L": group, "flow": "stitched / flat - 1",
                         **{key: f"{by_flow['stitched'][key] / by_flow['flat'][key] - 1:+.1%}"
                            for key in by_flow["flat"] if key in by_flow["stitched"]}})
    return rows


def fsweep_part(runner: Runner, fractions: list[int]) -> list[dict]:
    rows = []
    for fraction in fractions:
        acc = spelling(GROUP, fraction)
        report = runner.fdpa(acc, "stitched")
        blocks = {f"{block}_ge": round(report["blocks"].get(block, {}).get("ge", 0.0), 1) for block in BLOCKS}
        rows.append({"F": fraction, "accumulator": acc, **unit_row(report), **blocks})
    reference = next((row for row in rows if row["F"] == max(fractions)), None)
    for row in rows:
        for key in ("ge", *(f"{library}_um2" for library in LIBRARIES)):
            row[f"{key}_vs_f{reference['F']}"] = round(row[key] / reference[key], 3)
    return rows


def iso_part(runner: Runner, fractions: list[int]) -> list[dict]:
    mac = runner.mac()
    rows = []
    for fraction in fractions:
        acc = spelling(GROUP, fraction)
        report = runner.fdpa(acc, "stitched")
        row = {"design": f"1 x {acc} (FDPA unit, combinational, stitched)", "products_per_cycle": GROUP, **unit_row(report)}
        rows.append(row)
    for top, what, flow in (("fmaq", "combinational FMAq", "flat"), ("mac", "MAC with its accumulator register", "flat"),
                            ("fmaq_stitched", "combinational FMAq", "stitched"),
                            ("mac_stitched", "MAC with its accumulator register", "stitched")):
        one = unit_row(mac[top])
        row = {"design": f"{GROUP} x {mac['config']['name']} {top.removesuffix('_stitched')} ({what}, {flow})",
               "products_per_cycle": GROUP,
               "gates": GROUP * one["gates"], "ge": round(GROUP * one["ge"], 1), "depth": one["depth"]}
        for library in LIBRARIES:
            row[f"{library}_um2"] = round(GROUP * one[f"{library}_um2"], 1)
            row[f"{library}_delay_ns"] = one[f"{library}_delay_ns"]
            if f"{library}_pj_per_mac_random" in one:
                row[f"{library}_pj_per_mac_random"] = one[f"{library}_pj_per_mac_random"]
        rows.append(row)
    for row in rows:
        for library in LIBRARIES:
            row[f"{library}_products_per_ns"] = round(GROUP / row[f"{library}_delay_ns"], 3)
    return rows


def plot_accuracy(out: Path) -> str | None:
    """MiniLM's loss of mean cosine against sky130 µm² per product per cycle: the FDPA units of f_sweep.csv
    (accuracy from reports/fdpa_f_sweep/fdpa_f_accuracy.csv, with and without promotion) and the sequential
    MACs of reports/default (minilm.csv zero-shot, area from results.csv); each against its own run's fp32
    accumulation. Returns the figure's name, or None when an input is missing."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = ROOT / "reports" / "default"
    inputs = (out / "f_sweep.csv", ACCURACY_CSV, default / "minilm.csv", default / "results.csv")
    if not all(path.exists() for path in inputs):
        return None
    read = lambda path: list(csv.DictReader(path.open()))  # noqa: E731
    area = {int(row["F"]): float(row["sky130_um2"]) / GROUP for row in read(inputs[0])}
    loss = lambda text: max(-float(text or 0.0), 1e-6)  # noqa: E731  (the reference row has no difference)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for promote, marker, label in (("0", "o", "FDPA L = 32 (F labelled)"), ("128", "s", "FDPA + promote every 128")):
        rows = [row for row in read(inputs[1]) if row["F"] and row["promote_every"] == promote and int(row["F"]) in area]
        xs, ys = [area[int(row["F"])] for row in rows], [loss(row["minilm_diff_mean_cosine"]) for row in rows]
        axes.plot(xs, ys, marker=marker, linestyle="-" if promote == "0" else "--", label=label)
        if promote == "0":
            for row, x, y in zip(rows, xs, ys):
                axes.annotate(f"F={row['F']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    base = lambda name: re.sub(r"_b-?\d+$", "", name)  # noqa: E731  (bias differs between the two workloads)
    mac_area = {base(row["acc"]): float(row["sky130_um2"]) for row in read(inputs[3])
                if row["input"] == "e4m3" and row["sky130_um2"]}
    sequential = [(mac_area[base(row["acc"])], loss(row["diff_mean_cosine"]), base(row["acc"]))
                  for row in read(inputs[2]) if row["stage"] == "zero-shot" and base(row["acc"]) in mac_area]
    axes.scatter([x for x, _, _ in sequential], [y for _, y, _ in sequential], marker="^", color="black",
                 label="sequential MAC (reports/default)")
    for x, y, name in sequential:
        axes.annotate(name + (" (reference)" if y <= 1e-6 else ""), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    axes.set_xlabel("sky130 µm² per product per cycle (FDPA: unit / 32, stitched; MAC: flat)")
    axes.set_ylabel("MiniLM zero-shot: loss of mean cosine vs fp32")
    axes.set_yscale("log")
    axes.legend(fontsize=8)
    axes.set_title("Accuracy against area: fused (L = 32) and sequential accumulators, e4m3 operands", fontsize=9)
    figure.tight_layout()
    for suffix in ("png", "svg"):
        figure.savefig(out / f"accuracy_vs_um2.{suffix}", dpi=120)
    plt.close(figure)
    return "accuracy_vs_um2.png"


def plot_section(name: str) -> list[str]:
    return ["## accuracy against area", "", f"![accuracy against sky130 µm² per product]({name})", "",
            "MiniLM zero-shot from reports/fdpa_f_sweep/fdpa_f_accuracy.csv (FDPA, 48 sentences) and "
            "reports/default/minilm.csv (sequential, 147 sentences), each against its own fp32 run (the reference "
            "is drawn at 1e-6); areas from f_sweep.csv and reports/default/results.csv (notes.md). Made from the "
            "committed CSVs by `experiments/fdpa_area.py --parts plot`.", ""]


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def table(rows: list[dict]) -> str:
    from lba_core.fileio import markdown_table

    fields = list(dict.fromkeys(key for row in rows for key in row))
    return markdown_table(fields, [[row.get(key, "") for key in fields] for row in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=parts_list, default=list(PARTS), help=f"which parts (default: {','.join(PARTS)})")
    parser.add_argument("--fractions", type=int_list("--fractions"), default=list(FRACTIONS),
                        help="F values of the L = 32 sweep (default: 25,16,13,11,9,8)")
    parser.add_argument("--flat-groups", type=int_list("--flat-groups"), default=list(FLAT_GROUPS),
                        help="L values of the flat-vs-stitched comparison (default: 4,8)")
    parser.add_argument("--input", default="e4m3", help="operand format (default: e4m3)")
    parser.add_argument("--out", default=str(ROOT / "reports" / "fdpa"), help="output folder (default: reports/fdpa)")
    parser.add_argument("--cache-dir", help="result cache (default: hwmodel's)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per tool run (default: 3600)")
    args = parser.parse_args()

    from lba_core.fileio import writable_folder

    from hwmodel.execution.cache import ResultCache, default_cache_dir

    out = writable_folder(Path(args.out), "--out")
    cache = ResultCache(writable_folder(Path(args.cache_dir), "--cache-dir") if args.cache_dir else default_cache_dir())
    if args.parts == ["plot"]:  # the figure from the committed CSVs; README.md keeps its tables and times
        plotted = plot_accuracy(out)
        if plotted is None:
            raise SystemExit(f"--parts plot: needs {out / 'f_sweep.csv'}, {ACCURACY_CSV} and reports/default's CSVs")
        readme = out / "README.md"
        text = readme.read_text() if readme.exists() else ""
        if "## accuracy against area" not in text:
            head, marker, tail = text.partition("## time per synthesis")
            readme.write_text(head + "\n".join(plot_section(plotted)) + "\n" + marker + tail)
        return 0
    runner = Runner(cache, args.timeout, args.input)
    started_at, started, load_start = datetime.now(timezone.utc), time.perf_counter(), load()
    tables = {}
    if "fsweep" in args.parts:
        tables["f_sweep"] = fsweep_part(runner, args.fractions)
        write_csv(out / "f_sweep.csv", tables["f_sweep"])
    if "iso" in args.parts:
        tables["iso_throughput"] = iso_part(runner, [13, 25])
        write_csv(out / "iso_throughput.csv", tables["iso_throughput"])
    if "flat" in args.parts:
        tables["flat_vs_stitched"] = flat_part(runner, args.flat_groups)
        write_csv(out / "flat_vs_stitched.csv", tables["flat_vs_stitched"])
    plotted = plot_accuracy(out) if "plot" in args.parts else None
    write_csv(out / "timings.csv", runner.log)
    meta = {
        "command": shlex.join([".venv/bin/python", "experiments/fdpa_area.py", *sys.argv[1:]]),
        "date_utc": started_at.strftime("%Y-%m-%d %H:%M"),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.platform()})",
        "load_start": load_start, "load_end": load(),
    }
    (out / "run.json").write_text(json.dumps({**meta, "timings": runner.log}, indent=1) + "\n")
    lines = [f"# FDPA unit: area and timing ({meta['date_utc']} UTC)", "",
             f"Command: `{meta['command']}`; machine {meta['machine']}; load average (1/5/15 min) "
             f"{meta['load_start']} at the start, {meta['load_end']} at the end; {meta['wall_s']} s wall.", "",
             "Generated by experiments/fdpa_area.py; the notes below the tables are in notes.md.", ""]
    for name, rows in tables.items():
        lines += [f"## {name}", "", table(rows), ""]
    if plotted:
        lines += plot_section(plotted)
    if runner.log:
        lines += ["## time per synthesis", "", table(runner.log), ""]
    (out / "README.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
