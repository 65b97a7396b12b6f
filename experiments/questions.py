"""What the paper-question experiments (q1_*, q5_*, q9_*) share: resumable result rows, the accuracy cells with
their intervals (hwmodel.report.stats), forward MAC counts and the provenance line of a report.

Each experiment saves every finished run as one point of the sweep's point store (hwmodel.execution.points:
``<out>/points/run-<hash>.json``, written atomically, keyed by the run's identifying fields), so an interrupted
run resumes and the report can be rebuilt with ``--report-only``; it writes ``<out>/report.md`` from the runs.
Run logs of earlier versions (one JSON line per run in ``<out>/runs.jsonl``) are still read, before the points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hwmodel.execution.points import point_path, read_point, write_point
from hwmodel.execution.provenance import settings_hash
from hwmodel.report.stats import holm, paired_comparison, summarize_accuracy

ROOT = Path(__file__).resolve().parents[1]


def comma_list(text: str, kind=str) -> list:
    """A comma-separated command-line list (empty items dropped), each item converted with ``kind``."""
    return [kind(item.strip()) for item in text.split(",") if item.strip()]


def question_parser(doc: str, accs: str, accs_help: str) -> argparse.ArgumentParser:
    """The options every digits question shares: which data, model, operand format and accumulators."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default="digits", help="data spec: digits, imagefolder:PATH or mnist:PATH")
    parser.add_argument("--model", default="resnet", help="model name of lba_train.build_model (mlp, resnet, ...)")
    parser.add_argument("--input", default="e4m3", help="operand format")
    parser.add_argument("--accs", default=accs, help=accs_help)
    return parser


def add_report_options(parser: argparse.ArgumentParser, out: str) -> None:
    """Where the runs and the report go, and the rebuild-only switch."""
    parser.add_argument("--out", type=Path, default=ROOT / out)
    parser.add_argument("--report-only", action="store_true", help="only rebuild report.md from the saved runs")


def single_thread() -> None:
    """One torch thread (and one Numba thread): the machine's cores are shared; see the Makefile's note."""
    import numba
    import torch

    torch.set_num_threads(1)
    numba.set_num_threads(1)


class Runs:
    """The finished runs of an experiment; ``key`` names the fields that identify a run (a run whose key is
    already there is not repeated). ``path`` is the experiment's legacy run log ``<out>/runs.jsonl``, read
    when present; new runs are saved as points in ``<out>/points/`` (one atomic file each, keyed by the hash
    of the identifying fields), read after the log's lines in the order they were added."""

    def __init__(self, path: Path, key: tuple[str, ...]):
        self.path, self.key = Path(path), key
        self.points = self.path.parent / "points"
        self.rows = _log_rows(self.path) + _run_points(self.points)

    def identity(self, row: dict) -> tuple:
        return tuple(row[name] for name in self.key)

    def done(self, **identity) -> bool:
        wanted = tuple(identity[name] for name in self.key)
        return any(self.identity(row) == wanted for row in self.rows)

    def add(self, row: dict) -> None:
        key = settings_hash({"kind": "run", **{name: row[name] for name in self.key}})
        self.points.mkdir(parents=True, exist_ok=True)
        write_point(point_path(self.points, "run", key), {"key": key, "order": len(self.rows), "row": row})
        self.rows.append(row)

    def select(self, **where) -> list[dict]:
        return [row for row in self.rows if all(row.get(name) == value for name, value in where.items())]


