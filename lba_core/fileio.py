"""Writing output files safely, and the one Markdown table writer every layer uses.

Every file the toolkit produces (reports, tables, plots, checkpoints, cached results) goes through
:func:`atomic_write`: the bytes land in a temporary file in the same folder, are flushed to disk, get the
ordinary mode 0644 and only then replace the target with one rename, so a crash or a signal never leaves a
half-written file and a reader sees either the old or the new content. Pure Python, like all of lba_core.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError

#: Mode of every file written here: readable by everyone, writable by the owner (mkstemp's default is 0600).
FILE_MODE = 0o644


def atomic_write(path: "str | Path", write: Callable[[IO[bytes]], Any]) -> Path:
    """Create or replace ``path`` with what ``write`` puts into the binary stream it is given.

    The parent folder is created when missing. If ``write`` raises, the target is untouched and the
    temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
            os.fchmod(stream.fileno(), FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: "str | Path", data: bytes) -> Path:
    return atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path: "str | Path", text: str) -> Path:
    """Write ``text`` as UTF-8 (with ``\\n`` line ends on every platform)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def replace_marked_block(path: "str | Path", begin: str, end: str, content: str) -> Path:
    """Rewrite the generated section of a text file: everything between the line ``begin`` and the line
    ``end`` becomes ``content`` (README tables are regenerated from committed reports this way, never edited
    by hand). ConfigError when the markers are missing."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise ConfigError(f"{path} has no '{begin}' ... '{end}' block")
    _, _, tail = rest.partition(end)
    return atomic_write_text(path, f"{head}{begin}\n{content.strip()}\n{end}{tail}")


def marked_block(path: "str | Path", begin: str, end: str) -> str:
    """The current content between the markers (stripped), for tests that compare it with its source."""
    text = Path(path).read_text(encoding="utf-8")
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise ConfigError(f"{path} has no '{begin}' ... '{end}' block")
    return rest.partition(end)[0].strip()


def writable_folder(path: "str | Path", what: str) -> Path:
    """``path`` as a folder that exists and takes files (created if missing; checked by writing a probe, since
    permission bits say nothing for root), else ConfigError "<what> <path> is a file / is not writable: ..."."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = atomic_write_text(path / ".write-test", "")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"{what} {path} is not writable: {error.strerror or error}") from None
    return path


def os_error_text(error: OSError) -> str:
    """One line for a file-system error: the path and the problem ("reports/x: Permission denied")."""
    paths = [name for name in (error.filename, error.filename2) if name is not None]
    problem = error.strerror or str(error)
    return f"{' -> '.join(map(str, paths))}: {problem}" if paths else problem


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | Sequence[str] = "") -> str:
    """A GitHub-flavoured Markdown table; cells are written with ``str`` (format numbers before).

    ``align`` gives one of "l", "r", "c" per column (a string such as "lrr" or a sequence); missing
    entries leave the column's alignment to the renderer. A ``|`` inside a cell is escaped.
    """
    header = [str(cell) for cell in header]
    markers = {"l": ":---", "r": "---:", "c": ":---:", "": "---"}
    align = list(align) + [""] * (len(header) - len(align))
    lines = [_markdown_row(header), "|" + "|".join(markers[a] for a in align[: len(header)]) + "|"]
    for row in rows:
        cells = [str(cell) for cell in row]
        if len(cells) != len(header):
            raise ValueError(f"a table row has {len(cells)} cells, the header {len(header)}: {cells!r}")
        lines.append(_markdown_row(cells))
    return "\n".join(lines)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
