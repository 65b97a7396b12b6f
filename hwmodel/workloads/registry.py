"""The workloads a sweep can run, in the order they run and report: one line per workload. A new workload is
one module implementing :class:`hwmodel.workloads.base.Workload` and one line here."""

from __future__ import annotations

from pathlib import Path

from .base import ReportSection, Workload
from .digits import DigitsWorkload
from .lm import LMWorkload
from .minilm import MiniLMWorkload

WORKLOADS: tuple[Workload, ...] = (
    DigitsWorkload(),
    MiniLMWorkload(),
    LMWorkload(),
)


#: Every ``accuracy.model`` value of a sweep, from the workloads.
MODELS = tuple(model for workload in WORKLOADS for model in workload.models)


def selected(spec) -> tuple[Workload, ...]:
    """The registry's workloads that ``spec`` runs, in registry order."""
    return tuple(workload for workload in WORKLOADS if workload.selected(spec))


def report_sections(out: Path) -> list[ReportSection]:
    """The sections the workloads' data in report folder ``out`` give, in registry order."""
    return [section for workload in WORKLOADS if (section := workload.report_section(out)) is not None]
