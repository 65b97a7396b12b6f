"""The one atomic-write helper and the one Markdown table writer (lba_core.fileio)."""

from __future__ import annotations

import stat

import pytest

from lba_core.fileio import atomic_write, atomic_write_text, markdown_table


def test_atomic_write_gives_mode_0644_and_replaces(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second ü")
    assert path.read_text(encoding="utf-8") == "second ü"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write_text(path, "old")

    def broken(stream):
        stream.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_markdown_table():
    text = markdown_table(["a", "b"], [[1, "x|y"], ["2", 3.5]], align="lr")
    assert text.splitlines() == ["| a | b |", "|:---|---:|", "| 1 | x\\|y |", "| 2 | 3.5 |"]
    assert markdown_table(["a"], []).splitlines() == ["| a |", "|---|"]
    with pytest.raises(ValueError, match="2 cells, the header 1"):
        markdown_table(["a"], [[1, 2]])