def _log_rows(path: Path) -> list[dict]:
    """The rows of a legacy run log; a last line cut short by an interruption is left out."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _run_points(points: Path) -> list[dict]:
    """The rows saved as run points under ``points``, in the order they were added."""
    saved = []
    for path in sorted(points.glob("run-*.json")) if points.is_dir() else []:
        try:
            key = json.loads(path.read_text(encoding="utf-8")).get("key", "")
        except (OSError, ValueError, AttributeError):
            continue
        record = read_point(path, key)
        if record is not None:
            saved.append(record)
    return [record["row"] for record in sorted(saved, key=lambda record: record["order"])]


def correctness(rows: Iterable[dict], phase: str, seeds: list[int]) -> np.ndarray | None:
    """(seeds, examples) booleans: was example i right after ``phase`` in the run of seed s. None when a seed
    of ``seeds`` has no run (a partial report compares only complete cells)."""
    by_seed = {row["seed"]: row for row in rows}
    if not seeds or any(seed not in by_seed for seed in seeds):
        return None
    return np.array([np.array(by_seed[seed]["predictions"][phase]) == np.array(by_seed[seed]["labels"])
                     for seed in seeds])


def accuracy_cell(correct: np.ndarray | None) -> str:
    """"mean [95% interval over examples] ±seed sd" in percent."""
    if correct is None:
        return "–"
    summary = summarize_accuracy(correct)
    spread = f" ±{100 * summary.seed_sd:.1f}" if summary.seed_sd is not None else ""
    return f"{100 * summary.mean:.1f} [{100 * summary.low:.1f}, {100 * summary.high:.1f}]{spread}"


def comparison_cells(pairs: list[tuple[np.ndarray | None, np.ndarray | None]]) -> list[str]:
    """For each (model, reference) correctness pair: "difference [95% interval] p (Holm-adjusted)" in
    percentage points; Holm's adjustment runs over the comparable pairs of the list."""
    comparisons = [paired_comparison(model, reference) if model is not None and reference is not None else None
                   for model, reference in pairs]
    adjusted = iter(holm([item.p_value for item in comparisons if item is not None]))
    cells = []
    for item in comparisons:
        if item is None:
            cells.append("–")
            continue
        low, high = item.interval()
        cells.append(f"{100 * item.difference:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] p={next(adjusted):.2g}")
    return cells


def forward_macs_per_example(lba_model, example_batch) -> tuple[int, int]:
    """(MACs on the accumulator, MACs in float) of one forward of ``lba_model`` per example of the batch."""
    from lba_train import accumulator_coverage

    coverage = accumulator_coverage(lba_model, example_batch)
    size = len(example_batch)
    return coverage.macs_accumulator // size, coverage.macs_float // size


def load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def command_line(argv: list[str] | None, script: str) -> str:
    """The command that ran ``script`` with ``argv`` (default: this process's arguments)."""
    arguments = sys.argv[1:] if argv is None else argv
    return shlex.join([".venv/bin/python", f"experiments/{script}", *arguments])


def run_stamp() -> str:
    """When and where a run finished: UTC time, machine, load average (the machine is shared)."""
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} {os.cpu_count()}-core CPU, "
            f"one torch/Numba thread, load average {load_average()}")


def provenance_lines(rows: list[dict]) -> list[str]:
    """The report's "made by" paragraph: every command of the rows, and when the first and last run finished."""
    commands = sorted({row["command"] for row in rows})
    stamps = [row["finished"] for row in rows]
    return ["Made by " + "; ".join(f"`{command}`" for command in commands)
            + f" ({len(rows)} runs, first finished {stamps[0]}, last {stamps[-1]}).", ""]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in rows]


ACCURACY_NOTE = (
    "Accuracy: mean over seeds [95% Wilson interval over the validation examples] ±standard deviation over seeds, "
    "measured with the hardware's arithmetic. Differences: paired over the same examples and seeds (two-way t-test "
    "of hwmodel.report.stats.paired_comparison when seeds vary, exact McNemar with one seed; 95% interval), p "
    "Holm-adjusted over the comparisons of a table."
)


def bias_mode(acc: str) -> str:
    """An accumulator named with its bias (``e2m5_b-14``) keeps it; a plain name gets a calibrated bias."""
    return "format" if "_b" in acc else "calibrate"


def check_formats(parser, option: str, names: list[str]) -> None:
    """Refuse (one line naming ``option``) a name that is not a float format, before any work."""
    from lba_core import FloatFormat

    for name in names:
        try:
            FloatFormat.parse(name)
        except ValueError as error:
            parser.error(f"{option}: {error}")


def configs(rows: list[dict]) -> str:
    """The configurations of ``rows`` (a calibrated bias may differ between seeds), as code spans."""
    return "/".join(f"`{name}`" for name in dict.fromkeys(row["cfg"] for row in rows))


def write_report(out: Path, lines: list[str]) -> Path:
    path = Path(out) / "report.md"
    path.write_text("\n".join(lines))
    return path


def experiment_main(args, key: tuple[str, ...], run, report, argv, check=None) -> int:
    """Run (or with ``--report-only`` only reload) the runs of an experiment, then write its report.
    ``check`` (no arguments) may refuse to start, e.g. when an optional extra is missing."""
    if args.report_only:
        runs = Runs(args.out / "runs.jsonl", key)
        if not runs.rows:
            raise SystemExit(f"--report-only: no saved runs in {args.out} (points/run-*.json or runs.jsonl)")
    else:
        if check is not None:
            check()
        single_thread()
        runs = run(args, argv)
    print(f"wrote {report(args, runs)}")
    return 0
