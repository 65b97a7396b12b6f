"""Shared test fixtures. ``comparisons`` records how many cases a test compared, printed at the end of the run."""

from __future__ import annotations

import tempfile

import pytest

_RECORDS: list[tuple[str, str, int, int]] = []


@pytest.fixture(scope="session", autouse=True)
def private_temp_folder(tmp_path_factory):
    """The run's temporary files, its tools' and its worker processes' go to a folder pytest owns and prunes.

    Tests that provoke a failing Yosys or OpenSTA run get the tool's folder kept for its log, as a user would
    (the error names it); without this they would pile up in the system's temporary folder.
    """
    folder = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder))
        patch.setattr(tempfile, "tempdir", str(folder))
        yield folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: extra intra-op threads only oversubscribe a small shared machine (measured 10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def comparisons(request):
    """Call ``comparisons(label, compared, mismatches)``; the totals appear in the run's summary."""

    def record(label: str, compared: int, mismatches: int = 0) -> None:
        request.node.user_properties.append(("comparisons", (label, int(compared), int(mismatches))))

    return record


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == "comparisons":
            label, compared, mismatches = value
            _RECORDS.append((report.nodeid, label, compared, mismatches))


def pytest_terminal_summary(terminalreporter):
    if not _RECORDS:
        return
    terminalreporter.section("cases compared")
    total = total_bad = 0
    for nodeid, label, compared, mismatches in _RECORDS:
        terminalreporter.write_line(f"{compared:>12,d} compared, {mismatches} mismatches  {label}  [{nodeid.split('::')[-1]}]")
        total += compared
        total_bad += mismatches
    terminalreporter.write_line(f"{total:>12,d} compared, {total_bad} mismatches  TOTAL")
