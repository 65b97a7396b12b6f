"""Replay of the command-line misuse cases of issue 27 (a new user's mistakes that used to go wrong).

Each case runs ``hwmodel ...`` as a user would and checks what the issue asks of every misuse: a non-zero exit
within ``limit_s`` seconds (10 s; on a machine loaded beyond its cores, times the load per core, at most 3),
exactly one line on stderr for a refused command, no ``lba-*`` folder left in the temporary folder, ``git
status --porcelain`` of the repository's reports/ and build/ unchanged, and a peak resident set of the command
and every process of its session (sampled from /proc, VmHWM) under 2 GB. Cases stopped by ``timeout`` (``stop_after_s``: SIGTERM after that
many seconds, as ``timeout 5 hwmodel ...`` does) only have to leave nothing behind (and print no traceback).

Every case gets its own temporary folder (``TMPDIR``), its own empty result cache and, unless it is about the
repository itself, its own working folder, so that a case cannot pass because of what another one left.

    python tests/misuse_replay.py            # every case, one line each, exit 1 if any failed
    python tests/misuse_replay.py report-renamed-column synth-array-1000
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HWMODEL = (sys.executable, "-m", "hwmodel.cli")
LIMIT_S = 10.0
#: On a machine busier than its cores (a shared development box), a case's limit is scaled by the load per core,
#: at most this much: ``hwmodel sweep`` alone takes about 8 s to import under a load of 12 on 2 cores.
MAX_LOAD_FACTOR = 3.0
RSS_LIMIT_BYTES = 2 * 2**30
TEMP_PREFIX = "lba-"


@dataclass(frozen=True)
class Case:
    """One misuse: ``argv`` after ``hwmodel``; ``in_repo`` runs it from the repository root (else from a fresh
    folder, which ``prepare`` may fill); ``stop_after_s`` sends SIGTERM after that long; ``stderr_has`` is a
    phrase the one line must contain (the option or path it names)."""

    name: str
    issue_case: int
    argv: tuple[str, ...]
    stderr_has: str = ""
    in_repo: bool = False
    stop_after_s: float | None = None
    limit_s: float = LIMIT_S
    prepare: Callable[[Path], None] | None = None
    #: Left out of ``make test`` (pytest's ``slow`` mark) when another case covers the same fix faster.
    slow: bool = False


@dataclass
class Outcome:
    case: Case
    returncode: int
    seconds: float
    peak_rss_bytes: int
    stderr: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        detail = "; ".join(self.problems) if self.problems else self.stderr.strip().splitlines()[-1:] or [""]
        detail = detail if isinstance(detail, str) else detail[0]
        return (f"{status} {self.case.name:<28} exit {self.returncode:>4} {self.seconds:5.1f} s "
                f"{self.peak_rss_bytes / 2**20:6.0f} MB  {detail}")


def _sweep_folder(root: Path, columns_renamed: dict[str, str] | None = None, drop_predictions: bool = False) -> Path:
    """A copy of the committed reports/default under ``root``, optionally with a results.csv column renamed."""
    target = root / "reports" / "copy"
    shutil.copytree(REPO / "reports" / "default", target)
    if columns_renamed:
        csv = target / "results.csv"
        header, _, rest = csv.read_text().partition("\n")
        names = [columns_renamed.get(name, name) for name in header.split(",")]
        csv.write_text(",".join(names) + "\n" + rest)
    if drop_predictions:
        (target / "predictions.json").unlink(missing_ok=True)
    return target


def _unwritable(root: Path) -> None:
    """``locked`` is a file, so ``locked/out`` cannot be created (even by root, who ignores permissions)."""
    (root / "locked").write_text("not a folder\n")


CASES = (
    Case("sweep-array-1000", 1, ("sweep", "--acc", "e4m7", "--array", "1000x1000", "--name", "big"), "--array",
         slow=True),
    Case("synth-array-1000", 1, ("synth", "--in", "e4m3", "--acc", "e4m7", "--array", "1000x1000"), "--array"),
    Case("synth-fp32-int16-sat", 1, ("synth", "--in", "fp32", "--acc", "int16_sat"), "--in"),
    Case("sweep-adhoc-accuracy-no-name", 2, ("sweep", "--acc", "e4m7", "--accuracy"), "--name", in_repo=True),
    Case("synth-sigterm", 3, ("synth", "--in", "e4m3", "--acc", "e5m10", "--target", "generic,sky130"),
         in_repo=True, stop_after_s=5.0, limit_s=15.0),
    Case("paper-claim-sigterm", 3, ("paper-claim",), in_repo=True, stop_after_s=5.0, limit_s=15.0, slow=True),
    Case("synth-yosys-timeout", 3, ("synth", "--in", "e4m3", "--acc", "fp32", "--timeout", "0.5", "--no-blocks"),
         "--timeout", limit_s=20.0),
    Case("verilog-not-a-folder", 3, ("verilog", "--in", "e4m3", "--acc", "e4m7", "-o", "locked/out"), "locked",
         prepare=_unwritable),
    Case("verilog-unwritable", 3, ("verilog", "--in", "e4m3", "--acc", "e4m7", "-o", "/proc/lba-misuse"), "-o"),
    Case("estimate-pipeline-7", 4, ("estimate", "--in", "e4m3", "--acc", "e4m7", "--pipeline", "7"), "--pipeline"),
    Case("estimate-acc-e4m0", 4, ("estimate", "--in", "e4m3", "--acc", "e4m0"), "e4m0"),
    Case("report-renamed-column", 5, ("report", "reports/copy"), "results.csv",
         prepare=lambda root: _sweep_folder(root, {"top1_stage2": "top1_finetuned"})),
)


def load_factor() -> float:
    """The load average per core, between 1 and :data:`MAX_LOAD_FACTOR`: the time limits' multiplier."""
    return min(MAX_LOAD_FACTOR, max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))


