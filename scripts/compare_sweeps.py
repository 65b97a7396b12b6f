"""Compare two sweep report folders table by table, as text, and say where they differ.

    python scripts/compare_sweeps.py OLD_DIR NEW_DIR [--out FILE.md]

For each CSV table that both folders hold (results.csv, area.csv, stats.csv, layer_events.csv, minilm.csv,
lm.csv) and predictions.json: byte-identical, or the columns whose cells differ (rows matched by `config`,
cells compared as the exact text in the file, so 96.66 and 96.660 differ) and the columns only one side has.
This is how a refactor is shown not to change results: run the same `hwmodel sweep` command on the tree
before and after (same machine), then compare. Exit status 0 when nothing but the columns named with
--expect differs, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

TABLES = ("results.csv", "area.csv", "stats.csv", "layer_events.csv", "minilm.csv", "lm.csv")
FILES = ("predictions.json",)


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def row_key(header: list[str], row: list[str], index: int) -> str:
    # Tables without a config column (stats.csv) are compared row by row in file order.
    return row[header.index("config")] if "config" in header else f"row {index}"


def compare_table(old: Path, new: Path) -> list[str]:
    """Lines describing how `new` differs from `old`; empty when the files are byte-identical."""
    if old.read_bytes() == new.read_bytes():
        return []
    old_header, old_rows = read_table(old)
    new_header, new_rows = read_table(new)
    lines = []
    for name, only in (("old", set(old_header) - set(new_header)), ("new", set(new_header) - set(old_header))):
        if only:
            lines.append(f"columns only in {name}: {', '.join(sorted(only))}")
    old_by_key = {row_key(old_header, row, i): dict(zip(old_header, row)) for i, row in enumerate(old_rows)}
    new_by_key = {row_key(new_header, row, i): dict(zip(new_header, row)) for i, row in enumerate(new_rows)}
    if list(old_by_key) != list(new_by_key):
        lines.append(f"rows differ: {len(old_by_key)} old, {len(new_by_key)} new, or in another order")
    shared = [column for column in old_header if column in new_header]
    for column in shared:
        differing = [key for key in old_by_key if key in new_by_key
                     and old_by_key[key][column] != new_by_key[key][column]]
        if differing:
            example = differing[0]
            lines.append(f"column {column}: {len(differing)} of {len(old_by_key)} rows differ "
                         f"(e.g. {example}: {old_by_key[example][column]!r} -> {new_by_key[example][column]!r})")
    if not lines:
        lines.append("same cells, different bytes (line endings or quoting)")
    return lines


def compare(old_dir: Path, new_dir: Path) -> dict[str, list[str]]:
    """Per file name: [] when byte-identical, else the differences; files missing on one side are named."""
    outcome: dict[str, list[str]] = {}
    for name in TABLES + FILES:
        old, new = old_dir / name, new_dir / name
        if not old.exists() and not new.exists():
            continue
        if not old.exists() or not new.exists():
            outcome[name] = [f"only in {'new' if new.exists() else 'old'}"]
        elif name in FILES:
            outcome[name] = [] if old.read_bytes() == new.read_bytes() else ["bytes differ"]
        else:
            outcome[name] = compare_table(old, new)
    return outcome


def unexpected(outcome: dict[str, list[str]], expected_columns: set[str]) -> list[str]:
    return [f"{name}: {line}" for name, lines in outcome.items() for line in lines
            if not any(line.startswith(f"column {column}:") or line == f"columns only in new: {column}"
                       for column in expected_columns)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, metavar="OLD_DIR")
    parser.add_argument("new", type=Path, metavar="NEW_DIR")
    parser.add_argument("--expect", default="", metavar="COLUMNS",
                        help="comma-separated columns allowed to differ or to be new (e.g. settings_hash)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the comparison as markdown there")
    args = parser.parse_args(argv)
    for option, folder in (("OLD_DIR", args.old), ("NEW_DIR", args.new)):
        if not (folder / "results.csv").is_file():
            parser.error(f"{option} {folder}: no results.csv (not a sweep report folder)")
    outcome = compare(args.old, args.new)
    lines = [f"- `{name}`: " + ("byte-identical" if not found else "; ".join(found)) for name, found in outcome.items()]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    left = unexpected(outcome, {column for column in args.expect.split(",") if column})
    if left:
        print(f"{len(left)} unexpected difference(s)", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
