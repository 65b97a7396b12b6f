"""The accuracy half of the F sweep (issue 25, deliverable 5): MiniLM and the byte-level language model zero-shot
under the fused (tensor-core) accumulator for F in {25, 16, 13, 11, 9, 8} alignment bits, L = 32, hopper-fp8's
other fields (output E8M13 in an fp32 register, truncated: ``fdpa32f<F>-e8m13_sub-rtz``; F = 13 is hopper-fp8
itself), each without and with promotion into fp32 every 128 products (``+promote128``), beside the sequential
fp32 accumulator (every LM row's paired baseline).

It runs the sweep's own workloads (``hwmodel sweep --model minilm --no-minilm-finetune --lm``: the same
protocol, settings and point files as the MiniLM and LM rows of the default sweep; the area columns of fused
rows say "not synthesized", issue 25's area half is hwmodel/synthesis/fdpa_synth.py), then joins the two
tables into one row per (F, promotion):

    .venv/bin/python experiments/fdpa_f_sweep.py                 # -> reports/fdpa_f_sweep/ (resumable)
    .venv/bin/python experiments/fdpa_f_sweep.py --fractions 13 --jobs 1 --out /tmp/f13   # one F, a quick look

Finished points are kept in ``<out>/points/`` keyed by their settings and the sources of lba_core/lba_train
(the sweep's rule): an interrupted run resumes; a source change reruns them. ``fdpa_f_accuracy.csv`` is the
table to join with the areas (columns ``F``, ``promote_every``); ``report.md`` states command, date, machine
and load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from lba_core import MacConfig, parse_fused

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (25, 16, 13, 11, 9, 8)
#: The unit whose F is swept: hopper-fp8 (lba_core.fused), L = 32 products per fused group.
HOPPER = parse_fused("hopper-fp8")
GROUP = HOPPER.group
PROMOTE = 128
BASELINE = "fp32"
INPUT = "e4m3"  # the sweep's default --in: MiniLM's and the LM's operands


def spelling(fraction_bits: int, promote: bool) -> str:
    """hopper-fp8 with F alignment bits, in lba_core's general spelling (fdpa32f13-e8m13_sub-rtz at F = 13)."""
    return replace(HOPPER, name="", fraction_bits=fraction_bits, promote_every=PROMOTE if promote else None).name


def _fractions(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fractions: expected integers such as 25,13,8, got {text!r}") from None
    if not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"--fractions: expected non-negative integers, got {text!r}")
    return values


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def sweep_command(out: Path, fractions: list[int], jobs: int, settings: dict[str, int | None]) -> list[str]:
    accs = [BASELINE] + [spelling(f, promote) for f in fractions for promote in (False, True)]
    command = [sys.executable, "-m", "hwmodel.cli", "sweep", "--acc", ",".join(accs), "--accuracy",
               "--model", "minilm", "--no-minilm-finetune", "--lm", "--target", "generic", "--jobs", str(jobs),
               "--reports", str(out.parent), "--name", out.name]
    for option, value in settings.items():  # the workloads' own options, when given (else the sweep's defaults)
        if value is not None:
            command += [option, str(value)]
    return command


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return {row["requested"]: row for row in csv.DictReader(stream)}


def joined(out: Path, fractions: list[int]) -> list[dict[str, object]]:
    """One row per (F, promotion) and the fp32 row: MiniLM cosine/Spearman/top-1 and LM bits per byte."""
    minilm, lm = _rows(out / "minilm.csv"), _rows(out / "lm.csv")
    wanted = [(None, None, BASELINE)] + [(f, PROMOTE if promote else 0, spelling(f, promote))
                                         for f in fractions for promote in (False, True)]
    rows = []
    for fraction_bits, every, acc in wanted:
        name = MacConfig(input=INPUT, acc=acc).name  # the sweep's "requested" column
        m, l = minilm.get(name), lm.get(name)
        rows.append({
            "acc": acc, "F": "" if fraction_bits is None else fraction_bits, "L": "" if fraction_bits is None else GROUP,
            "promote_every": "" if every is None else every,
            **{f"minilm_{key}": (m or {}).get(key, "") for key in (
                "mean_cosine", "mean_cosine_low", "mean_cosine_high", "spearman", "top1",
                "diff_mean_cosine", "diff_mean_cosine_low", "diff_mean_cosine_high")},
            **{f"lm_{key}": (l or {}).get(key, "") for key in (
                "bpb", "bpb_low", "bpb_high", "diff_bpb", "diff_bpb_low", "diff_bpb_high", "kl_bits", "top1",
                "nan", "inf", "seconds")},
        })
    return rows