def _temp_entries(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if path.name.startswith(TEMP_PREFIX)}


#: What a command run in the repository could write: the committed reports and the build folder. (The rest of
#: the tree is left out of the comparison: other work in a shared checkout changes it while a case runs.)
WATCHED = ("reports", "build")


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *WATCHED], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout


#: How often the session's processes are sampled for their peak resident set (VmHWM is monotonic, so a sample
#: misses at most the growth of the last interval before a process exits).
RSS_SAMPLE_S = 0.02


def _session_peak_rss(session: int) -> int:
    """The largest VmHWM (peak resident set, bytes) among the live processes of ``session``, 0 if none."""
    peak = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[3]) != session:  # field 6: the session id
                continue
            for line in Path(entry.path, "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError, IndexError):
            continue  # the process ended while being read
    return peak


class _PeakRss(threading.Thread):
    """Samples the peak resident set of every process of a session until stopped. (wait4's ru_maxrss cannot be
    used: Linux carries the parent's high-water mark into a child across fork and exec, so a command started from
    a large test process reports the test process's size.)"""

    def __init__(self, session: int) -> None:
        super().__init__(daemon=True)
        self.session, self.peak, self.done = session, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, _session_peak_rss(self.session))
            self.done.wait(RSS_SAMPLE_S)


def _run(argv: list[str], cwd: Path, env: dict[str, str], stop_after_s: float | None,
         limit_s: float) -> tuple[int, float, int, str]:
    """(exit status, seconds, peak RSS in bytes, stderr); killed (SIGKILL, group) past ``limit_s``."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)
        sampler = _PeakRss(process.pid)
        sampler.start()
        timers = [threading.Timer(limit_s, lambda: _kill_group(process.pid, signal.SIGKILL))]
        if stop_after_s is not None:  # as `timeout` does: SIGTERM to the command only
            timers.append(threading.Timer(stop_after_s, lambda: _signal(process.pid, signal.SIGTERM)))
        for timer in timers:
            timer.start()
        _, status, _usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        sampler.done.set()
        sampler.join()
        for timer in timers:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        _kill_group(process.pid, signal.SIGKILL)  # anything of its session still alive is a leak; stop it
        stderr.seek(0)
        text = stderr.read().decode(errors="replace")
    return process.returncode, seconds, sampler.peak, text


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _kill_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def replay(case: Case, scratch: Path) -> Outcome:
    """Run one case with its own TMPDIR, cache and (unless ``in_repo``) working folder under ``scratch``."""
    temp, cache, work = scratch / "tmp", scratch / "cache", scratch / "work"
    for folder in (temp, cache, work):
        folder.mkdir(parents=True, exist_ok=True)
    if case.prepare is not None:
        case.prepare(work)
    env = {**os.environ, "TMPDIR": str(temp), "LBA_HWMODEL_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    env.pop("COLUMNS", None)
    before = _git_status()
    limit_s = case.limit_s * load_factor()
    returncode, seconds, rss, stderr = _run([*HWMODEL, *case.argv], REPO if case.in_repo else work, env,
                                            case.stop_after_s, limit_s)
    outcome = Outcome(case, returncode, seconds, rss, stderr)
    problems = outcome.problems
    if returncode == 0:
        problems.append("exit status 0")
    if seconds > limit_s:
        problems.append(f"took {seconds:.1f} s (limit {case.limit_s:g} s x load factor {limit_s / case.limit_s:.2f})")
    if rss > RSS_LIMIT_BYTES:
        problems.append(f"peak RSS {rss / 2**30:.2f} GB (limit 2 GB)")
    if case.stop_after_s is None:
        lines = [line for line in stderr.splitlines() if line.strip()]
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr: {' | '.join(lines[:3])[:300]}")
        elif case.stderr_has and case.stderr_has not in lines[0]:
            problems.append(f"stderr does not name {case.stderr_has!r}: {lines[0][:200]}")
        if "Traceback" in stderr:
            problems.append("traceback on stderr")
    elif "Traceback" in stderr or "resource_tracker" in stderr:
        problems.append("traceback or resource_tracker warning after the signal")
    left = _temp_entries(temp)
    if left:
        problems.append(f"left {', '.join(sorted(left))} in the temporary folder")
    after = _git_status()
    if after != before:
        changed = sorted(set(after.splitlines()) ^ set(before.splitlines()))
        problems.append(f"git status changed: {', '.join(changed[:5])}")
    if not case.in_repo and (work / "reports").exists() and case.prepare is None:
        problems.append("wrote reports/ in its working folder")
    return outcome


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - {case.name for case in CASES})
    if unknown:
        print(f"misuse_replay: unknown case(s) {', '.join(unknown)}; known: {', '.join(c.name for c in CASES)}",
              file=sys.stderr)
        return 2
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: limits x {load_factor():.2f}")
    failed = 0
    for case in CASES:
        if names and case.name not in names:
            continue
        with tempfile.TemporaryDirectory(prefix="misuse-replay-") as scratch:
            outcome = replay(case, Path(scratch))
        print(outcome.line(), flush=True)
        failed += not outcome.ok
    return 1 if failed else 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main(sys.argv[1:]))
