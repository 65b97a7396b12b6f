"""The report's figures without global state: each one a :class:`matplotlib.figure.Figure` with its own Agg
canvas (pyplot's backend and figure registry are never touched), written once as PNG and SVG."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lba_core.fileio import atomic_write_bytes

#: Salt of the SVG element ids, so that the same data gives the same file.
SVG_HASH_SALT = "lba-report"


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **options):
    """``(figure, axes)`` like ``pyplot.subplots``, on a figure of its own."""
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(nrows, ncols, **options)


def save_figure(figure: Figure, stem: Path) -> str:
    """``stem``.png and ``stem``.svg (no date in the SVG, stable ids); returns the stem's name."""
    for suffix in (".png", ".svg"):
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": SVG_HASH_SALT}):
            figure.savefig(buffer, format=suffix[1:], dpi=120, bbox_inches="tight",
                           metadata={"Date": None} if suffix == ".svg" else {})
        atomic_write_bytes(stem.with_suffix(suffix), buffer.getvalue())
    return stem.name