def _number(value, digits: int, signed: bool = False) -> str:
    if value in ("", None):
        return "—"
    return f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"


def _interval(row: dict[str, object], key: str, digits: int, signed: bool = False) -> str:
    if row[key] in ("", None):
        return "—"
    return (f"{_number(row[key], digits, signed)} [{_number(row[key + '_low'], digits, signed)}, "
            f"{_number(row[key + '_high'], digits, signed)}]")


def markdown(rows: list[dict[str, object]], meta: dict[str, object]) -> str:
    lines = [
        "# The F sweep, accuracy half (issue 25 item 5): MiniLM and the byte-level LM zero-shot under FDPA units", "",
        f"Command: `{meta['command']}`; started {meta['started']}, finished {meta['finished']} "
        f"({meta['seconds']:.0f} s wall); {meta['machine']}; load average {meta['load_before']} before, "
        f"{meta['load_after']} after. The sweep it ran: `{meta['sweep_command']}`."
        + (f" {meta['note']}" if meta.get("note") else ""), "",
        f"Units: L = {GROUP} products per fused group, F alignment bits (terms truncated toward zero to F bits below "
        "the group's largest exponent), output E8M13 truncated (hopper-fp8's fields: `fdpa32f<F>-e8m13_sub-rtz`, "
        f"F = 13 is hopper-fp8), without and with promotion into fp32 every {PROMOTE} products; e4m3 operands. "
        "Protocol and settings of the default sweep's MiniLM and LM rows (docs/sweep.md, docs/lm.md); full tables in "
        "minilm.csv / lm.csv / results.md here, the join in fdpa_f_accuracy.csv.", "",
        "| accumulator | F | promote | MiniLM cosine [95%] | Δ cosine vs fp32 [95%] | LM bits/byte [95%] | "
        "Δ bits/byte vs fp32 [95%] | LM top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        promote = row["promote_every"] or ("—" if row["F"] == "" else "none")
        lines.append(
            f"| `{row['acc']}` | {row['F'] or '—'} | {promote} | {_interval(row, 'minilm_mean_cosine', 5)} | "
            f"{_interval(row, 'minilm_diff_mean_cosine', 5, True)} | {_interval(row, 'lm_bpb', 3)} | "
            f"{_interval(row, 'lm_diff_bpb', 4, True)} | {_number(row['lm_top1'], 3)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "fdpa_f_sweep", help="report folder")
    parser.add_argument("--fractions", type=_fractions, default=list(FRACTIONS), help="F values (default: 25,16,13,11,9,8)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel points (default: 1)")
    parser.add_argument("--minilm-sentences", type=int, default=None,
                        help="the first N MiniLM evaluation sentences (default: the sweep's, all 147)")
    parser.add_argument("--lm-windows", type=int, default=None, help="LM test windows (default: the sweep's, 8)")
    parser.add_argument("--lm-calibration-windows", type=int, default=None,
                        help="LM calibration windows (default: the sweep's, 8)")
    parser.add_argument("--tables-only", action="store_true",
                        help="only join the finished sweep's tables again (run.json keeps the run's command, date, load)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    out = args.out.resolve()
    settings = {"--minilm-sentences": args.minilm_sentences, "--lm-windows": args.lm_windows,
                "--lm-calibration-windows": args.lm_calibration_windows}
    bad = [option for option, value in settings.items() if value is not None and value < 1]
    if bad:
        parser.error(f"{bad[0]} must be >= 1")
    command = sweep_command(out, args.fractions, args.jobs, settings)
    meta: dict[str, object] = {
        "command": shlex.join(["python", "experiments/fdpa_f_sweep.py", *(argv if argv is not None else sys.argv[1:])]),
        "sweep_command": shlex.join(command[1:]), "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.platform()})",
        "load_before": _load(), "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if args.tables_only:
        try:
            meta = json.loads((out / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            parser.error(f"--tables-only: no readable {out / 'run.json'} ({error}); run the sweep first")
    else:
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, check=False)
        if result.returncode != 0:
            print(f"fdpa_f_sweep: the sweep failed (exit {result.returncode}); finished points are kept in "
                  f"{out}/points", file=sys.stderr)
            return result.returncode
        meta.update(finished=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    seconds=time.perf_counter() - started, load_after=_load())
        (out / "run.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    rows = joined(out, args.fractions)
    with (out / "fdpa_f_accuracy.csv").open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "report.md").write_text(markdown(rows, meta), encoding="utf-8")
    print(f"wrote {out / 'fdpa_f_accuracy.csv'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
